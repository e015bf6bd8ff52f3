"""What the ray executor costs: one suite through `--executor local` and `--executor ray` (a Ray instance
of its own on this machine: one node, so cells run one at a time as with local).

    python -m tests.bench.ray OUT [--suite smoke] [--rounds 2]

The two executors take turns (local, ray, local, ray, ...), so a machine that drifts drifts on both.
Prints the wall time of each sweep, the overhead Ray adds per cell (the sweep's wall time beyond the
workers' own, against local's), and per cell its RTF under each executor: the A/A spread (the same
executor's rounds against each other) beside the executors' difference. Ray agrees with local when
the difference is within the A/A spread. Not a unit test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dia_bench.harness import rundir


def sweep(suite: str, out: Path, executor: str) -> float:
    t0 = time.monotonic()
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run([sys.executable, "-m", "dia_bench.harness.cli", "sweep", suite, "--out", str(out), "--quiet",
                    "--executor", executor], check=True, env=env, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def figures(out: Path, wall: float) -> dict:
    recs = [r for r in rundir.records(out) if r["status"] != "skipped"]
    workers = sum(r.get("worker_wall_seconds") or 0 for r in recs)
    starts = [r for r in recs if r["role"] == "baseline-start" and r["status"] == "ok"]
    ends = {r["cell_id"]: r for r in recs if r["role"] == "baseline-end" and r["status"] == "ok"}
    aa = [ends[s["cell_id"]]["rtf"] / s["rtf"] - 1 for s in starts if s["cell_id"] in ends]
    return {"cells": len(recs), "wall": wall, "workers": workers, "beyond": (wall - workers) / len(recs),
            "aa_pct": [round(100 * a, 1) for a in aa]}


def rtfs(out: Path) -> dict[str, float]:
    """Each measured cell's RTF by key, baselines under their role (a Ray key names its node)."""
    return {(r["role"] if r["role"].startswith("baseline") else r["key"]): r["rtf"]
            for r in rundir.records(out) if r["status"] == "ok"}


def log_spread(values: list[float]) -> float:
    """Largest over smallest, as a percentage above 1."""
    return 100 * (math.exp(max(map(math.log, values)) - min(map(math.log, values))) - 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--suite", default="smoke")
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    rows: dict[str, list[dict]] = {"local": [], "ray": []}
    cells: dict[str, dict[str, list[float]]] = {}
    for i in range(args.rounds):
        for executor in ("local", "ray"):
            out = args.out / f"{executor}-{i}"
            rows[executor].append(figures(out, sweep(args.suite, out, executor)))
            for key, rtf in rtfs(out).items():
                cells.setdefault(key, {"local": [], "ray": []})[executor].append(rtf)
    for executor, fs in rows.items():
        for i, f in enumerate(fs):
            print(f"{executor} round {i}: {f['cells']} cells, wall {f['wall']:.1f} s, workers {f['workers']:.1f} s, "
                  f"{f['beyond']:.2f} s a cell beyond the workers")
    n = len(rows["ray"])
    pairs = list(zip(rows["ray"], rows["local"], strict=True))
    extra = statistics.mean((r["wall"] - lo["wall"]) / r["cells"] for r, lo in pairs)
    extra_beyond = statistics.mean(r["beyond"] - lo["beyond"] for r, lo in pairs)
    print(f"Ray adds {extra:.2f} s a cell in wall time, {extra_beyond:.2f} s a cell beyond the workers' own time "
          f"(mean of {n} rounds)")
    print("cell: RTF local (rounds) | ray (rounds) | A/A spread local, ray | ray/local - 1 (geometric means)")
    within, across = [], []
    for key, by in cells.items():
        if len(by["local"]) < 2 or len(by["ray"]) < 2:
            continue
        gl, gr = statistics.geometric_mean(by["local"]), statistics.geometric_mean(by["ray"])
        print(f"{key}: {[round(v, 3) for v in by['local']]} | {[round(v, 3) for v in by['ray']]} | "
              f"{log_spread(by['local']):.1f}%, {log_spread(by['ray']):.1f}% | {100 * (gr / gl - 1):+.1f}%")
        # Pooled log-RTF noise of one round within an executor, against the executors' mean difference.
        within += [math.log(v) - statistics.mean(map(math.log, by[e])) for e in ("local", "ray") for v in by[e]]
        across.append(math.log(gr / gl))
    if across:
        dof = len(within) - 2 * len(across)
        sd = math.sqrt(sum(w * w for w in within) / dof) if dof > 0 else float("nan")
        # A difference of means of n rounds each has sd * sqrt(2 / n).
        expected = sd * math.sqrt(2 / args.rounds)
        rms = math.sqrt(statistics.mean(a * a for a in across))
        print(f"A/A noise of one round: {100 * sd:.1f}% (log sd, pooled over cells and executors); the executors' "
              f"difference would be {100 * expected:.1f}% RMS from noise alone; measured {100 * rms:.1f}% RMS")


if __name__ == "__main__":
    main()
