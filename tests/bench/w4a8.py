"""The decode step's Linear layers alone, per kernel: int4=8da4w's (dia-bench's C kernel), fbgemm's
dynamic int8 (int8=dynamic) and torch's int4 (int4=128), on dia-1.6b's decoder shapes and 2 rows (CFG),
the kernels taking turns in one process so that the machine's wandering bandwidth hits all alike.

    python -m tests.bench.w4a8 [--layers 18] [--rounds 5]

Prints per kernel the best and median time of one step's GEMVs and the weight bytes per second.
"8da4w direct" calls the same 8da4w layers' kernel through ctypes with no operator or module around
it: the difference to "8da4w" is what the Python around a call costs. "other prefetch" is the same with
software prefetching switched the other way from this processor's default (w4a8.c says why).
Random weights (the kernels' speed does not depend on the values). Not a unit test.
"""

from __future__ import annotations

import argparse
import statistics
import time
import warnings

import torch

from dia_bench.harness import env
from dia_bench.harness.kernels import w4a8
from dia_bench.optimizations._int4_linear import Int4Linear

# (out, in) of one decoder layer's Linear layers: self q, k, v, o; cross q, o; MLP gate-up, down.
SHAPES = [(2048, 2048), (512, 2048), (512, 2048), (2048, 2048), (2048, 2048), (2048, 2048), (16384, 2048),
          (2048, 8192)]


def _layers(kind: str, count: int) -> tuple[list[tuple[torch.nn.Module, int]], int]:
    layers, nbytes = [], 0
    for _ in range(count):
        for out, inp in SHAPES:
            linear = torch.nn.Linear(inp, out, bias=False)
            torch.nn.init.normal_(linear.weight, std=0.02)
            if kind == "8da4w":
                layer = w4a8.W4A8Linear(linear, 128)
                nbytes += layer.dia_bench_weight_bytes()
            elif kind == "int4 (torch)":
                layer = Int4Linear(linear, 128)
                nbytes += layer.dia_bench_weight_bytes()
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    layer = torch.ao.quantization.quantize_dynamic(torch.nn.Sequential(linear), {torch.nn.Linear},
                                                                   dtype=torch.qint8)
                nbytes += out * inp
            layers.append((layer, inp))
    return layers, nbytes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=18, help="decoder layers (18 in dia-1.6b)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    kinds = {kind: _layers(kind, args.layers) for kind in ("8da4w", "int8 (fbgemm)", "int4 (torch)")}
    inputs = {inp: torch.randn(2, 1, inp) for _, inp in SHAPES}
    outputs = {id(layer): torch.empty(2, layer.out_features) for layer, _ in kinds["8da4w"][0]}
    call = w4a8.library().w4a8_linear

    default_prefetch = w4a8.prefetches()

    def direct(prefetch: bool) -> None:
        w4a8.set_prefetch(prefetch)
        for layer, inp in kinds["8da4w"][0]:
            call(inputs[inp].data_ptr(), 2, *layer.kernel_args, outputs[id(layer)].data_ptr())
        w4a8.set_prefetch(default_prefetch)

    runs = {kind: (lambda layers=layers: [layer(inputs[inp]) for layer, inp in layers])
            for kind, (layers, _) in kinds.items()}
    directs = {"8da4w direct": default_prefetch, "8da4w direct, other prefetch": not default_prefetch}
    for name, prefetch in directs.items():
        runs[name] = lambda prefetch=prefetch: direct(prefetch)
    sizes = {kind: nbytes for kind, (_, nbytes) in kinds.items()} | dict.fromkeys(directs, kinds["8da4w"][1])
    times: dict[str, list[float]] = {kind: [] for kind in runs}
    with torch.inference_mode():
        for _ in range(args.rounds + 1):  # the first round warms up
            for kind, run in runs.items():
                start = time.perf_counter()
                run()
                times[kind].append(time.perf_counter() - start)
    print(f"cpu: {env.cpu_info()['model']}  threads: {torch.get_num_threads()}  kernel isa: {w4a8.isa()}  "
          f"software prefetch: {default_prefetch}  layers: {args.layers} x {len(SHAPES)}")
    for kind, nbytes in sizes.items():
        best, median = min(times[kind][1:]), statistics.median(times[kind][1:])
        print(f"{kind:>28}: {nbytes / 1e6:.0f} MB  best {best * 1e3:.1f} ms  median {median * 1e3:.1f} ms  "
              f"{nbytes / best / 1e9:.1f} GB/s at best")


if __name__ == "__main__":
    main()
