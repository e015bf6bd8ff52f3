"""Codec backends: codes (batch, 9, frames) in, float32 waveform (batch, samples) out."""

from __future__ import annotations

from typing import Protocol

from harness.errors import UsageError

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
    """descript-audio-codec's `dac`; used only when it imports (it does not beside CPU torch 2.13)."""

    name = "descript"

    def __init__(self, path: str, device: str):
        dac = import_descript()
        import torch

        from harness.presets import SAMPLE_RATE

        self.model = dac.DAC(sample_rate=SAMPLE_RATE, n_codebooks=9, codebook_size=1024, codebook_dim=8)
        state = self._load_transformers_state(path)
        missing = self.model.load_state_dict(state, strict=False).missing_keys
        if missing:
            raise RuntimeError(f"descript codec: {len(missing)} weights not found in {path}")
        self.model = self.model.eval().to(device)
        self.sample_rate = SAMPLE_RATE
        self._torch = torch

    @staticmethod
    def _load_transformers_state(path: str) -> dict:
        # Real descript checkpoints (weights_44khz_8kbps.pth) hold {"state_dict": ...}.
        from pathlib import Path

        import torch

        pth = sorted(Path(path).glob("*.pth"))
        if not pth:
            raise RuntimeError(f"descript codec needs a descript .pth checkpoint in {path}")
        return torch.load(pth[0], map_location="cpu", weights_only=False)["state_dict"]

    def decode(self, codes):
        z = self.model.quantizer.from_codes(codes)[0]
        return self.model.decode(z).float().reshape(codes.shape[0], -1)


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
