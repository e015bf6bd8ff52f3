"""Mixed precision through torch.autocast around generation: weights stay fp32."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin


class Autocast(Plugin):
    name = "autocast"
    description = "Run matmuls in bf16 or fp16 under torch.autocast (weights stay fp32)"
    expectation = Expectation(section="2. Mixed Precision / FP16", speedup=(1.3, 2.0), note="memory-bound ops")
    values = ("bf16", "fp16")
    default = "bf16"

    def incompatibility(self, value: str, device: str, others: dict[str, Any]) -> str | None:
        if value == "fp16" and others.get("int8") == "dynamic":
            return "fp16 autocast cannot feed int8 dynamically quantized Linear layers (they take fp32 input)"
        return None

    def context(self, value: str, device: str):
        import torch

        dtype = torch.bfloat16 if value == "bf16" else torch.float16
        return torch.autocast(device_type=device.split(":")[0], dtype=dtype)

    def transform(self, pipeline, value: str) -> str:
        return f"linear layers and matmuls run in {value} inside generate and the codec"


PLUGIN = Autocast
