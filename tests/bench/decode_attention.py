"""dia-bench's CPU attention kernel (harness/kernels/decode_attention.c) on dia-1.6b's shapes, fp32 cache
against bf16: 18 layers' cross-attention over the text and self-attention over a short and a long cache.

    python -m tests.bench.decode_attention [--threads 2] [--text-tokens 180] [--reps 20]

Prints the median time of the 18 calls and the rate the keys and values were read at. Not a unit test:
the figures depend on the machine (each layer's keys and values are separate buffers, as in a step).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from dia_bench.harness import env
from dia_bench.harness.kernels import decode_attention

LAYERS, DIM = 18, 128


def time_layers(rows: int, kv_heads: int, groups: int, keys: int, dtype: torch.dtype, reps: int) -> tuple[float, float]:
    q = torch.randn(rows, kv_heads, groups, DIM)
    caches = [(torch.randn(rows, kv_heads, keys, DIM).to(dtype), torch.randn(rows, kv_heads, keys, DIM).to(dtype))
              for _ in range(LAYERS)]
    mask = torch.zeros(1, keys)
    times = []
    for i in range(reps + 3):
        t0 = time.perf_counter()
        for k, v in caches:
            decode_attention.attend(q, k, v, mask, DIM ** -0.5)
        if i >= 3:  # the first calls build the kernel and fault the pages in
            times.append(time.perf_counter() - t0)
    t = statistics.median(times)
    return t * 1000, LAYERS * 2 * q.shape[0] * kv_heads * keys * DIM * caches[0][0].element_size() / t / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--text-tokens", type=int, default=180, help="the medium text is about 180")
    parser.add_argument("--reps", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"cpu: {env.cpu_info()['model']}  threads: {args.threads}  (2 decoder rows: one request with CFG)")
    shapes = ((f"cross, {args.text_tokens} text tokens", (2, 16, 1, args.text_tokens)),
              ("self, 188 positions (2 s)", (2, 4, 4, 188)), ("self, 1738 positions (20 s)", (2, 4, 4, 1738)))
    for name, shape in shapes:
        for dtype in (torch.float32, torch.bfloat16):
            ms, rate = time_layers(*shape, dtype, args.reps)
            print(f"{name:30} {str(dtype).removeprefix('torch.'):9} {ms:6.2f} ms for {LAYERS} layers, {rate:5.1f} GB/s")


if __name__ == "__main__":
    main()
