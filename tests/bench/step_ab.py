"""One compiled int4=8da4w decode step two ways, taking turns in one process: the 8da4w kernel's walk as
calibrated on this processor and the untuned walk, or another (`--compare walk [--other-walk
NEAR,FAR,STREAMS,SPLIT,NTA]`, tuning.Walk's fields), its software prefetch on and off
(`--compare prefetch`), its weights in 4 KB and in 2 MB pages (`--compare pages`), the kernels'
operators in C++ and in Python (`--compare operator`), the kernel built from this checkout's w4a8.c
and from another (`--compare source --other OLD.c`, e.g. `git show REV:harness/kernels/w4a8.c > OLD.c`;
each with the walk calibrated for its own build), or the attention kernel built from this checkout's
decode_attention.c and from another (`--compare attention --other OLD.c`), or the step compiled with
inductor's default options and with others (`--compare inductor --options '{"cpp_wrapper": True}'`).

    python -m tests.bench.step_ab --compare walk|prefetch|pages|operator|source|attention|inductor
                                  [--other OLD.c [--same-walk]] [--other-walk W] [--options DICT]
                                  [--rounds 6] [--seconds 2] [--by-step]

These VMs' memory bandwidth jumps (a Zen 4 read 35 and 67 GB/s seconds apart), so two runs of
`dia-bench run` compare episodes rather than settings: here each round runs both, in alternating order,
with a bandwidth probe before and after each request. Prints each request's step p50, the probes and the
step's weight reads as a share of the slower probe's rate, and the median over rounds. The bandwidth can
also jump within a request: `--by-step` runs the two ways in turns step by step within each request
instead (all but `operator` switch between steps), so that both meet the same episodes, and prints per
request the median step of each and their ratio. dia-1.6b
synthetic, `int4=8da4w-128 engine=static compile kv-cache=bf16 codec-dtype`, the medium text. Not a
unit test.
"""

from __future__ import annotations

import argparse
import ast
import ctypes
import gc
import itertools
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from dia_bench.harness import env
from dia_bench.harness.cell import Cell
from dia_bench.harness.driver.suite import load_texts
from dia_bench.harness.kernels import w4a8
from dia_bench.harness.kernels.builder import build, compiler, library_path
from dia_bench.harness.kernels.tuning import Walk, load_or_calibrate
from dia_bench.harness.runtime import hugepages
from dia_bench.harness.runtime.pipeline import StepClock
from dia_bench.harness.worker.measure import load_pipeline, sampling_of
from dia_bench.harness.worker.roofline import bandwidth_probe, decode_step_weight_bytes
from dia_bench.optimizations.registry import apply_plan, resolve

PLUGINS = ["int4=8da4w-128", "engine=static", "compile", "kv-cache=bf16", "codec-dtype"]


def _page_switch() -> dict[str, Callable[[], None]]:
    """Each live 8da4w layer bound to copies of its buffers in torch's own allocation (4 KB pages where
    transparent huge pages are `madvise` and torch is not told to ask) or in 2 MB pages (where int4=8da4w
    places its codes itself)."""
    layers = [o for o in gc.get_objects() if isinstance(o, w4a8.W4A8Linear) and w4a8._LAYERS[o.index] is not None]

    def twins(copy: Callable[[torch.Tensor], torch.Tensor]) -> dict:
        table = {}
        for m in layers:
            copies = [None if t is None else copy(t) for t in (m.codes, m.scales, m.lows, m.bias)]
            twin = w4a8.W4A8Linear(None, m.group_size, (m.in_features, m.out_features, *copies))
            table[m.index] = w4a8._LAYERS[twin.index]  # the binding keeps its buffers alive
        return table

    small = twins(lambda t: torch.empty_like(t).copy_(t))
    huge = twins(lambda t: hugepages.empty(t.numel(), t.dtype).view(t.shape).copy_(t))

    def use(table: dict) -> Callable[[], None]:
        return lambda: [w4a8.bind_layer(i, *bound) for i, bound in table.items()]

    return {"4 KB pages": use(small), "2 MB pages": use(huge)}


def _operator_switch() -> dict[str, Callable[[], None]]:
    """The kernels' operators as bound (C++ where it builds) or overridden by their Python implementations.
    torch warns once that a kernel is overridden; taking the override away restores the C++ one."""
    from dia_bench.harness.kernels import decode_attention

    print(f"operators: w4a8_linear {w4a8.operator()[1]}, decode_attention {decode_attention.operator()}")
    held: list[torch.library.Library] = []

    def python() -> None:
        if not held:
            held.append(torch.library.Library("dia_bench", "IMPL"))
            held[0].impl("w4a8_linear", w4a8._run, "CPU")
            held[0].impl("decode_attention", decode_attention._run, "CPU")

    def native() -> None:
        while held:
            held.pop()._destroy()

    return {"C++": native, "Python": python}


