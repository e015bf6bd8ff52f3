"""A Linear whose weight oneDNN has reordered once into its own blocked layout (what inductor's
freezing does for a CPU Linear), run by `mkldnn::_linear_pointwise`."""

from __future__ import annotations

import torch
from torch import nn


class OneDnnLinear(nn.Module):
    # The packed weight is an opaque mkldnn tensor, kept out of the parameters and buffers on purpose:
    # state_dict, clone and the roofline's generic count do not work on that layout.
    def __init__(self, linear: nn.Linear, packed: torch.Tensor) -> None:
        """`packed`: `reorder(linear, rows_hint)`, made apart so that layers reorder side by side."""
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.dtype = linear.weight.dtype
        self.packed = packed
        self.bias = None if linear.bias is None else linear.bias.detach().clone()

    @staticmethod
    def reorder(linear: nn.Linear, rows_hint: int) -> torch.Tensor:
        """The weight in oneDNN's layout; rows_hint is the batch oneDNN picks its blocking for: a decode
        step's rows."""
        return torch.ops.mkldnn._reorder_linear_weight(linear.weight.detach(), rows_hint)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(x.to(self.dtype), self.packed, self.bias, "none", [], "")

    def dia_bench_weight_bytes(self) -> int:
        per = torch.empty(0, dtype=self.dtype).element_size()
        return (self.in_features * self.out_features + (self.out_features if self.bias is not None else 0)) * per

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, dtype={self.dtype}"
