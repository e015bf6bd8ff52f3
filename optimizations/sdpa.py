"""Force one scaled-dot-product-attention backend, as the guide's check for flash attention does."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations._util import cuda_capability, half_precision
from dia_bench.optimizations.base import Expectation, Plugin

BACKENDS = {"flash": "FLASH_ATTENTION", "efficient": "EFFICIENT_ATTENTION", "math": "MATH",
            "cudnn": "CUDNN_ATTENTION"}
# torch's CPU build has kernels for these only: allowing another alone leaves SDPA no backend at all.
CPU_BACKENDS = ("flash", "math")


class Sdpa(Plugin):
    name = "sdpa"
    description = ("Allow only one SDPA backend (flash, efficient, math or cudnn; the CPU has flash and math); a "
                   "backend that cannot run these shapes fails the cell")
    expectation = Expectation(section="3. Flash Attention", speedup=(1.2, 1.5), note="long sequences")
    values = tuple(BACKENDS)
    default = "flash"

    def incompatibility(self, value: str, device: str, others: dict[str, Any]) -> str | None:
        if not device.startswith("cuda") and value not in CPU_BACKENDS:
            return f"SDPA's {value} backend runs on CUDA only; on the CPU choose sdpa={' or sdpa='.join(CPU_BACKENDS)}"
        if device.startswith("cuda") and value == "flash" and not half_precision(others):
            return "flash attention on CUDA needs fp16 or bf16 (add dtype=bf16 or autocast=bf16)"
        return None

    def availability(self, value: str, device: str) -> str | None:
        cap = cuda_capability(device)
        if cap is not None and value == "flash" and cap < (8, 0):
            return f"flash attention needs compute capability 8.0+ (this GPU is {cap[0]}.{cap[1]})"
        return None

    def transform(self, pipeline, value: str) -> str:
        impl = pipeline.model.config._attn_implementation
        if impl != "sdpa":
            pipeline.model.set_attn_implementation("sdpa")
        pipeline.sdpa_backend = value
        return f"attention through SDPA (was {impl}), only the {BACKENDS[value]} backend allowed"

    def context(self, value: str, device: str):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        return sdpa_kernel([getattr(SDPBackend, BACKENDS[value])])


PLUGIN = Sdpa
