"""A cell: one configuration to measure, the unit a worker runs in its own process."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from dia_bench.harness.errors import UsageError
from dia_bench.harness.presets import FRAMES_PER_SECOND, decode_steps, frames_for_seconds, get_preset

DEFAULT_TEXT = (
    "[S1] Dia is an open weights text to dialogue model. "
    "[S2] You get full control over scripts and voices. [S1] Wow. Amazing. (laughs)"
)


@dataclass
class Cell:
    preset: str = "dia-1.6b"
    device: str = "cpu"
    plugins: list[str] = field(default_factory=list)  # "name" or "name=value", as the user wrote them
    text: str = DEFAULT_TEXT
    seconds: float = 1.0
    batch: int = 1
    # A batch of requests of different lengths: request i reads batch_texts[i % len]; None: every
    # request reads `text` (which is then batch_texts[0]).
    batch_texts: list[str] | None = None
    warmup: int = 1
    # None: a warmup is a whole request of the cell's length. Else the warmup stops after the prefill and
    # this much audio's worth of decode steps (`warmup_steps`), where no plugin prepares per shape (a
    # compile, cuDNN's autotuning: those warm up with a whole request whatever this says). Each decode
    # step reads every weight, so a few page in and prime what a whole request does, without the delay
    # pattern's 16 last steps (tests/bench/warmup.py: no slower first repeat).
    warmup_seconds: float | None = None
    repeats: int = 3
    # With a budget, repeats go on until it is spent; `repeats` is then the minimum.
    time_budget_s: float | None = None
    # Adaptive repeats: after `repeats`, go on until the 95% interval is within +-target_ci_pct
    # percent of the centre, or `max_repeats` ran.
    target_ci_pct: float | None = None
    max_repeats: int | None = None
    # The between-process term (variance, df, source) that interval includes: the run's prior for
    # this machine; None, the default prior.
    process_term: dict[str, Any] | None = None
    seed: int = 0
    weights_seed: int = 0
    weights: str | None = None
    codec_weights: str | None = None
    codec: str = "transformers"
    cfg_scale: float = 3.0
    temperature: float = 1.8
    top_p: float = 0.90
    top_k: int = 45
    fidelity: bool = True
    profile_dir: str | None = None
    save_audio: str | None = None
    audio_dir: str | None = None  # sweeps: keep each cell's audio here when the weights are real
    # Where the fp32 reference's history lives: the run directory in sweeps, else the cache.
    fidelity_dir: str | None = None
    label: str | None = None
    # CUDA cells: the GPU model they must run on (Ray's accelerator type, "H100"); None: any GPU.
    gpu_model: str | None = None

    @property
    def frames(self) -> int:
        return frames_for_seconds(self.seconds)

    def warmup_steps(self, full_length: bool) -> int | None:
        """Decoder steps of a warmup request cut short (`DiaPipeline.warm`): the prefill, then
        `warmup_seconds` of decode steps at 86.13 a second. None for a request of the cell's own length:
        where no `warmup_seconds` is asked, or where a plugin needs the cell's shapes (`full_length`)."""
        if full_length or self.warmup_seconds is None:
            return None
        return min(decode_steps(self.frames), 1 + max(1, frames_for_seconds(self.warmup_seconds)))

    @property
    def request_texts(self) -> list[str]:
        """The text of each request of the batch."""
        if self.batch_texts:
            return [self.batch_texts[i % len(self.batch_texts)] for i in range(self.batch)]
        return [self.text] * self.batch

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["frames"] = self.frames
        d["cell_id"] = self.cell_id
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Cell:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def cell_id(self) -> str:
        """Stable identity of what is measured (not where its outputs go): for resume and compare."""
        keys = ("preset", "device", "plugins", "text", "seconds", "batch", "seed", "weights_seed", "codec",
                "cfg_scale", "temperature", "top_p", "top_k")
        d = asdict(self)
        ident = {k: d[k] for k in keys}
        ident["plugins"] = sorted(self.plugins)
        if self.batch_texts:  # only where set, so that every earlier cell keeps its identity
            ident["batch_texts"] = self.batch_texts
        if self.gpu_model:
            ident["gpu_model"] = self.gpu_model
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Every check of a cell that needs no torch, in one place: the command line, suites (each
        cell, at load) and the worker all call it. Raises UsageError with the fix."""
        preset = get_preset(self.preset)
        for text in self.batch_texts or [self.text]:
            if not isinstance(text, str) or not text.strip():
                raise UsageError("text is empty: pass a transcript such as --text '[S1] Hello. [S2] Hi!'")
            tokens = text_tokens(text)
            if tokens > preset.encoder_positions:
                raise UsageError(f"the text is {tokens} tokens (bytes) long; Dia's encoder reads at most "
                                 f"{preset.encoder_positions}: shorten it or split the dialogue")
        if not _finite(self.seconds) or self.seconds <= 0:
            raise UsageError(f"--seconds must be a finite number > 0 (got {self.seconds}); for example --seconds 1")
        if self.frames < 1:
            raise UsageError(f"--seconds {self.seconds} is under one audio frame (11.6 ms); ask for more audio")
        longest = (preset.decoder_positions - decode_steps(0)) / FRAMES_PER_SECOND
        if decode_steps(self.frames) > preset.decoder_positions:
            raise UsageError(f"--seconds {self.seconds:g} needs {decode_steps(self.frames)} decoder "
                             f"positions; Dia's decoder has {preset.decoder_positions}: ask for at most "
                             f"{longest:.1f} s")
        for name in ("batch", "repeats"):
            if not _int(getattr(self, name)) or getattr(self, name) < 1:
                raise UsageError(f"--{name} must be a whole number >= 1 (got {getattr(self, name)})")
        if not _int(self.warmup) or self.warmup < 0:
            raise UsageError(f"--warmup must be a whole number >= 0 (got {self.warmup})")
        if self.warmup_seconds is not None and (not _finite(self.warmup_seconds) or self.warmup_seconds <= 0):
            raise UsageError(f"warmup_seconds must be a finite number > 0, such as 0.02 (got {self.warmup_seconds}); "
                             "leave it out to warm up at the cell's own length")
        if self.max_repeats is not None and (not _int(self.max_repeats) or self.max_repeats < self.repeats):
            raise UsageError(f"--max-repeats must be a whole number >= --repeats ({self.repeats}), "
                             f"got {self.max_repeats}")
        if self.target_ci_pct is not None and (not _finite(self.target_ci_pct) or self.target_ci_pct <= 0):
            raise UsageError(f"--target-ci-pct must be a number > 0, such as 2 (got {self.target_ci_pct})")
        if self.target_ci_pct is not None and self.max_repeats is None:
            raise UsageError("--target-ci-pct needs --max-repeats, the most repeats to spend reaching it")
        if self.time_budget_s is not None and (not _finite(self.time_budget_s) or self.time_budget_s <= 0):
            raise UsageError(f"time_budget_s must be a number > 0 (got {self.time_budget_s})")
        if not _finite(self.temperature) or self.temperature <= 0 or not _finite(self.top_p) \
                or not 0 < self.top_p <= 1 or not _int(self.top_k) or self.top_k < 1:
            raise UsageError("sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 1")
        if not _finite(self.cfg_scale) or self.cfg_scale <= 1:
            # transformers' Dia treats 1 as "no guidance" and refuses scales below it.
            raise UsageError(f"--cfg-scale must be above 1 (got {self.cfg_scale:g}); to switch guidance off use "
                             "--opt cfg=0")
        if self.gpu_model is not None:
            from dia_bench.harness.devices import GPU_MODEL

            if not isinstance(self.gpu_model, str) or not GPU_MODEL.match(self.gpu_model):
                raise UsageError(f"gpu_model {self.gpu_model!r} is not a GPU model name: give one as Ray names "
                                 "accelerators, such as H100, A100 or L4")
            if not self.device.startswith("cuda"):
                raise UsageError(f"gpu_model {self.gpu_model} is for CUDA cells, and this one runs on {self.device}")
        if self.warmup == 0 and any(spec.partition("=")[0].strip() == "compile" for spec in self.plugins):
            raise UsageError("compile with --warmup 0 would time compilation as generation: use --warmup 1 or more")


def text_tokens(text: str) -> int:
    """Dia's tokenizer reads bytes, with [S1] and [S2] as one token each (tests check it against
    DiaTokenizer itself): the count without importing transformers."""
    return len(text.replace("[S1]", "\x01").replace("[S2]", "\x02").encode("utf-8"))


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
