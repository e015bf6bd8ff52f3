"""engine=hf against engine=static in ONE process, interleaved: the same loaded (and transformed) model,
the two loops taking turns, so that a machine whose memory bandwidth wanders (2-core VMs: episodes of
steps 60% slower, lasting seconds) slows both alike. Sweep cells run in separate processes minutes
apart and cannot separate a 10% engine effect from that.

    python -m tests.bench.engine [--preset dia-1.6b] [--opt int8=dynamic ...] [--frames 24] [--rounds 4]

Prints each round's median step per engine, and the median over rounds of their ratio. Not a unit
test: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from dia_bench.harness import env
from dia_bench.harness.cell import Cell
from dia_bench.harness.runtime.pipeline import SamplingParams
from dia_bench.harness.runtime.static_engine import StaticEngine
from dia_bench.harness.worker.measure import load_pipeline
from dia_bench.optimizations.registry import apply_plan, resolve

TEXT = ["[S1] Dia is an open weights text to dialogue model."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dia-1.6b")
    parser.add_argument("--opt", action="append", default=[], help="plugins applied to the model both loops run")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--rounds", type=int, default=4, help="rounds after one warmup round")
    args = parser.parse_args()

    plan = resolve([o for o in args.opt if not o.startswith("engine")], "cpu")
    cell = Cell(preset=args.preset, device="cpu", warmup=0, repeats=1)
    pipe, weights = load_pipeline(cell, plan.load_dtype() or torch.float32)
    apply_plan(pipe, plan, "cpu")
    static = StaticEngine(pipe)
    steps: dict[str, list[float]] = {"hf": [], "static": []}
    for i in range(args.rounds + 1):
        for name in ("hf", "static"):
            pipe.engine = static if name == "static" else None
            out = pipe.run(TEXT, args.frames, SamplingParams(), 0)
            if i:  # the first round warms both up
                steps[name].append(statistics.median(out.times.step_latencies_s) * 1000)
    print(f"cpu: {env.cpu_info()['model']}  weights: {weights['source']}  preset: {args.preset}  "
          f"plugins: {plan.specs or ['none']}  frames: {args.frames}")
    for name, values in steps.items():
        print(f"{name:>6}: median step per round (ms) {[round(v, 1) for v in values]}")
    ratios = [h / s for h, s in zip(steps["hf"], steps["static"], strict=True)]
    print(f"hf / static, median over rounds: {statistics.median(ratios):.3f} (rounds: {[round(r, 3) for r in ratios]})")


if __name__ == "__main__":
    main()
