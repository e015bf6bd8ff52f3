"""One compiled int4=8da4w decode step two ways, taking turns in one process: the 8da4w kernel's walk as
calibrated on this processor and the untuned walk (`--compare walk`), its software prefetch on and off
(`--compare prefetch`), or its weights in 4 KB and in 2 MB pages (`--compare pages`).

    python -m tests.bench.step_ab --compare walk|prefetch|pages [--rounds 6] [--seconds 2]

These VMs' memory bandwidth jumps (a Zen 4 read 35 and 67 GB/s seconds apart), so two runs of
`dia-bench run` compare episodes rather than settings: here each round runs both, in alternating order,
with a bandwidth probe before and after each request. Prints each request's step p50 and the probes, and
the median over rounds. dia-1.6b synthetic, `int4=8da4w-128 engine=static compile kv-cache=bf16
codec-dtype=bf16`, the medium text. Not a unit test.
"""

from __future__ import annotations

import argparse
import gc
import statistics
from collections.abc import Callable

import torch

from dia_bench.harness import env
from dia_bench.harness.cell import Cell
from dia_bench.harness.driver.suite import load_texts
from dia_bench.harness.kernels import w4a8
from dia_bench.harness.kernels.tuning import Walk
from dia_bench.harness.runtime import hugepages
from dia_bench.harness.worker.measure import load_pipeline, sampling_of
from dia_bench.harness.worker.roofline import bandwidth_probe
from dia_bench.optimizations.registry import apply_plan, resolve

PLUGINS = ["int4=8da4w-128", "engine=static", "compile", "kv-cache=bf16", "codec-dtype=bf16"]


def _page_switch() -> dict[str, Callable[[], None]]:
    """Each live 8da4w layer's kernel call bound to its own buffers (4 KB pages) or to copies in 2 MB pages."""
    layers = [o for o in gc.get_objects()
              if isinstance(o, w4a8.W4A8Linear) and w4a8._CALLS[o.index] is not w4a8._joined_away]
    small = {m.index: w4a8._CALLS[m.index] for m in layers}
    huge = {}
    for m in layers:
        copies = [None if t is None else hugepages.empty(t.numel(), t.dtype).view(t.shape).copy_(t)
                  for t in (m.codes, m.scales, m.lows, m.bias)]
        twin = w4a8.W4A8Linear(None, m.group_size, (m.in_features, m.out_features, *copies))
        huge[m.index] = w4a8._CALLS[twin.index]  # the call keeps its buffers alive

    def use(table: dict) -> Callable[[], None]:
        return lambda: w4a8._CALLS.__setitem__(slice(None), [table.get(i, f) for i, f in enumerate(w4a8._CALLS)])

    return {"4 KB pages": use(small), "2 MB pages": use(huge)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=("walk", "prefetch", "pages"), required=True)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    cell = Cell(plugins=PLUGINS, text=load_texts()["medium"], seconds=args.seconds)
    pipe, _ = load_pipeline(cell)
    apply_plan(pipe, resolve(cell.plugins, "cpu"), "cpu")
    if args.compare == "pages":
        ways = _page_switch()
    elif args.compare == "walk":
        tuned = w4a8.walk()
        print(f"calibrated walk: {tuned.describe()}; {w4a8.tuning()['candidates_gb_per_s']}")
        ways = {"calibrated": lambda: w4a8.set_walk(tuned), "untuned": lambda: w4a8.set_walk(Walk())}
    else:
        ways = {"prefetch": lambda: w4a8.set_prefetch(True), "no prefetch": lambda: w4a8.set_prefetch(False)}
    sampling, cpu = sampling_of(cell), torch.device("cpu")
    for _ in range(2):  # the compile, then a warm request
        pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)
    print(f"cpu: {env.cpu_info()['model']}  threads: {torch.get_num_threads()}  comparing: {', '.join(ways)}")
    steps: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(args.rounds):
        for name in list(ways)[::1 if r % 2 else -1]:
            ways[name]()
            before = bandwidth_probe(cpu)
            out = pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)
            after = bandwidth_probe(cpu)
            steps[name].append(statistics.median(out.times.step_latencies_s) * 1e3)
            print(f"round {r} {name:>12}: step p50 {steps[name][-1]:.2f} ms  probes {before:.1f} -> {after:.1f} GB/s")
    for name, got in steps.items():
        print(f"{name:>12}: median step p50 {statistics.median(got):.2f} ms over {len(got)} requests")


if __name__ == "__main__":
    main()
