"""INT8 quantization of the Dia Linear layers: torch.ao dynamic (the guide's) or torchao."""

from __future__ import annotations

import warnings
from typing import Any

from dia_bench.optimizations._linear_swap import linear_kinds
from dia_bench.optimizations._util import has_module, own_remaining_tensors
from dia_bench.optimizations.base import Expectation, Plugin


def _count_linear(model) -> int:
    import torch

    return sum(type(m) is torch.nn.Linear for m in model.modules())


class Int8(Plugin):
    name = "int8"
    description = ("INT8 Linear weights: dynamic (torch.ao quantize_dynamic, CPU), torchao-weight "
                   "(weight-only) or torchao-dynamic (int8 activations too)")
    expectation = Expectation(section="CPU-Specific Optimizations / 2. INT8 Dynamic Quantization",
                              speedup=(2.0, 4.0), note="guide: 2-4x on CPU, 1.5-2x on GPU")
    values = ("dynamic", "torchao-weight", "torchao-dynamic")
    default = "dynamic"
    order = 20

    def incompatibility(self, value: str, device: str, others: dict[str, Any]) -> str | None:
        if value == "dynamic" and device.startswith("cuda"):
            return "torch.ao dynamic quantization has CPU kernels only; use int8=torchao-weight on CUDA"
        if value == "dynamic" and others.get("dtype"):
            return "quantize_dynamic quantizes fp32 Linear layers; drop the dtype plugin"
        return None

    def availability(self, value: str, device: str) -> str | None:
        if value.startswith("torchao") and not has_module("torchao"):
            return "torchao is not installed (pip install 'dia-bench[torchao]')"
        return None

    def transform(self, pipeline, value: str) -> str:
        model = pipeline.model
        before = _count_linear(model)
        if value == "dynamic":
            note = self._dynamic(pipeline, before)
            after = _count_linear(model)
            return f"{before - after} of {before} Linear layers int8 dynamic quantized ({note})"
        from torchao.quantization import (
            Int8DynamicActivationInt8WeightConfig,
            Int8WeightOnlyConfig,
            quantize_,
        )

        config = Int8WeightOnlyConfig() if value == "torchao-weight" else Int8DynamicActivationInt8WeightConfig()
        quantize_(model, config)
        return f"torchao {type(config).__name__} applied to {before} Linear layers"

    def _dynamic(self, pipeline, before: int) -> str:
        """Quantize or load, then route the layers through one traceable operator (harness/kernels/int8_op.py)."""
        from dia_bench.harness.kernels import int8_op

        note = self._quantize_or_load(pipeline)
        n = int8_op.route_through_operator(pipeline.model)
        return f"{note}; {n} layers run fbgemm through dia_bench::int8_dynamic_linear (traceable by torch.compile)"

    def _quantize_or_load(self, pipeline) -> str:
        """Quantize, or load what an earlier run quantized from the same checkpoint."""
        import torch

        from dia_bench.optimizations import _int8_cache

        model = pipeline.model
        path = _int8_cache.entry_path(pipeline.weights_id) if pipeline.weights_id else None
        self.cache_state = "off: the checkpoint's digest is unknown"
        if path is not None and path.is_file():
            try:
                _int8_cache.load_into(model, path)
                own_remaining_tensors(model)
                self.cache_state = "hit"
                return f"loaded from the int8 cache {path}"
            except _int8_cache.StaleEntry as exc:
                path.unlink(missing_ok=True)
                self.cache_state = f"rebuilt: the entry could not serve ({exc})"
        biased = {name for name, m in model.named_modules() if type(m) is torch.nn.Linear and m.bias is not None}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
        for name, m in model.named_modules():
            if isinstance(m, torch.ao.nn.quantized.dynamic.Linear):
                # The roofline counts packed bytes from shapes; unpacking to look would cost seconds.
                m.dia_bench_has_bias = name in biased
        own_remaining_tensors(model)
        if path is not None:
            _int8_cache.save(model, path)
            if self.cache_state.startswith("off"):
                self.cache_state = "miss: quantized here and written"
        return f"quantized here; {self.cache_state}" if path is not None else "quantized here"

    def report(self, pipeline, value: str) -> dict[str, Any]:
        return {"linear_kinds": linear_kinds(pipeline.model), "int8_cache": getattr(self, "cache_state", None)}


PLUGIN = Int8
