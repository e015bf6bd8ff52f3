"""Does a warmup cut short leave the first measured repeat slower? Fresh processes, taking turns: one
warmed by a whole request of the cell's own length, one by a request cut short after the prefill and
`--warmup-seconds` of decode steps (what suites' `warmup_seconds` asks for: DiaPipeline.warm), then
repeats of the cell's length; for each, the first repeat against the median of the others.

    python -m tests.bench.warmup [--preset dia-1.6b] [--seconds 0.25] [--warmup-seconds 0.02] [--rounds 2]

Prints one line a process, then the median over processes of first/rest per warmup. Not a unit test:
the figures name the machine and go in a closing note.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

TEXT = "[S1] Hello there. [S2] Hi! How are you?"


def one_process(preset: str, seconds: float, warmup_seconds: float | None, repeats: int) -> dict:
    import torch

    from dia_bench.harness.cell import Cell
    from dia_bench.harness.runtime.pipeline import SamplingParams
    from dia_bench.harness.worker.measure import load_pipeline

    cell = Cell(preset=preset, device="cpu", fidelity=False, seconds=seconds, warmup_seconds=warmup_seconds)
    pipe, _ = load_pipeline(cell)
    sampling = SamplingParams()
    steps = cell.warmup_steps(full_length=False)
    with torch.inference_mode():
        t0 = time.perf_counter()
        if steps is None:
            pipe.run([TEXT], cell.frames, sampling, 0)
        else:
            pipe.warm([TEXT], steps, sampling, 0)
        warm = time.perf_counter() - t0
        times = [pipe.run([TEXT], cell.frames, sampling, 0).times.generate_s for _ in range(repeats)]
    return {"warmup_s": warm, "repeats": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dia-1.6b")
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--warmup-seconds", type=float, default=0.02)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", choices=["whole", "cut"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        warmup = args.warmup_seconds if args.child == "cut" else None
        print(json.dumps(one_process(args.preset, args.seconds, warmup, args.repeats)))
        return
    from dia_bench.harness import env

    print(f"cpu: {env.cpu_info()['model']}, {args.preset}, {args.seconds} s requests")
    ratios: dict[str, list[float]] = {"whole": [], "cut": []}
    for _ in range(args.rounds):
        for kind in ratios:
            out = subprocess.run([sys.executable, "-m", "tests.bench.warmup", "--preset", args.preset, "--seconds",
                                  str(args.seconds), "--repeats", str(args.repeats), "--warmup-seconds",
                                  str(args.warmup_seconds), "--child", kind], capture_output=True, text=True,
                                 check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            first, rest = r["repeats"][0], statistics.median(r["repeats"][1:])
            ratios[kind].append(first / rest)
            print(f"  {kind:5} warmup ({r['warmup_s']:.1f} s): repeats "
                  f"{' '.join(f'{t:.2f}' for t in r['repeats'])} s; first/rest {first / rest:.3f}", flush=True)
    for kind, values in ratios.items():
        print(f"{kind:5}: first repeat / median of the rest, median over processes {statistics.median(values):.3f}")


if __name__ == "__main__":
    main()
