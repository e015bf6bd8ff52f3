"""oneDNN (MKL-DNN) Linear layers with weights reordered once at load time, fp32 or bf16."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations._linear_swap import linear_kinds, swap_linears
from dia_bench.optimizations._util import own_remaining_tensors
from dia_bench.optimizations.base import Expectation, Plugin

KERNEL = "mkldnn::_linear_pointwise"


class OneDnn(Plugin):
    name = "onednn"
    description = ("Linear layers through oneDNN with prepacked weights (mkldnn::_linear_pointwise), in the "
                   "weights' dtype (fp32 or bf16)")
    expectation = Expectation(section="CPU-Specific Optimizations / 4. MKL-DNN Backend",
                              note="no speedup figure in the guide; it only checks that MKL-DNN is enabled")
    devices = frozenset({"cpu"})
    conflicts = frozenset({"int8", "int4", "ipex", "autocast", "compile"})
    order = 20  # after the dtype cast: the packed weights take the weights' dtype

    def availability(self, value: None, device: str) -> str | None:
        import torch

        if not torch.backends.mkldnn.is_available():
            return (f"this torch build ({torch.__version__}) has no oneDNN: "
                    "torch.backends.mkldnn.is_available() is False")
        return None

    def incompatibility(self, value: None, device: str, others: dict[str, Any]) -> str | None:
        if others.get("dtype") == "fp16":
            return "the oneDNN Linear is packed here in fp32 or bf16 only: use dtype=bf16"
        return None

    def transform(self, pipeline, value: None) -> str:
        import torch

        from dia_bench.optimizations._onednn_linear import OneDnnLinear

        # A decode step with CFG multiplies two rows a request; oneDNN blocks the weight for that.
        rows = 2
        with torch.no_grad():
            replaced, total = swap_linears(pipeline.model,
                                           lambda _name, linear, packed: OneDnnLinear(linear, packed),
                                           prepare=lambda linear: OneDnnLinear.reorder(linear, rows))
        own_remaining_tensors(pipeline.model)
        dtype = str(next(pipeline.model.parameters()).dtype).removeprefix("torch.")
        self.layers = {"packed": replaced, "total": total, "dtype": dtype}
        return f"{replaced} of {total} Linear layers prepacked for oneDNN ({dtype}, kernel {KERNEL})"

    def report(self, pipeline, value: None) -> dict[str, Any]:
        return {"linear_kinds": linear_kinds(pipeline.model), "layers": getattr(self, "layers", None),
                "kernel": KERNEL}


PLUGIN = OneDnn
