"""Where a decode step's 8da4w GEMVs lose to a plain read: the kernel over one long layer, over a step's
worth of dia-1.6b's decoder layers (the calls the static engine makes, q, k and v joined) in 2 MB pages
and in torch's own allocation (4 KB pages where transparent huge pages are `madvise`), and torch's sum,
taking turns round after round in one process for a fixed time.

    python -m tests.bench.gemv_layers [--seconds 180]

These VMs' memory runs in episodes (a sum reading 40-50 GB/s for a while, then 70-90), and the kernel
keeps up with a sum in the slow ones better than in the fast ones; so each round is filed by the sum's
rate taken at its start, and the medians are printed per kind of episode. One long layer against the
step's layers is what the calls themselves cost, Python's included: each is made through ctypes, about
8 us apart on a 2-core Zen 5, where a compiled step calls the next from C++; 2 MB against 4 KB pages
is what the TLB and the prefetcher's stops cost. 2 rows (CFG), 2 threads, random codes. Not a unit test.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from dia_bench.harness import env
from dia_bench.harness.kernels import w4a8
from dia_bench.harness.runtime import hugepages

# (out, in) of one decoder layer's 8da4w calls in the static engine: q, k and v joined; o; cross q and o;
# the MLP's gate and up; down.
SHAPES = ((3072, 2048), (2048, 2048), (2048, 2048), (2048, 2048), (16384, 2048), (2048, 8192))
LAYERS = 18
FAST_GBPS = 65.0  # a round whose sum reads faster is filed as a fast episode


def _layer(n: int, k: int, huge: bool) -> tuple:
    nbytes = n * k // 2
    codes = (hugepages.empty(nbytes, torch.uint8) if huge else torch.empty(nbytes, dtype=torch.uint8)).random_(0, 256)
    scales = (torch.rand(n // w4a8.TILE, k // 128, w4a8.TILE) * 1e-3).half()
    return n, k, codes, scales, scales.clone(), torch.empty(2, n)


def _bytes(layers: list[tuple]) -> int:
    return sum(codes.numel() + 2 * scales.nbytes for _, _, codes, scales, _, _ in layers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=180.0)
    args = parser.parse_args()
    lib = w4a8.library()
    sets = {name: [_layer(n, k, huge) for _ in range(LAYERS) for n, k in SHAPES]
            for name, huge in (("step layers, 2 MB pages", True), ("step layers, 4 KB pages", False))}
    step_bytes = _bytes(sets["step layers, 2 MB pages"])
    sets["one long layer, 2 MB pages"] = [_layer(step_bytes * 2 // 2048 // w4a8.TILE * w4a8.TILE, 2048, True)]
    inputs = {k: torch.randn(2, k) for k in {k for _, k in SHAPES}}
    probe = hugepages.empty(400 << 18, torch.float32).random_()

    def kernel(layers: list[tuple]) -> None:
        for n, k, codes, scales, lows, y in layers:
            lib.w4a8_linear(inputs[k].data_ptr(), 2, k, 128, codes.data_ptr(), scales.data_ptr(), lows.data_ptr(),
                            n, n, None, y.data_ptr())

    ways = {"sum, 2 MB pages": (lambda: probe.sum(), probe.nbytes)}
    ways |= {name: ((lambda layers=layers: kernel(layers)), _bytes(layers)) for name, layers in sets.items()}
    rounds: list[dict[str, float]] = []
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        start = time.perf_counter()
        probe.sum()
        row = {"episode": probe.nbytes / (time.perf_counter() - start) / 1e9}
        order = list(ways)
        random.shuffle(order)
        for name in order:
            run, nbytes = ways[name]
            start = time.perf_counter()
            run()
            row[name] = nbytes / (time.perf_counter() - start) / 1e9
        rounds.append(row)
    print(f"cpu: {env.cpu_info()['model']}  threads: {torch.get_num_threads()}  kernel: {w4a8.isa()}, "
          f"{w4a8.walk().describe()}  step: {len(sets['step layers, 2 MB pages'])} calls, {step_bytes / 1e6:.0f} MB")
    fast = [r for r in rounds if r["episode"] > FAST_GBPS]
    slow = [r for r in rounds if r["episode"] <= FAST_GBPS]
    for label, kept in ((f"fast episodes (sum over {FAST_GBPS:.0f} GB/s)", fast), ("slow episodes", slow)):
        print(f"{label}: {len(kept)} rounds")
        if not kept:
            continue
        read = statistics.median(r["sum, 2 MB pages"] for r in kept)
        for name in ways:
            rate = statistics.median(r[name] for r in kept)
            print(f"  {name:28s} {rate:6.1f} GB/s median, {rate / read:4.0%} of the sum")


if __name__ == "__main__":
    main()
