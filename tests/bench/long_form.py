"""How closely two clocks agree on the cost of one more second of audio: a least-squares line
through the generation times of requests of three lengths, and the slope one length's decode steps
predict (`dia_bench.harness.analysis.scaling.slope_from_steps`). In one process, lengths interleaved, the median
request of each length per fit.

    python -m tests.bench.long_form [--preset dia-tiny] [--rounds 9]

Prints both slopes and their ratio, with the CPU. Not a unit test: on dia-tiny a step is 2-5 ms of
small ops and a 2-core VM moves it by tens of percent, so the ratio is a measurement of this machine
as much as of the method (the tests check the arithmetic and the fields, not the times).
"""

from __future__ import annotations

import argparse

import numpy as np

from dia_bench.harness import env
from dia_bench.harness.analysis import scaling
from dia_bench.harness.presets import FRAMES_PER_SECOND, frames_for_seconds
from dia_bench.harness.runtime.pipeline import SamplingParams
from dia_bench.harness.worker.measure import long_form

TEXT = ["[S1] Dia is an open weights text to dialogue model."]


def longest_of(args: argparse.Namespace) -> float:
    return max(args.lengths)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dia-tiny")
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--lengths", type=float, nargs="+", default=[0.25, 0.5, 1.0])
    args = parser.parse_args()

    from dia_bench.harness.cell import Cell
    from dia_bench.harness.worker.measure import load_pipeline

    pipe, weights = load_pipeline(Cell(preset=args.preset, device="cpu", seconds=longest_of(args), warmup=0, repeats=1))
    pipe.run(TEXT, 22, SamplingParams(), 0)  # the warmup
    outs: dict[float, list] = {s: [] for s in args.lengths}
    for _ in range(args.rounds):
        for s in args.lengths:
            outs[s].append(pipe.run(TEXT, frames_for_seconds(s), SamplingParams(), 0))
    audio = {s: frames_for_seconds(s) / FRAMES_PER_SECOND for s in args.lengths}
    fit = scaling._ols(np.array([audio[s] for s in args.lengths]),
                       np.array([np.median([o.times.generate_s for o in outs[s]]) for s in args.lengths]))
    longest = longest_of(args)
    lf = long_form(outs[longest], frames_for_seconds(longest), 1)
    predicted = scaling.slope_from_steps(
        lf["rtf"], 1, float(np.median(lf["step_growth_us_per_step_repeats"])), lf["steps_per_request"],
        [(audio[s], len(outs[s][0].times.step_latencies_s), 1) for s in args.lengths])
    print(f"cpu: {env.cpu_info()['model']}  weights: {weights['source']}  preset: {args.preset}")
    print(f"rounds: {args.rounds}  lengths: {args.lengths}")
    print(f"fit slope {fit['slope']:.4f} s per audio second, intercept {fit['intercept']:.4f} s")
    print(f"slope from the {longest} s requests' steps {predicted:.4f}; fit / steps = {fit['slope'] / predicted:.3f}")
    # The fixed cost of a request makes short audio read slow: each length's RTF beside the long-form one.
    for s in args.lengths:
        rtf = np.median([o.times.generate_s for o in outs[s]]) / audio[s]
        print(f"{s} s of audio: RTF {rtf:.3f} against long-form RTF {lf['rtf']:.3f} ({rtf / lf['rtf']:.2f}x)")


if __name__ == "__main__":
    main()
