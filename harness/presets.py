"""Model presets: the real Dia-1.6B architecture and a tiny one on the same code path."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dia_bench.harness.errors import UsageError

SAMPLE_RATE = 44100
HOP_LENGTH = 512
FRAMES_PER_SECOND = SAMPLE_RATE / HOP_LENGTH  # 86.13
DELAY_PATTERN = [0, 8, 9, 10, 11, 12, 13, 14, 15]


@dataclass(frozen=True)
class Preset:
    name: str
    description: str
    encoder: dict[str, Any]
    decoder: dict[str, Any]
    codec: dict[str, Any]
    # Hub ids looked up in the local Hugging Face cache only; None where no real weights exist.
    hf_model_id: str | None = None
    hf_codec_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def dia_config(self):
        from transformers import DiaConfig
        from transformers.models.dia.configuration_dia import DiaDecoderConfig, DiaEncoderConfig

        return DiaConfig(
            encoder_config=DiaEncoderConfig(**self.encoder),
            decoder_config=DiaDecoderConfig(**self.decoder),
            delay_pattern=list(DELAY_PATTERN),
        )

    @property
    def encoder_positions(self) -> int:
        """The longest text, in tokens, the encoder reads (transformers' default where unset)."""
        return int(self.encoder.get("max_position_embeddings", 1024))

    @property
    def decoder_positions(self) -> int:
        """The most decode steps the decoder has positions for."""
        return int(self.decoder.get("max_position_embeddings", 3072))

    def dac_config(self):
        from transformers import DacConfig

        return DacConfig(**self.codec)


_REAL_CODEC = dict(
    encoder_hidden_size=64,
    downsampling_ratios=[2, 4, 8, 8],
    decoder_hidden_size=1536,
    n_codebooks=9,
    codebook_size=1024,
    codebook_dim=8,
    hidden_size=1024,
    sampling_rate=SAMPLE_RATE,
)

PRESETS: dict[str, Preset] = {
    "dia-1.6b": Preset(
        name="dia-1.6b",
        description="Dia-1.6B: 12-layer encoder (1024), 18-layer decoder (2048, GQA 16/4), DAC 44.1 kHz",
        encoder=dict(
            num_hidden_layers=12, hidden_size=1024, num_attention_heads=16, num_key_value_heads=16,
            head_dim=128, intermediate_size=4096, vocab_size=256,
        ),
        decoder=dict(
            num_hidden_layers=18, hidden_size=2048, intermediate_size=8192, num_attention_heads=16,
            num_key_value_heads=4, head_dim=128, cross_num_attention_heads=16, cross_head_dim=128,
            cross_num_key_value_heads=16, cross_hidden_size=1024, vocab_size=1028, num_channels=9,
        ),
        codec=_REAL_CODEC,
        hf_model_id="nari-labs/Dia-1.6B-0626",
        hf_codec_id="descript/dac_44khz",
    ),
    "dia-tiny": Preset(
        name="dia-tiny",
        description="A few MB of Dia: 2+2 layers of width 64, same code path, for tests and smoke runs",
        encoder=dict(
            num_hidden_layers=2, hidden_size=64, num_attention_heads=4, num_key_value_heads=4,
            head_dim=16, intermediate_size=128, vocab_size=256,
        ),
        decoder=dict(
            num_hidden_layers=2, hidden_size=64, intermediate_size=128, num_attention_heads=4,
            num_key_value_heads=2, head_dim=16, cross_num_attention_heads=4, cross_head_dim=16,
            cross_num_key_value_heads=4, cross_hidden_size=64, vocab_size=1028, num_channels=9,
        ),
        codec=dict(_REAL_CODEC, encoder_hidden_size=8, decoder_hidden_size=32, hidden_size=32),
    ),
}


def get_preset(name: str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise UsageError(
            f"unknown preset {name!r}: choose one of {', '.join(sorted(PRESETS))}"
        ) from None


def frames_for_seconds(seconds: float) -> int:
    """Audio frames for a duration: round(seconds x 86.13)."""
    return round(seconds * FRAMES_PER_SECOND)


def decode_steps(frames: int, delays: list[int] = DELAY_PATTERN) -> int:
    """Decoder steps for `frames` audio frames: the most delayed channel's last frame, then its EOS.

    The one place this is counted: the validator's limit, `generate`'s max_new_tokens and the static
    engine's loop must agree, or the two engines would do different work."""
    return frames + max(delays) + 1


def frames_complete(steps_done: int, frames: int, delays: list[int] = DELAY_PATTERN) -> int:
    """Audio frames whose codes are all known after `steps_done` decode steps.

    Channel c's frame f comes at step f + delay[c] + 1, so the most delayed channel holds every
    frame back by max(delays) steps: what a stream must wait for before it can decode a frame."""
    return max(0, min(frames, steps_done - max(delays)))
