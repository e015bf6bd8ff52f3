"""Groupwise asymmetric 4-bit quantization: the codes both int4 kernels start from (torch's, which packs
them its own way, and dia-bench's w4a8)."""

from __future__ import annotations

import torch


def quantize_groupwise(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit codes (0..15, int32) per group of `group_size` inputs, with the scale and the
    zero point that torch's int4 kernels dequantize with: w = (q - 8) * scale + zero."""
    n, k = weight.shape
    groups = weight.float().reshape(n, k // group_size, group_size)
    low, high = groups.amin(-1, keepdim=True), groups.amax(-1, keepdim=True)
    scale = (high - low).clamp(min=1e-6) / 15
    codes = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32).reshape(n, k)
    zero = low + 8 * scale
    return codes, scale.squeeze(-1), zero.squeeze(-1)
