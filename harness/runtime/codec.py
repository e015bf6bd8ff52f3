"""Codec backends: codes (batch, 9, frames) in, float32 waveform (batch, samples) out."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from dia_bench.harness.errors import UsageError

if TYPE_CHECKING:
    import torch

CODEC_BACKENDS = ("transformers", "descript")


class Codec(Protocol):
    name: str
    sample_rate: int

    def decode(self, codes): ...  # (B, C, F) long -> (B, samples) float32

    def to(self, device): ...


class TransformersDac:
    """transformers' DacModel: the same codec as descript-audio-codec without its dependencies."""

    name = "transformers"

    def __init__(self, model):
        self.model = model.eval()
        self.sample_rate = int(model.config.sampling_rate)

    @classmethod
    def load(cls, path: str, device: str) -> TransformersDac:
        from transformers import DacModel

        return cls(DacModel.from_pretrained(path).to(device))

    def decode(self, codes):
        return self.model.decode(audio_codes=codes).audio_values.float().reshape(codes.shape[0], -1)


class DescriptDac:
    """descript-audio-codec's `dac`; used only when it imports (it does not beside CPU torch 2.13).

    Weights: a descript checkpoint (*.pth) when the directory has one, else the transformers
    DacModel in it (synthetic or `save_pretrained`), copied layer by layer into descript's DAC.
    """

    name = "descript"

    def __init__(self, path: str, device: str):
        from pathlib import Path

        from dia_bench.harness.presets import SAMPLE_RATE

        dac = import_descript()
        pth = sorted(Path(path).glob("*.pth"))
        if pth:
            self.model = dac.DAC(sample_rate=SAMPLE_RATE, n_codebooks=9, codebook_size=1024, codebook_dim=8)
            state = self._load_descript_state(pth[0])
            missing = self.model.load_state_dict(state, strict=False).missing_keys
            if missing:
                raise RuntimeError(f"descript codec: {len(missing)} weights not found in {pth[0]}")
        else:
            self.model = descript_from_transformers(dac, path)
        self.model = self.model.eval().to(device)
        self.sample_rate = int(self.model.sample_rate)

    @staticmethod
    def _load_descript_state(pth) -> dict:
        # Real descript checkpoints (weights_44khz_8kbps.pth) hold {"state_dict": ...}.
        import torch

        return torch.load(pth, map_location="cpu", weights_only=False)["state_dict"]

    def decode(self, codes):
        z = self.model.quantizer.from_codes(codes)[0]
        return self.model.decode(z).float().reshape(codes.shape[0], -1)


def snr_db(opt: torch.Tensor, ref: torch.Tensor) -> float | None:
    """How far audio `opt` is from `ref`, in dB of signal over the difference; None when the signals are
    identical (infinite SNR)."""
    import math

    noise = float(((opt.float() - ref.float()) ** 2).sum())
    signal = float((ref.float() ** 2).sum())
    if noise == 0:
        return None
    return 10 * math.log10(signal / noise) if signal > 0 else -math.inf


def torch_decoder(codec: Codec):
    """The codec's torch decoder module, or None where its backend has none."""
    return getattr(getattr(codec, "model", None), "decoder", None)


