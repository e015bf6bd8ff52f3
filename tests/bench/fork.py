"""Does a forked worker measure what a fresh interpreter does? The same cell, processes taking turns.

    python -m tests.bench.fork [--rounds 3] [--preset dia-1.6b] [--seconds 0.25] [--repeats 5]

Each round runs the cell once forked from the fork server and once with DIA_BENCH_FORK=0; it prints
each run's generation median, decode step p50, peak RSS of the repeats, load time and worker wall.
Not a test: it takes minutes on dia-1.6b and its answer is a judgement on noise.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def one_run(preset: str, seconds: float, repeats: int, fork: bool, out: Path) -> dict:
    env = {**os.environ, "DIA_BENCH_FORK": "1" if fork else "0"}
    cmd = [sys.executable, "-m", "dia_bench.harness.cli", "run", "--preset", preset, "--device", "cpu",
           "--seconds", str(seconds), "--repeats", str(repeats), "--warmup", "1", "--warmup-seconds", "0.02",
           "--quiet", "--json", str(out)]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    return json.loads(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--preset", default="dia-1.6b")
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    print("run    start   generation s  step p50 ms  peak RSS MB  load s  worker wall s")
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.rounds):
            for fork in (True, False):
                rec = one_run(args.preset, args.seconds, args.repeats, fork, Path(tmp) / "r.json")
                assert rec["status"] == "ok", rec.get("reason")
                print(f"{i + 1:<6} {rec['worker_start']['process']:<7} {rec['generation_seconds']:12.3f} "
                      f"{rec['stages']['step_latency_ms']['p50']:12.2f} {rec['peak_rss_mb']:12.0f} "
                      f"{rec['load_seconds']:7.2f} {rec['worker_wall_seconds']:14.1f}", flush=True)
    print("cpu:", rec["env"]["cpu"].get("model"))


if __name__ == "__main__":
    main()
