"""The static engine's attention for one query a row on the CPU: `decode_attention.c`, built at first
use (harness/kernels/builder.py), behind the operator `dia_bench::decode_attention` so that a compiled step
traces it. Where it cannot be built, the engine says so in its record and uses torch's matmuls."""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import torch

from dia_bench.harness.kernels.builder import KernelUnavailable, build
from dia_bench.harness.kernels.ops import define_cpu_operator

SOURCE = Path(__file__).with_name("decode_attention.c")
KV_DTYPES = (torch.float32, torch.bfloat16)  # the cache's; queries and the output are fp32


@cache
def library(march: str = "native") -> ctypes.CDLL:
    lib = build(SOURCE, "decode attention", march)
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.decode_attention.argtypes = [ptr, ptr, i64, i64, ptr, i64, i64, ptr, i64, ptr, i64, i64, i64, i64, i64,
                                     ctypes.c_float, i64]
    return lib


@cache
def unavailable() -> str | None:
    """Why the kernel cannot run here, or None."""
    try:
        library()
    except KernelUnavailable as why:
        return str(why)
    return None


def _run(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    rows, kv_heads, groups, dim = query.shape
    length = key.shape[2]
    for t in (key, value):
        if t.dtype not in KV_DTYPES or t.dtype != key.dtype or t.stride(3) != 1 or t.stride(2) != dim:
            raise ValueError("decode_attention takes fp32 or bf16 keys and values, one dtype, positions contiguous")
    query, mask = query.float().contiguous(), mask.float().contiguous()
    out = query.new_empty(query.shape)
    failed = library().decode_attention(
        query.data_ptr(), key.data_ptr(), key.stride(0), key.stride(1), value.data_ptr(), value.stride(0),
        value.stride(1), mask.data_ptr(), length if mask.shape[0] > 1 else 0, out.data_ptr(), rows, kv_heads,
        groups, dim, length, scale, key.dtype == torch.bfloat16)
    if failed:
        raise MemoryError("the decode attention kernel could not allocate its scores")
    return out


def _fake(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
          scale: float) -> torch.Tensor:
    return query.new_empty(query.shape)


decode_attention = define_cpu_operator(
    "decode_attention", "(Tensor query, Tensor key, Tensor value, Tensor mask, float scale) -> Tensor", _run, _fake)