def decoder_context_frames(codec: Codec) -> int:
    """Frames of context, on each side, that decoding a stretch of frames needs to give exactly the samples
    the whole utterance's decode gives there: the decoder's receptive field, in frames.

    Both backends decode with DAC's decoder: stride-1 convolutions and transposed convolutions with
    zero padding, and pointwise activations, so a sample depends on a bounded stretch of frames. That
    stretch is followed back through the layers, last to first, from the samples of one frame (10
    frames each side for DAC 44.1 kHz: its dilated residual units at 8 samples a frame reach furthest)."""
    from torch import nn

    decoder = torch_decoder(codec)
    if decoder is None:
        raise TypeError(f"codec {getattr(codec, 'name', type(codec).__name__)!r} has no DAC decoder to read")
    # A decoder in channels_last (codec_layout) runs its 1-D layers as 2-D ones of height 1: time is the last axis.
    layers = [m for m in decoder.modules()
              if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Conv2d, nn.ConvTranspose2d))]
    if any(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) and m.kernel_size[0] != 1 for m in layers):
        raise TypeError("a 2-D convolution in the codec's decoder: its receptive field is not followed here")
    transposed = (nn.ConvTranspose1d, nn.ConvTranspose2d)
    hop = 1
    for m in layers:
        if isinstance(m, transposed):
            hop *= m.stride[-1]
        elif m.stride[-1] != 1:
            raise TypeError("a strided convolution in the codec's decoder: its receptive field is not followed here")
    # Far from the edges, so that no index is clipped: the result does not depend on where the frame is.
    frame = 1 << 20
    lo, hi = frame * hop, (frame + 1) * hop - 1
    for m in reversed(layers):
        k, s, p, d = m.kernel_size[-1], m.stride[-1], m.padding[-1], m.dilation[-1]
        if isinstance(m, transposed):  # output n reads inputs i with n = i*s - p + j*d, 0 <= j < k
            lo, hi = -(-(lo + p - (k - 1) * d) // s), (hi + p) // s
        else:  # output n reads inputs n - p + j*d
            lo, hi = lo - p, hi - p + (k - 1) * d
    return max(frame - lo, hi - frame)


def _codec_leaves(root) -> list:
    """The modules holding a codec's weights, in the order both implementations build them."""
    from torch import nn

    return [m for m in root.modules()
            if isinstance(m, (nn.Conv1d, nn.ConvTranspose1d, nn.Embedding)) or type(m).__name__ == "Snake1d"]


def _set_weight(module, weight) -> None:
    """Give a (possibly weight-normalized) module this effective weight."""
    import torch

    if hasattr(module, "weight_g"):  # torch.nn.utils.weight_norm, as descript's WNConv1d uses
        module.weight_v.copy_(weight)
        module.weight_g.copy_(torch.norm_except_dim(weight, 2, 0))
    elif hasattr(module, "parametrizations"):  # torch.nn.utils.parametrizations.weight_norm
        module.parametrizations.weight.original1.copy_(weight)
        module.parametrizations.weight.original0.copy_(torch.norm_except_dim(weight, 2, 0))
    else:
        module.weight.copy_(weight)


def descript_from_transformers(dac, path: str):
    """descript's DAC with the weights of the transformers DacModel saved in `path`.

    The two implement one architecture and build their layers in the same order per part
    (encoder, quantizer, decoder), so the layers pair up one to one; kinds and shapes are checked.
    """
    import torch
    from transformers import DacModel

    hf = DacModel.from_pretrained(path).eval()
    cfg = hf.config
    model = dac.DAC(encoder_dim=cfg.encoder_hidden_size, encoder_rates=list(cfg.downsampling_ratios),
                    latent_dim=cfg.hidden_size, decoder_dim=cfg.decoder_hidden_size,
                    decoder_rates=list(cfg.upsampling_ratios), n_codebooks=cfg.n_codebooks,
                    codebook_size=cfg.codebook_size, codebook_dim=cfg.codebook_dim,
                    sample_rate=cfg.sampling_rate)
    with torch.no_grad():
        for part in ("encoder", "quantizer", "decoder"):
            src, dst = _codec_leaves(getattr(hf, part)), _codec_leaves(getattr(model, part))
            if len(src) != len(dst):
                raise RuntimeError(f"descript codec: {part} has {len(dst)} weight layers, transformers' {len(src)}")
            for i, (a, b) in enumerate(zip(src, dst, strict=True)):
                kind_a, kind_b = type(a).__name__, type(b).__name__
                if kind_a != kind_b and not isinstance(b, type(a)):  # parametrized: a subclass
                    raise RuntimeError(f"descript codec: {part} layer {i} is {kind_b}, transformers' {kind_a}")
                if isinstance(a, torch.nn.Embedding) or kind_a == "Snake1d":
                    name = "weight" if isinstance(a, torch.nn.Embedding) else "alpha"
                    target = getattr(b, name)
                    if target.shape != getattr(a, name).shape:
                        raise RuntimeError(f"descript codec: {part} layer {i} {name} shapes differ")
                    target.copy_(getattr(a, name))
                    continue
                if tuple(b.weight.shape) != tuple(a.weight.shape):
                    raise RuntimeError(f"descript codec: {part} layer {i} weight {tuple(b.weight.shape)} against "
                                       f"transformers' {tuple(a.weight.shape)}")
                _set_weight(b, a.weight)
                b.bias.copy_(a.bias)
    return model


def import_descript():
    try:
        import dac
    except Exception as exc:  # it fails with ImportError, OSError or RuntimeError depending on torchaudio
        raise UsageError(
            f"codec backend 'descript' is unavailable here: import dac failed ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); install the `dac` extra or use --codec transformers"
        ) from None
    return dac


def load_codec(backend: str, path: str, device: str) -> Codec:
    if backend == "transformers":
        return TransformersDac.load(path, device)
    if backend == "descript":
        return DescriptDac(path, device)
    raise UsageError(f"unknown codec backend {backend!r}: choose one of {', '.join(CODEC_BACKENDS)}")


def decode_window(decode: Callable[[torch.Tensor], torch.Tensor], window: Callable[[int, int], torch.Tensor],
                  start: int, stop: int, context_frames: int, frames: int) -> torch.Tensor:
    """The samples of frames start..stop of `frames`: `decode` of `window(lo, hi)`, the codes (B, C, hi - lo) of
    that stretch with `context_frames` of context on either side where there are frames to take it from,
    cut to the stretch's own samples. With the decoder's receptive field as the context
    (`decoder_context_frames`) they are the samples decoding the whole gives there, up to float rounding."""
    lo, hi = max(0, start - context_frames), min(frames, stop + context_frames)
    samples = decode(window(lo, hi))
    hop = samples.shape[-1] // (hi - lo)
    return samples[..., (start - lo) * hop:(stop - lo) * hop]


def decode_in_chunks(decode: Callable[[torch.Tensor], torch.Tensor], codes: torch.Tensor, chunk_frames: int,
                     context_frames: int) -> torch.Tensor:
    """`decode` (B, C, F) codes `chunk_frames` frames at a time (`decode_window`): the waveform decoding the
    whole gives, up to float rounding, while the activations stay a chunk's size. Decodes once where the
    codes are no longer than a chunk."""
    import torch

    frames = codes.shape[-1]
    if frames <= chunk_frames:
        return decode(codes)
    return torch.cat([decode_window(decode, lambda lo, hi: codes[..., lo:hi], start, min(frames, start + chunk_frames),
                                    context_frames, frames) for start in range(0, frames, chunk_frames)], dim=-1)
