"""A cell: one configuration to measure, the unit a worker runs in its own process."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from harness.errors import UsageError
from harness.presets import frames_for_seconds, get_preset

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
    warmup: int = 1
    repeats: int = 3
    # With a budget, repeats go on until it is spent; `repeats` is then the minimum.
    time_budget_s: float | None = None
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

    @property
    def frames(self) -> int:
        return frames_for_seconds(self.seconds)

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
        return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Input checks that need no torch; raise UsageError with the fix."""
        get_preset(self.preset)
        if not self.text or not self.text.strip():
            raise UsageError("text is empty: pass a transcript such as --text '[S1] Hello. [S2] Hi!'")
        if not self.seconds > 0:
            raise UsageError(f"--seconds must be > 0 (got {self.seconds}); for example --seconds 1")
        if self.frames < 1:
            raise UsageError(f"--seconds {self.seconds} is under one audio frame (11.6 ms); ask for more audio")
        for name in ("batch", "repeats"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1 (got {getattr(self, name)})")
        if self.warmup < 0:
            raise UsageError(f"--warmup must be 0 or more (got {self.warmup})")
        if self.temperature <= 0 or not 0 < self.top_p <= 1 or self.top_k < 1:
            raise UsageError("sampling needs temperature > 0, 0 < top_p <= 1 and top_k >= 1")
        if self.warmup == 0 and any(spec.partition("=")[0].strip() == "compile" for spec in self.plugins):
            raise UsageError("compile with --warmup 0 would time compilation as generation: use --warmup 1 or more")
