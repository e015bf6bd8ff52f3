"""torch's packed int4 Linear for CPU: groupwise asymmetric 4-bit weights, bf16 activations in the kernel."""

from __future__ import annotations

import torch
from torch import nn

from dia_bench.harness.kernels.groupwise import quantize_groupwise

# The CPU packing refuses an output size that is not a multiple of this; such a layer (Dia's logits
# head: 9 x 1028 outputs) is padded with zero rows and its output sliced back.
N_MULTIPLE = 16
INNER_K_TILES = 8  # the CPU kernel ignores it; torchao passes 8
# The kernel accepts fp32 activations and scales in torch 2.13, but only bf16 takes its vectorized
# path: with fp32 a 2-row decode-step GEMM ran about 100x slower than with bf16 (and 13x slower than
# plain fp32) on a Xeon with AMX. So the kernel always runs in bf16 and the output is cast back.
KERNEL_DTYPE = torch.bfloat16


class Int4Linear(nn.Module):
    """A Linear whose weight is torch's packed int4 layout; it returns the dtype it is given."""

    def __init__(self, linear: nn.Linear, group_size: int) -> None:
        super().__init__()
        self.in_features, self.out_features, self.group_size = linear.in_features, linear.out_features, group_size
        weight = linear.weight.detach()
        pad = -self.out_features % N_MULTIPLE
        if pad:
            weight = torch.cat([weight, weight.new_zeros(pad, self.in_features)])
        codes, scale, zero = quantize_groupwise(weight, group_size)
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, INNER_K_TILES))
        # (groups, out, 2): the layout the kernel reads, in the kernel's activation dtype.
        self.register_buffer("scales_and_zeros",
                             torch.stack([scale, zero], -1).transpose(0, 1).contiguous().to(KERNEL_DTYPE))
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        lead = x.shape[:-1]
        rows = x.reshape(-1, self.in_features).to(KERNEL_DTYPE)
        y = torch.ops.aten._weight_int4pack_mm_for_cpu(rows, self.packed, self.group_size, self.scales_and_zeros)
        y = y[:, : self.out_features].to(x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*lead, self.out_features)

    def dia_bench_weight_bytes(self) -> int:
        """What one forward reads: half a byte a weight, the scales and zeros, the bias."""
        total = self.packed.numel() * self.packed.element_size()
        total += self.scales_and_zeros.numel() * self.scales_and_zeros.element_size()
        return total + (self.bias.numel() * self.bias.element_size() if self.bias is not None else 0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"
