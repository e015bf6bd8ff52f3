"""How long `dia-bench history` takes over many runs, and how large its page is.

    python -m tests.bench.history OUT [--real RUN_DIR] [--commits 100]

Without `--real`, a real sweep of a 10-cell dia-tiny suite is made first (OUT/real). Its records are
rewritten as in the tests (tests/history_story.py) to `--commits` commits on each of two machines
(200 runs by default), then `dia-bench history` runs over them in its own process, as a user runs
it, for the HTML page and the Markdown one. Not a unit test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

from tests import history_story
from tests.test_sweep import TINY_SUITE

# The tests' suite with other plugins: baseline, eight plugins, the baseline again at the end, so
# ten records and nine configurations.
SUITE = TINY_SUITE.split("[plugins]")[0] + """[plugins]
cfg = ["0"]
sdpa = ["math", "efficient"]
int8 = ["dynamic"]
threads = ["1"]
autocast = ["bf16"]
dtype = ["bf16"]
channels-last = [true]
"""


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dia_bench.harness.cli", *args], capture_output=True, text=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out")
    parser.add_argument("--real", default=None, help="a real run directory to rewrite (default: sweep one)")
    parser.add_argument("--commits", type=int, default=100, help="commits per machine; two machines")
    args = parser.parse_args()
    out = Path(args.out)
    real = Path(args.real) if args.real else out / "real"
    if not args.real and not (real / "run.json").is_file():
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench-suite.toml").write_text(SUITE)
        result = _cli("sweep", str(out / "bench-suite.toml"), "--out", str(real), "--quiet")
        if result.returncode not in (0, 1):  # 1: a cell failed; its record still counts
            sys.exit(result.stderr)
    cells = len(list((real / "cells").glob("*.json")))
    runs_dir = out / "runs"
    shutil.rmtree(runs_dir, ignore_errors=True)
    runs = history_story.make_story(real, runs_dir, commits=args.commits)
    print(f"{len(runs)} runs of {cells} cells each in {runs_dir}")
    for name, extra in (("history.html", []), ("history.md", ["--markdown"])):
        page = out / name
        t0 = time.perf_counter()
        result = _cli("history", str(runs_dir), "-o", str(page), *extra)
        wall = time.perf_counter() - t0
        if result.returncode != 0:
            sys.exit(result.stderr)
        size_kb = page.stat().st_size / 1e3
        print(f"dia-bench history {' '.join(extra) or '(HTML)'}: {wall:.2f} s wall, page {size_kb:.0f} kB")


if __name__ == "__main__":
    main()
