"""Does `dia-bench compare --fail-on regression` pass two runs of the same code? Runs a suite N + 1
times and compares each run with the next: every failure is a false alarm.

    python -m tests.bench.aa_compare --out runs/aa-compare [--suite smoke] [--tries 20]

Prints each try's verdict and the count; the goal is at least 19 passes in 20. Each run adds to the
machine's history of noise between processes, as any sweep does, so later tries start from a prior
learned on the earlier ones (the first from whatever the history held). Not a unit test.
"""

from __future__ import annotations

import argparse
import itertools
import json
import subprocess
import sys
from pathlib import Path

from dia_bench.harness import env


def dia_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dia_bench.harness.cli", *args], capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="a folder for the runs (resumed if it holds some)")
    parser.add_argument("--suite", default="smoke")
    parser.add_argument("--tries", type=int, default=20)
    args = parser.parse_args()
    print(f"cpu: {env.cpu_info()['model']}  suite: {args.suite}  tries: {args.tries}", flush=True)
    runs = [args.out / f"run-{i:02d}" for i in range(args.tries + 1)]
    for run in runs:
        if not (run / "run.json").exists() or json.loads((run / "run.json").read_text()).get("finished_at") is None:
            done = dia_bench("sweep", args.suite, "--out", str(run), "--quiet",
                             *(["--resume"] if (run / "run.json").exists() else []))
            if done.returncode != 0:
                sys.exit(f"sweep into {run} failed: {done.stderr.strip().splitlines()[-1:]}")
    passed = 0
    for i, (a, b) in enumerate(itertools.pairwise(runs)):
        cmp = dia_bench("compare", str(a), str(b), "--fail-on", "regression")
        ok = cmp.returncode == 0
        passed += ok
        why = "" if ok else " " + " ".join(cmp.stderr.strip().splitlines()[-1:])
        print(f"try {i + 1}: {a.name} -> {b.name}: {'pass' if ok else 'FAIL'}{why}", flush=True)
    print(f"{passed} of {args.tries} tries passed")


if __name__ == "__main__":
    main()
