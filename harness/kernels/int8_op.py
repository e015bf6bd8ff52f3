"""fbgemm's dynamic int8 Linear behind one custom operator, so that torch.compile traces through it.

torch.ao's dynamic Linear hands its packed weights to the kernel as a TorchScript object, which
dynamo cannot trace: compiling engine=static's decode step with int8 layers broke the graph around
them (3 breaks, 9 graphs). Behind an operator that takes the layer's index in a table kept here, the
step is one graph. That is about correctness of what `compile` claims, not speed: on a 2-core Xeon
(dia-1.6b, 1 s) the compiled step measured 85.0 and 88.2 ms against 83.9 and 83.2 ms eager, taking
turns through the harness. The fbgemm calls are the step's cost, and compiling leaves them as they are.
The kernel and its arguments are torch.ao's own, so the arithmetic is unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from dia_bench.harness.kernels.ops import define_cpu_operator

_PACKED: list = []  # this process's packed weights, by the index the operator is given


def _run(x: torch.Tensor, index: int, out_features: int, reduce_range: bool) -> torch.Tensor:
    return torch.ops.quantized.linear_dynamic(x, _PACKED[index], reduce_range).to(x.dtype)


def _fake(x: torch.Tensor, index: int, out_features: int, reduce_range: bool) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)


int8_dynamic_linear = define_cpu_operator(
    "int8_dynamic_linear", "(Tensor x, int index, int out_features, bool reduce_range) -> Tensor", _run, _fake)


def route_through_operator(model: nn.Module) -> int:
    """Point every qint8 dynamic Linear of `model` at the operator; returns how many."""
    n = 0
    for module in model.modules():
        if isinstance(module, torch.ao.nn.quantized.dynamic.Linear) and module._packed_params.dtype == torch.qint8:
            index = len(_PACKED)
            _PACKED.append(module._packed_params._packed_params)
            # torch.ao's own choice: layers of an older format quantized without the reduced range.
            reduce_range = not (module.version is None or module.version < 4)
            module.forward = _Forward(index, module.out_features, reduce_range)
            n += 1
    return n


class _Forward:
    """A layer's forward through the operator (a class, not a closure, so that it says what it is)."""

    def __init__(self, index: int, out_features: int, reduce_range: bool) -> None:
        self.index, self.out_features, self.reduce_range = index, out_features, reduce_range

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return int8_dynamic_linear(x, self.index, self.out_features, self.reduce_range)

    def __repr__(self) -> str:
        return f"dia_bench::int8_dynamic_linear[{self.index}]"
