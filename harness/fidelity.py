"""How far an optimized model's output drifts from the unoptimized fp32 reference.

Both models see the same token history (teacher forcing: one forward pass over the codes the
optimized run generated), so the comparison isolates numerical drift from sampling divergence.
The codec is compared on identical codes: the SNR of the optimized decode against fp32's.
"""

from __future__ import annotations

import math
from typing import Any

import torch


def _teacher_forced_logits(model, inputs: dict[str, torch.Tensor], delayed: torch.Tensor) -> torch.Tensor:
    history = delayed[:1, :-1, :].contiguous().to(inputs["input_ids"].device)
    out = model(
        input_ids=inputs["input_ids"][:1],
        attention_mask=inputs["attention_mask"][:1],
        decoder_input_ids=history,
        decoder_attention_mask=torch.ones(history.shape[:2], dtype=torch.long, device=history.device),
        use_cache=False,
    )
    channels = history.shape[-1]
    return out.logits.float().reshape(channels, history.shape[1], -1).cpu()  # (channels, steps, vocab)


def compare_logits(opt: torch.Tensor, ref: torch.Tensor) -> dict[str, Any]:
    agree = (opt.argmax(-1) == ref.argmax(-1)).float().mean(dim=1)  # per channel
    diff = (opt - ref).abs()
    cos = torch.nn.functional.cosine_similarity(opt, ref, dim=-1)
    return {
        "top1_agreement": round(float(agree.mean()), 5),
        "top1_agreement_per_channel": [round(float(a), 5) for a in agree],
        "max_abs_logit_error": float(diff.max()),
        "mean_abs_logit_error": float(diff.mean()),
        "cosine": round(float(cos.mean()), 6),
        "min_cosine": round(float(cos.min()), 6),
    }


def snr_db(opt: torch.Tensor, ref: torch.Tensor) -> float | None:
    """None when the signals are identical (infinite SNR)."""
    noise = float(((opt.float() - ref.float()) ** 2).sum())
    signal = float((ref.float() ** 2).sum())
    if noise == 0:
        return None
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def measure(pipe, reference_model, reference_codec, inputs, delayed: torch.Tensor,
            codes: torch.Tensor) -> dict[str, Any]:
    """`pipe` is the optimized pipeline (its contexts apply); the reference is plain fp32."""
    with torch.inference_mode():
        with pipe._generation_context():
            opt_logits = _teacher_forced_logits(pipe.model, inputs, delayed)
        ref_logits = _teacher_forced_logits(reference_model, inputs, delayed)
        opt_audio = pipe.decode_audio(codes[:1]).cpu()
        ref_audio = reference_codec.decode(codes[:1].to(pipe.device)).float().cpu()
    result = compare_logits(opt_logits, ref_logits)
    snr = snr_db(opt_audio, ref_audio)
    result["audio_snr_db"] = None if snr is None else round(snr, 2)
    result["audio_identical"] = snr is None
    result["positions"] = int(opt_logits.shape[1])
    return result
