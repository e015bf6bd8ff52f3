"""int4 weights with int8 activations (8da4w) through dia-bench's own CPU kernel (w4a8.c).

The kernel is C built at first use by the system compiler with this machine's flags, and cached by
the source, the compiler and the processor (a VM may change CPU from one run to the next, and a library
built for one may not run on another). It runs in torch's own OpenMP runtime: the library links
libgomp, which resolves to the copy torch has already loaded, so both share one thread pool and
torch.set_num_threads applies to both. Layers call it through one custom operator, so torch.compile
traces the decode step as one graph around it.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache
from pathlib import Path

import torch
from torch import nn

from dia_bench.harness.kernels.builder import build
from dia_bench.harness.kernels.groupwise import quantize_groupwise
from dia_bench.harness.kernels.ops import define_cpu_operator

SOURCE = Path(__file__).with_name("w4a8.c")
TILE = 64  # outputs per tile: TN in the C source


@cache
def library(march: str = "native") -> ctypes.CDLL:
    """The built kernel, compiled now if this machine has not built this source before. `march` other
    than native builds the paths other processors take (haswell: AVX2; x86-64: plain C), for tests."""
    lib = build(SOURCE, "8da4w", march)
    lib.w4a8_isa.restype = ctypes.c_char_p
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.w4a8_linear.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, i64, i64, ptr, ptr]
    lib.w4a8_set_prefetch.argtypes = [ctypes.c_int]
    return lib


def isa(march: str = "native") -> str:
    """Which instructions the built kernel uses: avx512-vnni, avx2 or scalar."""
    return library(march).w4a8_isa().decode()


def prefetches(march: str = "native") -> bool:
    """Whether the kernel prefetches its weights in software: on Intel, where that measured faster, not on
    AMD, where it measured slower (the C source has the numbers); only the AVX-512 path ever does."""
    return bool(library(march).w4a8_prefetch())


def set_prefetch(on: bool, march: str = "native") -> None:
    """Override the processor's choice of prefetching for this process (a benchmark compares both)."""
    library(march).w4a8_set_prefetch(int(on))


