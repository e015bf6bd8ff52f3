"""dia-bench's own operators (namespace `dia_bench`), for the kernels its plugins call from a decode step.

A plain `torch.library.Library` registration with a CPU kernel and a fake one (the shapes `compile`
traces with), rather than `torch.library.custom_op`: custom_op's Python wrapping cost about 12 us more
a call (14.4 against 2.4 us, measured on an identity operator), and a decode step calls these 130-144
times.

The operators in front of dia-bench's C kernels go one step further: their CPU implementation is C++
(`bind_cpu`), built at first use against torch's stable ABI, so that a call from a compiled step never
enters Python. On a 2-core Zen 5, for a layer small enough that the kernel's work does not count (2 x 256
-> 128, best of 5 x 20,000 calls): the kernel alone through ctypes 3.1 us, the C++ operator 4.5-5.3 us,
the Python implementation 8.5 us (12.9 us as it was before it left the conversions to the traced
caller); a decode step makes 146 such calls.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from pathlib import Path

import torch

_LIBRARY = torch.library.Library("dia_bench", "FRAGMENT")

# The first torch where a C++ operator's refusal (STD_TORCH_CHECK) reaches Python as a RuntimeError. On
# torch 2.11 it ends the process (SIGSEGV) instead; dia-bench's own calls never give these operators what
# they refuse, and a sweep's worker that dies is recorded as failed.
REFUSALS_REACH_PYTHON_SINCE = "2.13"


def define_cpu_operator(name: str, schema: str, kernel: Callable[..., torch.Tensor],
                        fake: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Registers `dia_bench::name(schema)` with `kernel` on CPU and `fake` for tracing; returns the operator."""
    define_operator(name, schema, fake)
    _LIBRARY.impl(name, kernel, "CPU")
    return getattr(torch.ops.dia_bench, name)


def define_operator(name: str, schema: str, fake: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Registers `dia_bench::name(schema)` with `fake` for tracing and no CPU implementation yet (`bind_cpu`
    gives it one); returns the operator."""
    _LIBRARY.define(f"{name}{schema}")
    torch.library.register_fake(f"dia_bench::{name}", lib=_LIBRARY)(fake)
    return getattr(torch.ops.dia_bench, name)


def bind_cpu(name: str, source: Path, fallback: Callable[..., torch.Tensor],
             kernel: Callable[..., int]) -> tuple[ctypes.CDLL | None, str]:
    """Gives `dia_bench::name` its CPU implementation, once a process: the C++ one in `source` (which
    registers itself when loaded, and is handed the C `kernel` through its `<name>_set_kernel`) where it
    builds here, else `fallback` in Python, which computes the same. Returns the loaded C++ library (None
    for the fallback) and a phrase for the record saying which runs."""
    from dia_bench.harness.kernels.builder import KernelUnavailable, build_operator

    try:
        path = build_operator(source, name)
        torch.ops.load_library(str(path))  # an OSError where this torch cannot load what was built
    except (KernelUnavailable, OSError) as why:
        _LIBRARY.impl(name, fallback, "CPU")
        return None, f"Python operator ({why})"
    native = ctypes.CDLL(str(path))
    hand = getattr(native, f"{name}_set_kernel")
    hand.argtypes = [ctypes.c_void_p]
    hand(ctypes.cast(kernel, ctypes.c_void_p))
    return native, "C++ operator"
