"""Cast the weights to half precision, as Dia's `compute_dtype` does."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin

DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class Dtype(Plugin):
    name = "dtype"
    description = "Load the Dia weights in bf16 or fp16 (the codec stays fp32)"
    expectation = Expectation(section="2. Mixed Precision / FP16", speedup=(1.3, 2.0), note="memory-bound ops")
    values = ("bf16", "fp16")
    default = "bf16"
    order = 10

    def load_dtype(self, value: str):
        import torch

        return getattr(torch, DTYPES[value])

    def transform(self, pipeline, value: str) -> str:
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in pipeline.model.parameters()})
        return f"Dia weights are {', '.join(dtypes)}"

    def report(self, pipeline, value: str) -> dict[str, Any]:
        return {"param_dtypes": sorted({str(p.dtype) for p in pipeline.model.parameters()})}


PLUGIN = Dtype
