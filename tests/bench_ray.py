"""What the ray executor costs: one suite through `--executor local` and `--executor ray` (a Ray instance
of its own on this machine: one node, so cells run one at a time as with local).

    python -m tests.bench_ray OUT [--suite smoke]

Prints the wall time of each sweep, the overhead Ray adds per cell (the sweep's wall time beyond the
workers' own, against local's), and the A/A spread: the same baseline cell measured first and last in
each run (end RTF / start RTF - 1). Not a unit test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from dia_bench.harness.driver import rundir


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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--suite", default="smoke")
    args = ap.parse_args()
    rows = {}
    for executor in ("local", "ray"):
        out = args.out / executor
        rows[executor] = figures(out, sweep(args.suite, out, executor))
    for executor, f in rows.items():
        print(f"{executor}: {f['cells']} cells, wall {f['wall']:.1f} s, workers {f['workers']:.1f} s, "
              f"{f['beyond']:.2f} s a cell beyond the workers; A/A (end/start baseline RTF) {f['aa_pct']} %")
    extra = (rows["ray"]["wall"] - rows["local"]["wall"]) / rows["ray"]["cells"]
    extra_beyond = rows["ray"]["beyond"] - rows["local"]["beyond"]
    print(f"Ray adds {extra:.2f} s a cell in wall time, {extra_beyond:.2f} s a cell beyond the workers' own time")


if __name__ == "__main__":
    main()
