"""The 8da4w kernel's walk over its weights, chosen per processor by measuring, and kept with the library.

What keeps the memory bus busy during a GEMV of a few rows differs by processor, and its vendor does not
say: software prefetch measured faster on a Xeon and slower on a Zen 4. So the first use of a built
library times a few walks (w4a8.calibrate: prefetch distances, streams a thread, how threads split the
tiles) and keeps the simplest of those tied with the fastest, round by round, in a file beside the library,
keyed like it by the source, compiler, flags and processor, and also by the thread count it ran with.
Every later process reads that file. Each record then names the walk chosen and what the calibration
measured.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

# 5: non-temporal prefetch among the candidates
FORMAT_VERSION = 5


@dataclass(frozen=True)
class Walk:
    """How the kernel walks its weights (w4a8.c, w4a8_set_tuning): prefetch distances in bytes into L1
    (`near`) and L2 (`far`), 0 for none; tiles a thread walks in turn; threads' tiles in one run each (0)
    or dealt out in turn (1); a distance prefetched with the non-temporal hint (`nta`, 0 for none). The
    defaults are the walk before any calibration."""

    near: int = 0
    far: int = 0
    streams: int = 2
    split: int = 0
    nta: int = 0

    @property
    def args(self) -> tuple[int, int, int, int, int]:
        return self.near, self.far, self.streams, self.split, self.nta

    @property
    def prefetches(self) -> bool:
        return bool(self.near or self.far or self.nta)

    def describe(self) -> str:
        fetch = "no software prefetch" if not self.prefetches else \
            "software prefetch " + " and ".join(f"{b // 1024} KB ahead {level}" for b, level in
                                               ((self.near, "into L1"), (self.far, "into L2"),
                                                (self.nta, "non-temporally")) if b)
        return (f"{fetch}, {self.streams} stream(s) a thread, tiles "
                f"{'dealt out in turn' if self.split else 'in one run'} a thread")


@dataclass(frozen=True)
class Calibration:
    """The walk chosen, with each candidate's speed over the untuned walk (the median over rounds of the
    untuned walk's time over the candidate's in the same round: the pairing takes out the machine's
    bandwidth moving between rounds), its median weight bytes per second over the rounds and the slowest
    and fastest round, and the walks tied with the fastest.

    The fastest by that median wins only where it beat the simpler walks beyond the calibration's noise:
    a walk that was faster than it in enough rounds (a two-sided sign test at 5%) is tied with it, and
    the simplest of those tied is chosen (fewest streams, then no prefetch into L1, none into L2, tiles in
    one run), and the fastest of those. The calibration times the walks back to back, and on a 2-core Zen 5
    a compiled step ran more streams and L1 prefetch 4-7% slower than the calibration's own timings put
    them (tests/bench/walk_ranking.py): extra streams and distances have to earn their place. Non-temporal
    prefetch is not held against a walk: there the step gained at least what the calibration measured (2 KB
    ahead: GEMVs 1.04x, the step 1.045x, tests/bench/step_ab.py --compare walk --by-step; of the 36 walks
    the step ran fastest with it, 1.046x ahead of no prefetch, walk_ranking over 8 rounds), since it also
    leaves the step's other data in the caches."""

    walk: Walk
    threads: int
    weight_bytes: int
    gb_per_s: dict[str, float] = field(default_factory=dict)  # candidate's describe() -> median GB/s
    gb_per_s_range: dict[str, list[float]] = field(default_factory=dict)  # -> [slowest, fastest round]
    speed_over_untuned: dict[str, float] = field(default_factory=dict)  # -> paired median, untuned / candidate
    tied: list[str] = field(default_factory=list)  # the fastest and the walks tied with it, fastest first

    @classmethod
    def from_times(cls, times: dict[Walk, list[float]], weight_bytes: int, threads: int) -> Calibration:
        """From each candidate's seconds a round, `times[w][i]` all measured in round i (the untuned walk
        among them)."""
        untuned = times[Walk()]
        speed = {w: statistics.median(u / s for u, s in zip(untuned, t, strict=True)) for w, t in times.items() if t}
        fastest = max(speed, key=speed.get)
        limit = sign_test_limit(len(times[fastest]))
        tied = [w for w in sorted(speed, key=speed.get, reverse=True)
                if w == fastest or sum(a < b for a, b in zip(times[w], times[fastest], strict=True)) > limit]
        best = min(tied, key=lambda w: (w.streams, w.near > 0, w.far > 0, w.split, -speed[w]))

        def rate(seconds: float) -> float:
            return round(weight_bytes / seconds / 1e9, 2)

        ordered = sorted(speed, key=speed.get, reverse=True)
        return cls(best, threads, weight_bytes, {w.describe(): rate(statistics.median(times[w])) for w in ordered},
                   {w.describe(): [rate(max(times[w])), rate(min(times[w]))] for w in ordered},
                   {w.describe(): round(speed[w], 4) for w in ordered}, [w.describe() for w in tied])

    def as_record(self) -> dict[str, Any]:
        untuned = self.gb_per_s.get(Walk().describe())
        best = self.gb_per_s.get(self.walk.describe())
        gain = self.speed_over_untuned.get(self.walk.describe())
        if gain is None:
            gain = round(best / untuned, 3) if best and untuned else None
        return {"calibrated": True, "walk": self.walk.describe(), **asdict(self.walk), "threads": self.threads,
                "best_gb_per_s": best, "untuned_gb_per_s": untuned, "gain_over_untuned": gain,
                "best_gb_per_s_range": self.gb_per_s_range.get(self.walk.describe()),
                "untuned_gb_per_s_range": self.gb_per_s_range.get(Walk().describe()),
                "candidates_gb_per_s": dict(self.gb_per_s),
                "candidates_speed_over_untuned": dict(self.speed_over_untuned), "tied_with_fastest": list(self.tied)}

    def to_json(self) -> dict[str, Any]:
        return {"format_version": FORMAT_VERSION, "walk": asdict(self.walk), "threads": self.threads,
                "weight_bytes": self.weight_bytes, "gb_per_s": self.gb_per_s, "gb_per_s_range": self.gb_per_s_range,
                "speed_over_untuned": self.speed_over_untuned, "tied": self.tied}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Calibration | None:
        if data.get("format_version") != FORMAT_VERSION:
            return None
        return cls(Walk(**data["walk"]), int(data["threads"]), int(data["weight_bytes"]), dict(data["gb_per_s"]),
                   {k: list(v) for k, v in data["gb_per_s_range"].items()}, dict(data["speed_over_untuned"]),
                   list(data["tied"]))


def sign_test_limit(rounds: int, alpha: float = 0.05) -> int:
    """The most rounds out of `rounds` a walk may win against another and still be slower beyond noise:
    the largest k with P(wins <= k) <= alpha / 2 for a fair coin (-1 where no count is that rare)."""
    k, tail = -1, 0.0
    while k + 1 <= rounds:
        tail += math.comb(rounds, k + 1) / 2**rounds
        if tail > alpha / 2:
            break
        k += 1
    return k


def tuning_path(library: Path, threads: int) -> Path:
    return library.with_name(f"{library.stem}.walk-{threads}t.json")


def load_or_calibrate(library: Path, calibrate: Callable[[], Calibration]) -> Calibration:
    """The stored calibration for this library and thread count, else a new one, stored atomically (a
    concurrent worker reads a whole file or none, and at worst calibrates too)."""
    path = tuning_path(library, torch.get_num_threads())
    try:
        stored = Calibration.from_json(json.loads(path.read_text()))
        if stored is not None:
            return stored
    except (OSError, ValueError, KeyError, TypeError):
        pass
    chosen = calibrate()
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, suffix=".tmp", delete=False) as tmp:
        json.dump(chosen.to_json(), tmp, indent=1)
    os.replace(tmp.name, path)
    return chosen