def _source_switch(other: Path, same_walk: bool) -> dict[str, Callable[[], None]]:
    """The C++ operator calling this checkout's kernel or one built from `other`, each with its own walk, or
    with `same_walk` both with this checkout's (the best few walks differ by a few percent in a step, and
    two calibrations may choose two of them)."""
    native, how = w4a8.operator()
    if native is None:
        raise SystemExit(f"the operator runs in Python here ({how}): only the C++ one can switch kernels")
    lib = w4a8.declare(build(other, "8da4w (other source)"))
    w4a8.library()  # this checkout's walk is set before the other library is calibrated
    other_walk = w4a8.walk() if same_walk else \
        load_or_calibrate(library_path(other, compiler(), "native"), lambda: w4a8.calibrate(lib)).walk
    lib.w4a8_set_tuning(*other_walk.args)
    print(f"walks: this checkout {w4a8.walk().describe()}; {other.name} {other_walk.describe()}")

    def use(kernel: ctypes.CDLL) -> Callable[[], None]:
        return lambda: native.w4a8_linear_set_kernel(ctypes.cast(kernel.w4a8_linear, ctypes.c_void_p))

    return {"this checkout": use(w4a8.library()), other.name: use(lib)}


def _attention_switch(other: Path) -> dict[str, Callable[[], None]]:
    """The C++ attention operator calling this checkout's kernel or one built from `other`."""
    from dia_bench.harness.kernels import decode_attention

    native = decode_attention.native_operator()
    if native is None:
        raise SystemExit(f"the attention operator runs in Python here ({decode_attention.operator()}): only the "
                         "C++ one can switch kernels")
    lib = build(other, "decode attention (other source)")

    def use(kernel: ctypes.CDLL) -> Callable[[], None]:
        return lambda: native.decode_attention_set_kernel(ctypes.cast(kernel.decode_attention, ctypes.c_void_p))

    return {"this checkout": use(decode_attention.library()), other.name: use(lib)}


def _inductor_switch(pipe: Any, options: dict[str, Any]) -> dict[str, Callable[[], None]]:
    """The engine's step as the compile plugin compiled it, or compiled again with inductor `options` on top
    of the default mode's; the engine calls whichever `decode` it holds at each step."""
    engine = pipe.engine
    compiled = engine.decode

    def step(*args: Any, **kwargs: Any) -> Any:
        # A code object of its own: dynamo keeps compiled code per code object, and options that name the
        # same backend configuration would otherwise be handed the step compiled first.
        return engine._decode(*args, **kwargs)

    other = torch.compile(step, options={**torch._inductor.list_mode_options("default"), **options}, dynamic=False)
    return {"default": lambda: setattr(engine, "decode", compiled),
            str(options): lambda: setattr(engine, "decode", other)}


