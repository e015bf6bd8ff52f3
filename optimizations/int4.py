"""INT4 weight-only quantization of the Dia Linear layers, groupwise scales and zero points.

CPU: torch's own int4 kernels (`_convert_weight_to_int4pack_for_cpu`, `_weight_int4pack_mm_for_cpu`),
run with bf16 activations whatever the model's dtype (its only fast path; see _int4_linear).
CUDA: torchao's Int4WeightOnlyConfig where torchao is installed. The codec is never quantized.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dia_bench.optimizations._linear_swap import linear_kinds, swap_linears
from dia_bench.optimizations._util import has_module, own_remaining_tensors
from dia_bench.optimizations.base import Expectation, Plugin

GROUP_SIZES = ("32", "64", "128")
KERNEL = "aten::_weight_int4pack_mm_for_cpu"


class Int4(Plugin):
    name = "int4"
    description = ("INT4 weight-only Linear layers with groupwise scales (the value: group size): torch's int4 "
                   "CPU kernels, torchao on CUDA")
    expectation = Expectation(section="Advanced Optimizations / Quantization (INT8/INT4)",
                              note="no speedup figure in the guide: 'maximum speed with some quality tradeoff'")
    values = GROUP_SIZES
    default = "128"
    conflicts = frozenset({"int8", "ipex", "autocast"})
    order = 20  # after the dtype cast (the scales take the weights' dtype), before compile

    def availability(self, value: str, device: str) -> str | None:
        if device.startswith("cuda"):
            if not has_module("torchao"):
                return "int4 on CUDA runs through torchao, which is not installed (pip install 'dia-bench[torchao]')"
            return None
        import torch

        if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
            return f"torch {torch.__version__} has no int4 CPU kernel (_weight_int4pack_mm_for_cpu); it needs 2.6+"
        return None

    def incompatibility(self, value: str, device: str, others: dict[str, Any]) -> str | None:
        if device.startswith("cuda") and others.get("dtype") != "bf16":
            return "torchao's int4 CUDA kernel takes bf16 activations: add --opt dtype=bf16"
        if others.get("dtype") == "fp16":
            return "the int4 CPU kernel runs here with bf16 activations, not fp16: use dtype=bf16 or no dtype"
        return None

    def transform(self, pipeline, value: str) -> str:
        import torch

        from dia_bench.optimizations._int4_linear import Int4Linear

        group = int(value)
        if pipeline.device.type == "cuda":
            return self._torchao(pipeline, group)
        skipped: Counter[str] = Counter()

        def make(name: str, linear: torch.nn.Linear) -> Int4Linear | None:
            if linear.in_features % group:
                skipped[f"in_features {linear.in_features} not a multiple of {group}"] += 1
                return None
            return Int4Linear(linear, group)

        with torch.no_grad():
            replaced, total = swap_linears(pipeline.model, make)
        own_remaining_tensors(pipeline.model)
        self.layers = {"quantized": replaced, "total": total, "left_in_float": dict(skipped)}
        note = f"{replaced} of {total} Linear layers int4 (group size {group}, kernel {KERNEL}, bf16 activations)"
        if skipped:
            note += "; left in float: " + ", ".join(f"{n} ({why})" for why, n in skipped.items())
        return note

    def _torchao(self, pipeline, group: int) -> str:
        from torch import nn
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        total = sum(type(m) is nn.Linear for m in pipeline.model.modules())
        quantize_(pipeline.model, Int4WeightOnlyConfig(group_size=group),
                  filter_fn=lambda m, _name: type(m) is nn.Linear and m.in_features % group == 0)
        self.layers = {"total": total}
        return f"torchao Int4WeightOnlyConfig(group_size={group}) applied to the Linear layers of {total}"

    def report(self, pipeline, value: str) -> dict[str, Any]:
        return {"linear_kinds": linear_kinds(pipeline.model), "layers": getattr(self, "layers", None),
                "kernel": "torchao int4" if pipeline.device.type == "cuda" else KERNEL,
                "kernel_activations": "bfloat16"}


PLUGIN = Int4
