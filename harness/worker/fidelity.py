"""How far a cell's output drifts from the unoptimized fp32 reference, judged on what it samples from.

One *history* per run and condition: the fp32 reference, with Dia's default sampling, generates the
codes once (same text, seed and length). Every cell is teacher-forced on that history, and its logits
go through the logits processors its own `generate` applies (its CFG scale, temperature, top-k,
top-p, EOS handling), which gives the distribution it would draw each token from. Those are compared
with the reference's: total variation distance, agreement of their most likely token per channel and
on all 9 channels of a step at once. So a plugin that changes how tokens are sampled (cfg=0) is judged
like one that changes the numerics (int8), on what a listener would get.

Audio is compared twice, and named for what it is: the cell's codec on the history's codes (the
codec's own drift), and, with real weights only, the cell's free-running audio against the
reference's (synthetic weights make both noise).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from dia_bench.harness.runtime.codec import snr_db
from dia_bench.harness.runtime.pipeline import EOS, PAD

# Where the stored reference distributions keep only the tokens that can be drawn (top-k leaves the
# rest at probability 0); a processor chain that keeps more keeps them all. 2: the history carries
# the reference's own sensitivity; 3: measured over SENSITIVITY_DRAWS draws of the noise.
HISTORY_VERSION = 3
# The reference's sensitivity: every Linear output of the model scaled by (1 + this x N(0, 1)), about
# 1/40 of bf16's rounding (2^-8). Where that alone moves the distributions past the quality bar, a
# precision change cannot be judged on these weights: synthetic dia-1.6b (random weights, Dia's
# unscaled attention) moves a total variation of about 0.1 so (a Xeon, 0.25 s); dia-tiny under 0.01.
SENSITIVITY_NOISE = 1e-4
# One draw of that noise moved synthetic dia-1.6b's distributions by anything from 0.03 to 0.48: the
# sensitivity is the largest of several draws, and their spread is kept to show how sure it is.
SENSITIVITY_DRAWS = 3


@dataclass
class History:
    """The fp32 reference's own generation and the distributions it drew from."""

    id: str
    path: Path | None
    meta: dict[str, Any]
    delayed: torch.Tensor  # (1, steps, 9) as generate returned them
    probs_index: torch.Tensor  # (9, steps - 1, k) token ids of the nonzero probabilities
    probs_value: torch.Tensor  # (9, steps - 1, k)
    cond_logits: torch.Tensor  # (9, steps - 1, vocab) the conditional row's raw logits
    audio: torch.Tensor  # (samples,) the reference codec's decode of the history's codes

    def dense_probs(self, vocab: int) -> torch.Tensor:
        out = torch.zeros(*self.probs_index.shape[:2], vocab)
        return out.scatter_(-1, self.probs_index.long(), self.probs_value)

    def describe(self) -> dict[str, Any]:
        return {"id": self.id, "path": str(self.path) if self.path else None, **self.meta}


def history_key(meta: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps({"v": HISTORY_VERSION, **meta}, sort_keys=True).encode()).hexdigest()[:16]


def _cfg_active(kwargs: dict[str, Any]) -> bool:
    scale = kwargs.get("guidance_scale")
    return scale is not None and scale != 1


def teacher_forced_logits(model, inputs: dict[str, torch.Tensor], delayed: torch.Tensor, cfg: bool) -> torch.Tensor:
    """Raw logits (rows x 9, steps - 1, vocab) of one forward pass over the history, the rows as
    generate builds them: the conditional row, then with CFG the unconditional one (zeroed text)."""
    device = inputs["input_ids"].device
    history = delayed[:1, :-1, :].contiguous().to(device)
    enc, mask = inputs["input_ids"][:1], inputs["attention_mask"][:1]
    if cfg:
        enc, mask, history = torch.cat([enc, torch.zeros_like(enc)]), mask.repeat(2, 1), history.repeat(2, 1, 1)
    out = model(input_ids=enc, attention_mask=mask, decoder_input_ids=history,
                decoder_attention_mask=torch.ones(history.shape[:2], dtype=torch.long, device=device), use_cache=False)
    return out.logits.float()