def _by_step(pipe: Any, cell: Cell, sampling: Any, ways: dict[str, Callable[[], None]], rounds: int) -> None:
    """Each request runs the two ways in turns, switching after every step (the engine hands each step's
    codes to the clock's on_row between steps); which way takes the even steps alternates by round. Step t
    attends to one position more than step t - 1, so the two ways' steps are alike but for the way."""
    names = list(ways)
    inputs = pipe.tokenize(cell.request_texts)
    ratios = []
    for r in range(rounds):
        order = names if r % 2 == 0 else names[::-1]
        turns = itertools.cycle(order[1:] + order[:1])  # after step 0 comes order[1]'s step, and so on

        clock = StepClock(on_row=lambda _row, turns=turns: ways[next(turns)]())
        ways[order[0]]()
        pipe.generate(inputs, cell.frames, sampling, cell.seed, streamer=clock)
        # stamps[t] -> stamps[t + 1] is step t, run the way order[t % 2]; step 0 (the prefill's) is left out.
        by_way: dict[str, list[float]] = {name: [] for name in names}
        for t in range(1, len(clock.stamps) - 1):
            by_way[order[t % 2]].append((clock.stamps[t + 1] - clock.stamps[t]) * 1e3)
        medians = {name: statistics.median(got) for name, got in by_way.items()}
        ratios.append(medians[names[1]] / medians[names[0]])
        print(f"round {r}: " + "  ".join(f"{name} step p50 {m:.2f} ms over {len(by_way[name])} steps"
                                         for name, m in medians.items())
              + f"  {names[1]} / {names[0]} {ratios[-1]:.3f}")
    ratios.sort()
    print(f"{names[1]} / {names[0]}, step by step: median over requests {statistics.median(ratios):.3f}, "
          f"range {ratios[0]:.3f}-{ratios[-1]:.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=("walk", "prefetch", "pages", "operator", "source", "attention",
                                                 "inductor"),
                        required=True)
    parser.add_argument("--other", type=Path, help="the other w4a8.c (--compare source) or decode_attention.c "
                        "(--compare attention)")
    parser.add_argument("--options", type=ast.literal_eval, default=None,
                        help="inductor options for --compare inductor, a Python dict")
    parser.add_argument("--other-walk", type=lambda v: Walk(*(int(x) for x in v.split(","))),
                        help="--compare walk: the calibrated walk against this one rather than the untuned, as "
                        "NEAR,FAR,STREAMS,SPLIT,NTA (e.g. 0,0,1,0,2048: 2 KB ahead non-temporally, 1 stream)")
    parser.add_argument("--same-walk", action="store_true", help="--compare source: the other kernel walks its "
                        "weights as this checkout's was calibrated to, so that only the code differs")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--by-step", action="store_true", help="the two ways in turns step by step within each "
                        "request, rather than request by request")
    args = parser.parse_args()
    if args.compare == "inductor" and not isinstance(args.options, dict):
        parser.error("--compare inductor needs --options, a dict of inductor options such as '{\"cpp_wrapper\": True}'")
    if args.by_step and args.compare == "operator":
        parser.error("--by-step cannot switch operators between steps: compare them request by request")
    if args.compare in ("source", "attention") and (args.other is None or not args.other.is_file()):
        parser.error(f"--compare {args.compare} needs --other, the kernel's source to build (e.g. from git show)")
    cell = Cell(plugins=PLUGINS, text=load_texts()["medium"], seconds=args.seconds)
    pipe, _ = load_pipeline(cell)
    apply_plan(pipe, resolve(cell.plugins, "cpu"), "cpu")
    if args.compare == "source":
        ways = _source_switch(args.other.resolve(), args.same_walk)
    elif args.compare == "attention":
        ways = _attention_switch(args.other.resolve())
    elif args.compare == "inductor":
        ways = _inductor_switch(pipe, args.options)
    elif args.compare == "pages":
        ways = _page_switch()
    elif args.compare == "operator":
        ways = _operator_switch()
    elif args.compare == "walk":
        tuned = w4a8.walk()
        print(f"calibrated walk: {tuned.describe()}; {w4a8.tuning()['candidates_gb_per_s']}")
        other = args.other_walk or Walk()
        name = "untuned" if args.other_walk is None else other.describe()
        ways = {"calibrated": lambda: w4a8.set_walk(tuned), name: lambda: w4a8.set_walk(other)}
    else:
        ways = {"prefetch": lambda: w4a8.set_prefetch(True), "no prefetch": lambda: w4a8.set_prefetch(False)}
    sampling, cpu = sampling_of(cell), torch.device("cpu")
    weight_bytes = decode_step_weight_bytes(pipe.model)
    for switch in ways.values():  # each way's first request (a compile, where the way is a step of its own)
        switch()
        pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)
    pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)  # and a warm one
    print(f"cpu: {env.cpu_info()['model']}  threads: {torch.get_num_threads()}  comparing: {', '.join(ways)}")
    if args.by_step:
        _by_step(pipe, cell, sampling, ways, args.rounds)
        return
    steps: dict[str, list[float]] = {name: [] for name in ways}
    for r in range(args.rounds):
        for name in list(ways)[::1 if r % 2 else -1]:
            ways[name]()
            before = bandwidth_probe(cpu)
            out = pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)
            after = bandwidth_probe(cpu)
            steps[name].append(statistics.median(out.times.step_latencies_s) * 1e3)
            share = weight_bytes / (steps[name][-1] / 1e3) / (min(before, after) * 1e9)
            print(f"round {r} {name:>12}: step p50 {steps[name][-1]:.2f} ms  probes {before:.1f} -> {after:.1f} GB/s"
                  f"  weights at {share:.0%} of the slower probe")
    for name, got in steps.items():
        print(f"{name:>12}: median step p50 {statistics.median(got):.2f} ms over {len(got)} requests")
    (one, first), (other, second) = steps.items()
    ratios = sorted(b / a for a, b in zip(first, second, strict=True))
    print(f"{other} / {one}, round by round: median {statistics.median(ratios):.3f}, "
          f"range {ratios[0]:.3f}-{ratios[-1]:.3f}")


if __name__ == "__main__":
    main()