def pack(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's layout of `weight` [out, in]: codes (uint8, two a byte), scales and lows per group."""
    n, k = weight.shape
    pad = -n % TILE
    if pad:
        weight = torch.cat([weight, weight.new_zeros(pad, k)])
    codes, scale, zero = quantize_groupwise(weight, group_size)
    low = zero - 8 * scale  # quantize_groupwise's zero is torch's (q - 8) convention; the kernel's is q * s + low
    tiles, groups = (n + pad) // TILE, k // group_size
    c = codes.to(torch.uint8).reshape(tiles, 4, 16, k // 8, 2, 4).permute(0, 3, 1, 2, 5, 4)
    packed = (c[..., 0] | (c[..., 1] << 4)).contiguous().reshape(-1)

    def per_tile(t: torch.Tensor) -> torch.Tensor:
        return t.float().reshape(tiles, TILE, groups).transpose(1, 2).contiguous()

    return packed, per_tile(scale), per_tile(low)


# This process's packed layers, by the index the operator is given: each a call of the kernel with
# everything but the rows bound, since a call's Python overhead (about 20 us unbound) adds up over
# the 130 layers of a decode step.
_CALLS: list[Callable[[int, int, int], int]] = []


def _run(x: torch.Tensor, index: int, out_features: int) -> torch.Tensor:
    k = x.shape[-1]
    rows = x.reshape(-1, k)
    if rows.dtype != torch.float32 or not rows.is_contiguous():
        rows = rows.float().contiguous()
    y = torch.empty(rows.shape[0], out_features)
    if _CALLS[index](rows.data_ptr(), rows.shape[0], y.data_ptr()):
        raise MemoryError("the 8da4w kernel could not allocate its activation buffers")
    if x.dim() != 2:
        y = y.reshape(*x.shape[:-1], out_features)
    return y if x.dtype == torch.float32 else y.to(x.dtype)


def _fake(x: torch.Tensor, index: int, out_features: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)


define_cpu_operator("w4a8_linear", "(Tensor x, int index, int out_features) -> Tensor", _run, _fake)


def _joined_away(x: int, m: int, y: int) -> int:
    raise RuntimeError("this 8da4w layer was joined into another (W4A8Linear.join): call its view instead")


class W4A8Linear(nn.Module):
    """A Linear whose weight is the kernel's int4 layout; activations quantized to int8 per row and group."""

    def __init__(self, linear: nn.Linear | None, group_size: int,
                 packed: tuple[int, int, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None
                 ) -> None:
        super().__init__()
        if packed is None:
            assert linear is not None
            codes, scales, lows = pack(linear.weight.detach(), group_size)
            bias = None if linear.bias is None else linear.bias.detach().float().contiguous()
            packed = (linear.in_features, linear.out_features, codes, scales, lows, bias)
        self.in_features, self.out_features, codes, scales, lows, bias = packed
        self.group_size = group_size
        self.register_buffer("codes", codes)
        self.register_buffer("scales", scales)
        self.register_buffer("lows", lows)
        self.register_buffer("bias", bias)
        self.index = len(_CALLS)
        k, n_pad = self.in_features, scales.shape[0] * TILE
        self.kernel_args = (k, group_size, codes.data_ptr(), scales.data_ptr(), lows.data_ptr(), n_pad,
                            self.out_features, None if bias is None else bias.data_ptr())
        bound, call, keep = self.kernel_args, library().w4a8_linear, (codes, scales, lows, bias)

        def run(x: int, m: int, y: int, keep=keep) -> int:  # keep: the pointers stay valid while it lives
            return call(x, m, *bound, y)

        _CALLS.append(run)

    def _apply(self, fn, recurse=True):
        # The kernel reads this process's table, which holds the buffers as they were packed: a
        # dtype or device cast would leave the table pointing at the old tensors, so refuse it.
        before = [b.data_ptr() for b in (self.codes, self.scales, self.lows)]
        out = super()._apply(fn, recurse)
        if [b.data_ptr() for b in (self.codes, self.scales, self.lows)] != before:
            raise RuntimeError("a packed 8da4w layer cannot be cast or moved: quantize after the cast")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.dia_bench.w4a8_linear.default(x, self.index, self.out_features)

    @classmethod
    def join(cls, parts: list[W4A8Linear]) -> tuple[W4A8Linear, list[W4A8Linear]]:
        """One layer computing `parts`' outputs side by side, and the parts again as views into its
        buffers (so the weights are held once). Exact: each output's arithmetic is its tile's alone, and
        the activations are quantized the same way once instead of once a part. Raises ValueError where
        the parts cannot be joined (other inputs or groups, a part's outputs not whole tiles, some with
        a bias and some without)."""
        first = parts[0]
        if any(p.in_features != first.in_features or p.group_size != first.group_size for p in parts):
            raise ValueError("parts of other input sizes or group sizes")
        if any(p.out_features % TILE for p in parts):
            raise ValueError(f"a part's outputs are not a multiple of {TILE}")
        if len({p.bias is None for p in parts}) > 1:
            raise ValueError("some parts have a bias and some not")
        biases = None if first.bias is None else torch.cat([p.bias for p in parts])
        joined = cls(None, first.group_size, (first.in_features, sum(p.out_features for p in parts),
                                              torch.cat([p.codes for p in parts]), torch.cat([p.scales for p in parts]),
                                              torch.cat([p.lows for p in parts]), biases))
        views, code_at, tile_at = [], 0, 0
        for p in parts:
            codes, tiles = p.codes.numel(), p.scales.shape[0]
            outs = slice(tile_at * TILE, tile_at * TILE + p.out_features)
            views.append(cls(None, p.group_size, (
                p.in_features, p.out_features, joined.codes[code_at:code_at + codes],
                joined.scales[tile_at:tile_at + tiles], joined.lows[tile_at:tile_at + tiles],
                None if biases is None else joined.bias[outs])))
            code_at, tile_at = code_at + codes, tile_at + tiles
        for p in parts:  # their own copies of the weights go with them: the views replace them
            _CALLS[p.index] = _joined_away
        return joined, views

    def dia_bench_weight_bytes(self) -> int:
        """What one forward reads: half a byte a weight (padding included), the scales and lows, the bias."""
        total = sum(b.numel() * b.element_size() for b in (self.codes, self.scales, self.lows))
        return total + (self.bias.numel() * 4 if self.bias is not None else 0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"
