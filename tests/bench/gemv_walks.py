"""Where the 8da4w kernel loses against a plain read: the kernel, mock walks that rebuild its inner loop a
part at a time (gemv_walks.c), and torch's fp32 sum, over the same bytes in 2 MB pages, taking turns in one
process. AVX-512 VNNI machines only.

    python -m tests.bench.gemv_walks [--megabytes 600] [--rounds 15]

Prints each one's read rate over the codes' bytes (the kernel and mode 2 also read scales: fp16 ones,
6.25% more, and fp32 ones, 12.5% more). Run it more than once: these VMs' bandwidth moves in episodes,
and the kernel falls behind a plain read only in the fast ones. Not a unit test.
"""

from __future__ import annotations

import argparse
import ctypes
import random
import statistics
import time
from pathlib import Path

import torch

from dia_bench.harness import env
from dia_bench.harness.kernels import w4a8
from dia_bench.harness.kernels.builder import build
from dia_bench.harness.runtime import hugepages


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megabytes", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    if w4a8.isa() != "avx512-vnni":
        raise SystemExit(f"the mock walks are AVX-512 VNNI code; this CPU's kernel path is {w4a8.isa()}")
    mock = build(Path(__file__).with_name("gemv_walks.c"), "mock walk")
    mock.walk.restype = ctypes.c_int64
    mock.walk.argtypes = [ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
    n = args.megabytes << 20
    codes = hugepages.empty(n, torch.uint8).random_(0, 256)
    scales = hugepages.empty(n // 4096 * 128).fill_(1e-3)
    xq = torch.randint(-127, 128, (2 * 2048,), dtype=torch.int8)
    k, outputs = 2048, n * 2 // 2048  # the kernel sees the codes as one layer of 2048 inputs
    kernel_scales = torch.full((outputs // w4a8.TILE * (k // 128) * w4a8.TILE,), 1e-3).half()
    kernel_lows = torch.zeros_like(kernel_scales)
    x, y, lib, far = torch.randn(2, k), torch.empty(2, outputs), w4a8.library(), w4a8.walk().far
    flat = codes.view(torch.float32)
    ways = {
        "sum fp32": lambda: flat.sum(),
        "kernel": lambda: lib.w4a8_linear(x.data_ptr(), 2, k, 128, codes.data_ptr(), kernel_scales.data_ptr(),
                                          kernel_lows.data_ptr(), outputs, outputs, None, y.data_ptr()),
    }
    for mode, what in enumerate(("loads + products", "+ broadcasts", "+ group epilogue")):
        ways[f"mode {mode} ({what})"] = (lambda m=mode: mock.walk(codes.data_ptr(), n, scales.data_ptr(),
                                                                   xq.data_ptr(), m, far))
    times: dict[str, list[float]] = {name: [] for name in ways}
    order = list(ways)
    for round_ in range(args.rounds + 1):  # the first round warms up
        random.shuffle(order)
        for name in order:
            start = time.perf_counter()
            ways[name]()
            if round_:
                times[name].append(time.perf_counter() - start)
    print(f"cpu: {env.cpu_info()['model']}  threads: {torch.get_num_threads()}  kernel walk: {w4a8.walk().describe()}")
    for name, got in sorted(times.items(), key=lambda kv: statistics.median(kv[1])):
        median, best = n / statistics.median(got) / 1e9, n / min(got) / 1e9
        print(f"{name:28s} {median:5.1f} GB/s of codes median, {best:5.1f} best")


if __name__ == "__main__":
    main()