def generate_forced_logits(model, kwargs: dict[str, Any], inputs: dict[str, torch.Tensor],
                           delayed: torch.Tensor) -> torch.Tensor:
    """Raw logits (rows x 9, steps - 1, vocab), as `teacher_forced_logits` gives them, from the model's
    own `generate` with each step forced to the history's next token: the calls, shapes and cache
    that generation makes. A compiled forward is then judged as it ran (its graphs are reused), not
    by a graph compiled again for one long forward pass. On dia-1.6b on 2 cores the two cost about
    the same (a generation, 12 s, against a recompile and a pass, 14 s); what changes is what is judged."""
    from transformers import LogitsProcessor

    device = inputs["input_ids"].device
    history = delayed[:1].to(device)
    one = {k: v[:1] for k, v in inputs.items()}

    class Force(LogitsProcessor):  # last in the chain: whatever came before, only the history's token is left
        def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            token = history[0, input_ids.shape[1], :].view(-1, 1)  # (channels, 1): batch 1, rows are channels
            return torch.full_like(scores, float("-inf")).scatter_(1, token, 0.0)

    own = model._get_logits_processor

    def with_force(*args, **kw):
        chain = own(*args, **kw)
        chain.append(Force())
        return chain

    model._get_logits_processor = with_force  # transformers' Dia builds its chain there, ignoring ours
    try:
        out = model.generate(**one, **kwargs, output_logits=True, return_dict_in_generate=True)
    finally:
        del model._get_logits_processor
    if not torch.equal(out.sequences.to(history.device), history):
        raise RuntimeError("generate did not follow the forced history: fidelity cannot be judged this way")
    return torch.stack(out.logits, dim=1).float()


def _processors(model, kwargs: dict[str, Any], inputs: dict[str, torch.Tensor], cfg: bool):
    """The logits processors `generate` builds for these arguments, from transformers itself.

    These are private methods of transformers' generation mixin: `tests/test_fidelity.py` checks on
    every run that their output equals the scores `generate` reports, so a change there fails a test
    instead of skewing fidelity.
    """
    sampling = {k: v for k, v in kwargs.items() if k != "cache_implementation"}
    config, _ = model._prepare_generation_config(None, **sampling)
    device = inputs["input_ids"].device
    model._prepare_special_tokens(config, True, device=device)
    decoder = inputs["decoder_input_ids"]
    start = int(decoder.shape[1] - (decoder[:, :, 0] == PAD).sum(dim=-1).max())
    config.max_length = start + sampling["max_new_tokens"]
    enc = inputs["input_ids"][:1]
    enc = torch.cat([enc, torch.zeros_like(enc)]) if cfg else enc
    return model._get_logits_processor(generation_config=config, input_ids_seq_length=start, encoder_input_ids=enc,
                                       device=device, model_kwargs={})


