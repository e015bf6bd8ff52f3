"""dia-bench's own operators (namespace `dia_bench`), for the kernels its plugins call from a decode step.

A plain `torch.library.Library` registration with a CPU kernel and a fake one (the shapes `compile`
traces with), rather than `torch.library.custom_op`: custom_op's Python wrapping cost about 12 us more
a call (14.4 against 2.4 us, measured on an identity operator), and a decode step calls these 130-144
times."""

from __future__ import annotations

from collections.abc import Callable

import torch

_LIBRARY = torch.library.Library("dia_bench", "FRAGMENT")


def define_cpu_operator(name: str, schema: str, kernel: Callable[..., torch.Tensor],
                        fake: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Registers `dia_bench::name(schema)` with `kernel` on CPU and `fake` for tracing; returns the operator."""
    _LIBRARY.define(f"{name}{schema}")
    _LIBRARY.impl(name, kernel, "CPU")
    torch.library.register_fake(f"dia_bench::{name}", lib=_LIBRARY)(fake)
    return getattr(torch.ops.dia_bench, name)
