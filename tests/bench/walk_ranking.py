"""Whether the 8da4w calibration chooses the walk the compiled decode step runs fastest with: each request
runs every candidate walk in turn, switching after every step, so that all meet the same memory episodes;
after each request the calibration runs again (w4a8.calibrate, not stored), and its choice is placed
among the walks as the step ranked them.

    python -m tests.bench.walk_ranking [--rounds 10] [--seconds 8]

Prints per round the probe, the step's fastest walk, the calibration's choice and its best three with
their gains over the untuned walk; then each walk's step
time against the round's median walk (the median over rounds: pairing by round takes out the episodes),
and for each round's calibration how much slower its choice is than the step's fastest walk, overall
and in that round. dia-1.6b synthetic, `int4=8da4w-128 engine=static compile kv-cache=bf16`, the medium
text. Not a unit test.
"""

from __future__ import annotations

import argparse
import random
import statistics

import torch

from dia_bench.harness import env
from dia_bench.harness.cell import Cell
from dia_bench.harness.driver.suite import load_texts
from dia_bench.harness.kernels import w4a8
from dia_bench.harness.kernels.tuning import Walk
from dia_bench.harness.runtime.pipeline import StepClock
from dia_bench.harness.worker.measure import load_pipeline, sampling_of
from dia_bench.harness.worker.roofline import bandwidth_probe
from dia_bench.optimizations.registry import apply_plan, resolve

PLUGINS = ["int4=8da4w-128", "engine=static", "compile", "kv-cache=bf16"]


def _request(pipe, cell: Cell, sampling, walks: list[Walk]) -> dict[Walk, float]:
    """One request with `walks` taking turns step by step; each walk's median step in ms."""
    lib = w4a8.library()
    at = [0]

    def next_walk(_row: torch.Tensor) -> None:
        at[0] += 1
        lib.w4a8_set_tuning(*walks[at[0] % len(walks)].args)

    lib.w4a8_set_tuning(*walks[0].args)
    clock = StepClock(on_row=next_walk)
    with torch.inference_mode():
        pipe.generate(pipe.tokenize(cell.request_texts), cell.frames, sampling, cell.seed, streamer=clock)
    steps: dict[Walk, list[float]] = {w: [] for w in walks}
    for t in range(1, len(clock.stamps) - 1):  # stamps[t] -> stamps[t + 1] is step t, run with walks[t % n]
        steps[walks[t % len(walks)]].append((clock.stamps[t + 1] - clock.stamps[t]) * 1e3)
    return {w: statistics.median(got) for w, got in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=8.0)
    args = parser.parse_args()
    cell = Cell(plugins=PLUGINS, text=load_texts()["medium"], seconds=args.seconds)
    pipe, _ = load_pipeline(cell)
    apply_plan(pipe, resolve(cell.plugins, "cpu"), "cpu")
    sampling = sampling_of(cell)
    pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)  # compiles
    walks = w4a8.candidate_walks(w4a8.isa())
    named = {w.describe(): w for w in walks}
    print(f"cpu: {env.cpu_info()['model']}  kernel isa: {w4a8.isa()}  {len(walks)} walks  stored choice: "
          f"{w4a8.walk().describe()}", flush=True)
    rng = random.Random(0)
    rounds: list[dict[Walk, float]] = []
    chosen: list[Walk] = []
    for r in range(args.rounds):
        probe = bandwidth_probe(torch.device("cpu"))
        rng.shuffle(walks)
        rounds.append(_request(pipe, cell, sampling, walks))
        calibration = w4a8.calibrate()
        chosen.append(calibration.walk)
        fastest = min(rounds[-1], key=rounds[-1].get)
        top = "  ".join(f"{named[d].args} {gain:.3f}" for d, gain in list(calibration.speed_over_untuned.items())[:3])
        print(f"round {r}: probe {probe:.1f} GB/s  step fastest {rounds[-1][fastest]:.2f} ms with {fastest.args}  "
              f"calibration chose {calibration.walk.args} of {len(calibration.tied)} tied; its best three (gain over "
              f"untuned): {top}", flush=True)
    relative = {w: statistics.median(got[w] / statistics.median(got.values()) for got in rounds) for w in walks}
    best = min(relative.values())
    print("walk (near, far, streams, split, nta): step time x the fastest walk's, paired by round")
    for w in sorted(walks, key=relative.get):
        print(f"  {w.args}  {relative[w] / best:.3f}  {w.describe()}")
    overall = [relative[w] / best for w in chosen]
    same = [got[w] / min(got.values()) for w, got in zip(chosen, rounds, strict=True)]
    print(f"the calibration's choices, x the fastest walk: overall {[round(x, 3) for x in overall]} "
          f"(mean {statistics.mean(overall):.3f}); in their round {[round(x, 3) for x in same]} "
          f"(mean {statistics.mean(same):.3f})")


if __name__ == "__main__":
    main()
