"""The static engine's attention for one query a row on the CPU: `decode_attention.c`, built at first
use (harness/kernels/builder.py), behind the operator `dia_bench::decode_attention` so that a compiled step
traces it; the operator is C++ (decode_attention_op.cpp) where it builds (ops.py says why). Where the kernel
cannot be built, the engine says so in its record and uses torch's matmuls."""

from __future__ import annotations

import ctypes
from functools import cache
from pathlib import Path

import torch

from dia_bench.harness.kernels.builder import KernelUnavailable, build
from dia_bench.harness.kernels.ops import bind_cpu, define_operator

SOURCE = Path(__file__).with_name("decode_attention.c")
OPERATOR_SOURCE = Path(__file__).with_name("decode_attention_op.cpp")
KV_DTYPES = (torch.float32, torch.bfloat16)  # the cache's; queries and the output are fp32


@cache
def library(march: str = "native") -> ctypes.CDLL:
    lib = build(SOURCE, "decode attention", march)
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.decode_attention.argtypes = [ptr, ptr, i64, i64, ptr, i64, i64, ptr, i64, ptr, i64, i64, i64, i64, i64,
                                     ctypes.c_float, i64]
    return lib


@cache
def _bound() -> tuple[ctypes.CDLL | None, str]:
    global _BOUND
    bound = bind_cpu("decode_attention", OPERATOR_SOURCE, _run, library().decode_attention)
    _BOUND = True
    return bound


def operator() -> str:
    """Binds the operator's CPU implementation to this machine's kernel, once a process (ops.bind_cpu), and
    says which runs: the C++ operator or the Python one. Raises KernelUnavailable where the kernel cannot be
    built."""
    return _bound()[1]


def native_operator() -> ctypes.CDLL | None:
    """The C++ operator's library, bound (its `decode_attention_set_kernel` takes a kernel's entry point), or
    None where the operator runs in Python."""
    return _bound()[0]


_BOUND = False  # a plain flag, which a traced step reads as a constant, where operator() is a cached call


def attend(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
           scale: float) -> torch.Tensor:
    """Attention of `query` (rows, key/value heads, groups, dim) over `key` and `value` (rows, key/value heads,
    positions, dim; fp32 or bf16, positions contiguous) under the additive `mask` (rows or 1, positions),
    through the operator; the queries and mask are made contiguous fp32 first, a traced no-op where they
    are."""
    if not _BOUND:
        operator()
    return torch.ops.dia_bench.decode_attention(query.float().contiguous(), key, value, mask.float().contiguous(),
                                                scale)


@cache
def unavailable() -> str | None:
    """Why the kernel cannot run here, or None; where it can, its operator is bound."""
    try:
        operator()
    except KernelUnavailable as why:
        return str(why)
    return None


def _run(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor, scale: float) -> torch.Tensor:
    rows, kv_heads, groups, dim = query.shape
    length = key.shape[2]
    for t in (key, value):
        if t.dtype not in KV_DTYPES or t.dtype != key.dtype or t.stride(3) != 1 or t.stride(2) != dim:
            raise RuntimeError("decode_attention takes fp32 or bf16 keys and values, one dtype, positions contiguous")
    if any(t.dtype != torch.float32 or not t.is_contiguous() for t in (query, mask)):
        raise RuntimeError("decode_attention takes contiguous fp32 queries and mask (attend converts them)")
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


define_operator("decode_attention", "(Tensor query, Tensor key, Tensor value, Tensor mask, float scale) -> Tensor",
                _fake)
