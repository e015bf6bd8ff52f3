"""engine=static's decode step through dia-bench's own Triton kernels instead of cuBLAS and cuDNN."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin


class Kernels(Plugin):
    name = "kernels"
    description = ("With engine=static on CUDA: the step's Linear layers as Triton GEMVs for few rows (RMSNorm, "
                   "gated SiLU and residual folded in, blocks tuned per shape) and one-query attention in Triton")
    expectation = Expectation(section="(not in the guide: harness/worker/triton_linear.py, triton_attention.py)",
                              note="cuBLAS's kernels for 2 rows read weights at a third of the bus's rate")
    devices = frozenset({"cuda"})
    values = ("triton",)
    default = "triton"
    conflicts = frozenset({"int8", "int4", "ipex", "autocast"})
    requires = frozenset({"engine=static"})  # the kernels run inside dia-bench's decode step
    order = 87  # after engine (85) builds the loop, before compile (90) compiles its step

    def availability(self, value: str, device: str) -> str | None:
        from dia_bench.harness.worker.triton_linear import unavailable

        return unavailable(device)

    def incompatibility(self, value: str, device: str, others: dict[str, Any]) -> str | None:
        if others.get("dtype") not in ("bf16", "fp16"):
            return "the kernels multiply bf16 or fp16 weights: add dtype=bf16"
        return None

    def transform(self, pipeline, value: str) -> str:
        return pipeline.engine.use_kernels(value)

    def report(self, pipeline, value: str) -> dict[str, Any]:
        engine = pipeline.engine
        return {"kernels": engine.kernels, "linear_tuning": engine.tuning}


PLUGIN = Kernels
