"""How much of a compiled int4=8da4w decode step is its GEMVs: the step, then the same layers' 8da4w
kernel called from Python through ctypes on 2 rows (no operator, no graph; but a call's Python, about 8 us
on a 2-core Zen 5 with memory idle, is counted in the GEMVs alone: about 0.9 ms a step), taking turns in one
process round after round with a bandwidth probe before each, since these VMs' memory bandwidth moves
between runs.

    python -m tests.bench.step_gemvs [--rounds 7] [--seconds 0.25] [--eager] [--preset dia-1.6b] [--profile]

Prints per round the probe, the step p50, the GEMVs alone (median of 9 passes) with their weight bytes a
second, and what is left; then the medians over the rounds after the first. What is left is everything
the step does besides reading weights (attention, norms, sampling, the graph's own code) plus whatever
the GEMVs lose inside the step. dia-1.6b synthetic, `int4=8da4w-128 engine=static compile kv-cache=bf16`,
the short text; `--eager` leaves out `compile`, so that what is left includes eager PyTorch's own cost
a step. `--profile` then runs one more request under torch.profiler and splits its steps by what their
time went to (the 8da4w GEMVs, attention, sampling, the graph's fused kernels, dynamo's entry): the step's
graph kernels are then compiled with inductor's kernel profiling, whose records add a little to each.
Not a unit test.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dia_bench.harness import env
from dia_bench.harness.cell import Cell
from dia_bench.harness.driver.suite import load_texts
from dia_bench.harness.kernels import w4a8
from dia_bench.harness.worker.measure import load_pipeline, sampling_of
from dia_bench.harness.worker.roofline import bandwidth_probe, decode_step_modules
from dia_bench.optimizations.registry import apply_plan, resolve

PLUGINS = ["int4=8da4w-128", "engine=static", "compile", "kv-cache=bf16"]


def step_layers(pipe) -> list[torch.nn.Module]:
    """The 8da4w layers one decode step calls (the roofline's `decode_step_modules`), with q, k and v as
    the one joined layer the engine runs where it joined them."""
    joined = [j for j in (pipe.engine.qkv or []) if isinstance(j, torch.nn.Module)]
    views = set()
    if joined:
        for layer in pipe.model.model.decoder.layers:
            sa = layer.self_attention
            views |= {id(sa.q_proj), id(sa.k_proj), id(sa.v_proj)}
    return [m for m in decode_step_modules(pipe.model) if hasattr(m, "kernel_args") and id(m) not in views] + joined


# Profiler records by what part of a step they are, matched on their names in this order; the rest of the
# step is the code between them (the graph's own, or eager PyTorch's: allocations, dispatch, the calls).
SPLIT = (("8da4w GEMVs", ("dia_bench::w4a8_linear",)), ("attention", ("dia_bench::decode_attention",)),
         ("sampling", ("topk", "sort", "cumsum", "softmax", "argmax", "exponential", "randint", "random_")),
         ("dynamo's entry and guards", ("TorchDynamo Cache Lookup", "Pregraph bytecode", "AOTDispatcher")),
         ("graph's fused kernels", ("cpp_fused",)))


def profile_split(pipe, cell: Cell, sampling) -> None:
    """One request under torch.profiler: ms a step by part of the step, from the records' self times."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        out = pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)
    latencies = out.times.step_latencies_s
    steps, region = len(latencies), 0.0
    parts = {name: 0.0 for name, _ in SPLIT}
    for e in prof.key_averages():
        if e.key.startswith("Torch-Compiled Region"):
            region += e.cpu_time_total
        name = next((n for n, keys in SPLIT if any(k in e.key for k in keys)), None)
        if name is not None:
            parts[name] += e.self_cpu_time_total
    mean = sum(latencies) / steps * 1e3
    print(f"profiled request: {steps} steps, step mean {mean:.2f} ms"
          + (f", compiled region {region / steps / 1e3:.2f} ms" if region else "")
          + "; by part, ms a step (the encoder's and the prefill's calls included):")
    for name, us in parts.items():
        print(f"  {name:28} {us / steps / 1e3:6.2f}")
    print(f"  {'the rest of the step':28} {mean - sum(parts.values()) / steps / 1e3:6.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--seconds", type=float, default=0.25)
    parser.add_argument("--eager", action="store_true", help="the step without compile")
    parser.add_argument("--preset", default="dia-1.6b")
    parser.add_argument("--profile", action="store_true", help="then split one request's steps by part")
    args = parser.parse_args()
    if args.profile:
        from torch._inductor import config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True
    plugins = [p for p in PLUGINS if not (args.eager and p == "compile")]
    cell = Cell(preset=args.preset, plugins=plugins, text=load_texts()["short"], seconds=args.seconds)
    pipe, _ = load_pipeline(cell)
    apply_plan(pipe, resolve(cell.plugins, "cpu"), "cpu")
    sampling = sampling_of(cell)
    pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)  # compiles
    layers = step_layers(pipe)
    nbytes = sum(m.dia_bench_weight_bytes() for m in layers)
    call = w4a8.library().w4a8_linear
    inputs = {m.kernel_args[0]: torch.randn(2, m.kernel_args[0]) for m in layers}
    outputs = [torch.empty(2, m.kernel_args[6]) for m in layers]

    def gemvs() -> float:
        start = time.perf_counter()
        for m, y in zip(layers, outputs, strict=True):
            call(inputs[m.kernel_args[0]].data_ptr(), 2, *m.kernel_args, y.data_ptr())
        return time.perf_counter() - start

    print(f"step: {' '.join(plugins)}")
    print(f"cpu: {env.cpu_info()['model']}  kernel isa: {w4a8.isa()}  walk: {w4a8.walk().describe()}  "
          f"{len(layers)} layers, {nbytes / 1e6:.0f} MB a step")
    rounds = []
    with torch.inference_mode():
        for r in range(args.rounds):
            probe = bandwidth_probe(torch.device("cpu"))
            out = pipe.run(cell.request_texts, cell.frames, sampling, cell.seed)
            step = statistics.median(out.times.step_latencies_s)
            alone = statistics.median(gemvs() for _ in range(9))
            rounds.append((step, alone))
            print(f"round {r}: probe {probe:.1f} GB/s  step p50 {step * 1e3:.1f} ms  GEMVs alone {alone * 1e3:.1f} ms "
                  f"({nbytes / alone / 1e9:.1f} GB/s)  left {1e3 * (step - alone):.1f} ms", flush=True)
    kept = rounds[1:] or rounds
    step, alone = (statistics.median(x) for x in zip(*kept, strict=True))
    share = statistics.median(a / s for s, a in kept)
    print(f"median over {len(kept)} rounds: step {step * 1e3:.1f} ms, GEMVs alone {alone * 1e3:.1f} ms "
          f"({nbytes / alone / 1e9:.1f} GB/s), GEMVs alone / step {share:.2f}")
    if args.profile:
        profile_split(pipe, cell, sampling)


if __name__ == "__main__":
    main()