def sampled_distributions(model, kwargs: dict[str, Any], inputs: dict[str, torch.Tensor],
                          delayed: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """(9, steps - 1, vocab) probabilities each token of the history would have been drawn from."""
    cfg = _cfg_active(kwargs)
    processors = _processors(model, kwargs, inputs, cfg)
    history = delayed[:1, :-1, :].to(logits.device)
    channels = history.shape[-1]
    out = torch.empty(channels, history.shape[1], logits.shape[-1])
    for t in range(history.shape[1]):
        ids = history[:, : t + 1, :].transpose(1, 2).reshape(channels, t + 1)
        scores = processors(ids, logits[:, t, :].clone())
        out[:, t] = torch.softmax(scores.float(), dim=-1).cpu()
    return out


def engine_distributions(kwargs: dict[str, Any], logits: torch.Tensor, channels: int) -> torch.Tensor:
    """(channels, steps - 1, vocab) what `engine=static` draws each token of the history from: its own
    processor chain, not transformers'."""
    from dia_bench.harness.runtime.static_engine import Sampling, StaticEngine

    sampling = Sampling.from_generate_kwargs(kwargs)
    rows = logits.shape[0] // channels
    per_step = logits.view(rows, channels, *logits.shape[1:]).transpose(1, 2)  # (rows, steps, channels, vocab)
    out = torch.stack([StaticEngine.scores(per_step[:, t], sampling).softmax(-1) for t in range(per_step.shape[1])])
    return out.transpose(0, 1)[:channels].float().cpu()


def teacher_forcing_path(pipe) -> str:
    """How a cell's logits are teacher-forced: through the static engine's own step, through `generate`
    (a compiled forward: the graphs it measured, not a new one) or one forward pass over the history."""
    if getattr(pipe, "engine", None) is not None:
        return "engine"
    return "generate" if getattr(pipe, "forward_compiled", False) else "forward"


def own_distributions(pipe, kwargs: dict[str, Any], inputs: dict[str, torch.Tensor],
                      delayed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Teacher-forced raw logits, and the distributions each token is drawn from, through what the
    pipeline really runs: with `engine=static` its own cache and sampling, else the model's forward and
    transformers' processors."""
    path = teacher_forcing_path(pipe)
    with pipe.generation_context():
        if path == "engine":
            logits = pipe.engine.teacher_forced_logits(inputs, delayed, kwargs)
        elif path == "generate":
            logits = generate_forced_logits(pipe.model, kwargs, inputs, delayed)
        else:
            logits = teacher_forced_logits(pipe.model, inputs, delayed, _cfg_active(kwargs))
    if path == "engine":
        return logits, engine_distributions(kwargs, logits, delayed.shape[-1])
    return logits, sampled_distributions(pipe.model, kwargs, inputs, delayed, logits)


def valid_positions(delayed: torch.Tensor) -> torch.Tensor:
    """(9, steps - 1) True where the token predicted is a real code (not BOS, PAD or the forced tail)."""
    return (delayed[0, 1:, :] < EOS).T.cpu()


def compare_distributions(probs: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor) -> dict[str, Any]:
    tv = 0.5 * (probs - ref).abs().sum(-1)  # (9, steps - 1)
    agree = probs.argmax(-1) == ref.argmax(-1)
    per_channel_tv = [float(tv[c][valid[c]].mean()) if valid[c].any() else None for c in range(tv.shape[0])]
    per_channel_top1 = [float(agree[c][valid[c]].float().mean()) if valid[c].any() else None
                        for c in range(tv.shape[0])]
    full = valid.all(0)  # steps where all 9 channels predict a real code
    tv_valid = tv[valid]
    return {
        "total_variation": round(float(tv_valid.mean()), 5),
        "total_variation_p95": round(float(torch.quantile(tv_valid, 0.95)), 5),
        "total_variation_max": round(float(tv_valid.max()), 5),
        "total_variation_per_channel": [None if v is None else round(v, 5) for v in per_channel_tv],
        "top1_agreement": round(float(agree[valid].float().mean()), 5),
        "top1_agreement_per_channel": [None if v is None else round(v, 5) for v in per_channel_top1],
        "all_channels_top1_agreement": round(float(agree[:, full].all(0).float().mean()), 5) if full.any() else None,
        "positions": int(valid.sum()),
        "steps_all_channels": int(full.sum()),
    }


def compare_logits(opt: torch.Tensor, ref: torch.Tensor, valid: torch.Tensor) -> dict[str, Any]:
    """The conditional row's raw logits: numeric drift alone, before any sampling choice."""
    o, r = opt[valid], ref[valid]
    diff = (o - r).abs()
    cos = torch.nn.functional.cosine_similarity(o, r, dim=-1)
    return {
        "top1_agreement": round(float((o.argmax(-1) == r.argmax(-1)).float().mean()), 5),
        "max_abs_error": float(diff.max()),
        "mean_abs_error": float(diff.mean()),
        "cosine": round(float(cos.mean()), 6),
        "min_cosine": round(float(cos.min()), 6),
    }


def make_history(pipe, inputs: dict[str, torch.Tensor], frames: int, sampling, seed: int, history_id: str,
                 meta: dict[str, Any]) -> History:
    """Generate the history with `pipe`, which must be the unoptimized fp32 reference."""
    kwargs = pipe.sampling_kwargs(frames, sampling)
    one = {k: v[:1] for k, v in inputs.items()}
    torch.manual_seed(seed)
    with torch.inference_mode():
        delayed = pipe.model.generate(**one, **kwargs).cpu()
        logits = teacher_forced_logits(pipe.model, one, delayed, _cfg_active(kwargs))
        probs = sampled_distributions(pipe.model, kwargs, one, delayed, logits)
        audio = pipe.decode_audio(pipe.undelay(delayed))[0].cpu()
        sensitivity = reference_sensitivity(pipe.model, kwargs, one, delayed, probs, seed)
    k = max(1, int((probs > 0).sum(-1).max()))
    value, index = probs.topk(k, dim=-1)
    channels = delayed.shape[-1]
    meta = {**meta, "sensitivity": sensitivity}
    return History(id=history_id, path=None, meta=meta, delayed=delayed, probs_index=index.to(torch.int32),
                   probs_value=value.contiguous(), cond_logits=logits[:channels].cpu().contiguous(), audio=audio)


def reference_sensitivity(model, kwargs: dict[str, Any], inputs: dict[str, torch.Tensor], delayed: torch.Tensor,
                          probs: torch.Tensor, seed: int, draws: int = SENSITIVITY_DRAWS) -> dict[str, Any]:
    """How far the reference's own distributions move when every Linear output carries relative noise
    of SENSITIVITY_NOISE, over `draws` independent draws of that noise: the largest is the smallest
    drift the quality bar can attribute to a plugin. Hooks, not weight edits, so the model is
    unchanged afterwards."""
    tvs, top1s = [], []
    for draw in range(draws):
        gen = torch.Generator().manual_seed(seed + 1 + draw)  # on the host: the same noise on every device

        def jitter(_module, _args, out, gen=gen):
            noise = torch.randn(out.shape, generator=gen, dtype=torch.float32)
            return out * (1 + SENSITIVITY_NOISE * noise.to(out.device, out.dtype))

        hooks = [m.register_forward_hook(jitter) for m in model.modules() if isinstance(m, torch.nn.Linear)]
        try:
            logits = teacher_forced_logits(model, inputs, delayed, _cfg_active(kwargs))
            moved = sampled_distributions(model, kwargs, inputs, delayed, logits)
        finally:
            for h in hooks:
                h.remove()
        compared = compare_distributions(moved, probs, valid_positions(delayed))
        tvs.append(compared["total_variation"])
        top1s.append(compared["top1_agreement"])
    return {"linear_output_noise": SENSITIVITY_NOISE, "total_variation": max(tvs), "top1_agreement": min(top1s),
            "total_variation_draws": tvs}


def save_history(history: History, path: Path) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file({"delayed": history.delayed.contiguous(), "probs_index": history.probs_index.contiguous(),
               "probs_value": history.probs_value.contiguous(), "cond_logits": history.cond_logits.contiguous(),
               "audio": history.audio.contiguous()}, str(tmp), metadata={"meta": json.dumps(history.meta)})
    os.replace(tmp, path)
    history.path = path


def load_history(path: Path, history_id: str) -> History:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as fh:
        meta = json.loads(fh.metadata()["meta"])
        tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (safe_open is not a dict)
    return History(id=history_id, path=path, meta=meta, **tensors)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One process creates a history; others wait for it instead of generating their own."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def load_or_create(directory: Path, meta: dict[str, Any], create: Callable[[str], History],
                   shared: Path | None = None) -> tuple[History, str]:
    """The history for `meta` from `directory`, generated by `create` the first time, and where it came
    from: "created" here, "run" (already in `directory`) or "cache" (copied from `shared`, where every
    history made is also kept: a sweep's run directory holds its own, and the next run on this
    machine copies it instead of generating the same fp32 reference again, about 12 s on dia-1.6b)."""
    history_id = history_key(meta)
    name = f"history-{history_id}.safetensors"
    path = directory / name
    with _locked(path):
        if path.is_file():
            try:
                return load_history(path, history_id), "run"
            except Exception:  # a file cut short by a killed worker: make it again
                path.unlink(missing_ok=True)
        cached = shared / name if shared is not None and shared.resolve() != directory.resolve() else None
        if cached is not None:
            with _locked(cached):
                if cached.is_file():
                    try:
                        history = load_history(cached, history_id)
                    except Exception:  # damaged: never used, made again below
                        cached.unlink(missing_ok=True)
                    else:
                        save_history(history, path)
                        return history, "cache"
        history = create(history_id)
        if cached is not None:
            with _locked(cached):
                save_history(history, cached)
        save_history(history, path)  # last: the history names the run directory's copy
        return history, "created"


def judge(pipe, kwargs: dict[str, Any], inputs: dict[str, torch.Tensor], history: History,
          own_audio: torch.Tensor | None, real_weights: bool) -> dict[str, Any]:
    """The optimized pipeline (its contexts apply) against the history its reference generated."""
    one = {k: v[:1] for k, v in inputs.items()}
    delayed = history.delayed
    vocab = history.cond_logits.shape[-1]
    valid = valid_positions(delayed)
    from torch._dynamo.utils import counters

    graphs = counters["stats"].get("unique_graphs", 0)
    with torch.inference_mode():
        logits, probs = own_distributions(pipe, kwargs, one, delayed)
        codec_audio = pipe.decode_audio(pipe.undelay(delayed))[0].cpu()
    channels = delayed.shape[-1]
    result: dict[str, Any] = {
        "compared": True,
        "method": "teacher-forced on the fp32 reference's own history; distributions after the cell's "
                  "own CFG, temperature, top-k and top-p",
        "history": history.describe(),
        "teacher_forced_through": teacher_forcing_path(pipe),
        # Graphs dynamo compiled for the teacher-forced pass: 0 where it reused what was measured.
        "graphs_compiled": counters["stats"].get("unique_graphs", 0) - graphs,
        "sampled": compare_distributions(probs, history.dense_probs(vocab), valid),
        "logits": compare_logits(logits[:channels].cpu(), history.cond_logits, valid),
    }
    codec_snr = snr_db(codec_audio, history.audio)
    result["codec_same_codes_snr_db"] = None if codec_snr is None else round(codec_snr, 2)
    result["codec_same_codes_identical"] = codec_snr is None
    if not real_weights:
        result["free_running_audio_snr_db"] = None
        result["free_running_audio"] = "not compared: synthetic weights make both audio streams noise"
    elif own_audio is None or own_audio.shape[-1] != history.audio.shape[-1]:
        result["free_running_audio_snr_db"] = None
        result["free_running_audio"] = "not compared: the cell's first request has another length"
    else:
        snr = snr_db(own_audio, history.audio)
        result["free_running_audio_snr_db"] = None if snr is None else round(snr, 2)
        result["free_running_audio"] = "identical" if snr is None else "compared"
    return result
