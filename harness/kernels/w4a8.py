"""int4 weights with int8 activations (8da4w) through dia-bench's own CPU kernel (w4a8.c).

The kernel is C built at first use by the system compiler with this machine's flags, and cached by
the source, the compiler and the processor (a VM may change CPU from one run to the next, and a library
built for one may not run on another). It runs in torch's own OpenMP runtime: the library links
libgomp, which resolves to the copy torch has already loaded, so both share one thread pool and
torch.set_num_threads applies to both. Layers call it through one custom operator, so torch.compile
traces the decode step as one graph around it; the operator is C++ (w4a8_op.cpp) where it builds, so
that a call never enters Python (ops.py).
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dia_bench.harness.kernels.builder import build, compiler, library_path
from dia_bench.harness.kernels.groupwise import quantize_groupwise
from dia_bench.harness.kernels.ops import bind_cpu, define_operator
from dia_bench.harness.kernels.tuning import Calibration, Walk, load_or_calibrate

SOURCE = Path(__file__).with_name("w4a8.c")
OPERATOR_SOURCE = Path(__file__).with_name("w4a8_op.cpp")
TILE = 64  # outputs per tile: TN in the C source


@cache
def library(march: str = "native") -> ctypes.CDLL:
    """The built kernel, compiled now if this machine has not built this source before, with its walk
    over the weights tuned for this processor (`tuning`). `march` other than native builds the paths
    other processors take (haswell: AVX2; x86-64: plain C), for tests; those keep the untuned walk."""
    lib = declare(build(SOURCE, "8da4w", march))
    if march == "native":
        chosen = load_or_calibrate(library_path(SOURCE, compiler(), march), lambda: calibrate(lib))
        lib.w4a8_set_tuning(*chosen.walk.args)
        _CHOSEN[march] = chosen
    return lib


_CHOSEN: dict[str, Calibration] = {}


def declare(lib: ctypes.CDLL) -> ctypes.CDLL:
    """`lib` with the C signatures of the kernel's entry points declared (a build of any w4a8.c)."""
    lib.w4a8_isa.restype = ctypes.c_char_p
    i64, ptr = ctypes.c_int64, ctypes.c_void_p
    lib.w4a8_linear.argtypes = [ptr, i64, i64, i64, ptr, ptr, ptr, i64, i64, ptr, ptr]
    lib.w4a8_set_tuning.argtypes = [ctypes.c_int] * 5
    lib.w4a8_tuning.argtypes = [ptr]
    return lib


def isa(march: str = "native") -> str:
    """Which instructions the built kernel uses: avx512-vnni, avx2 or scalar."""
    return library(march).w4a8_isa().decode()


def walk(march: str = "native") -> Walk:
    """The walk in effect now (the plain C path reads no prefetch)."""
    out = (ctypes.c_int * 5)()
    library(march).w4a8_tuning(out)
    return Walk(*out)


def set_walk(w: Walk, march: str = "native") -> None:
    """Another walk for this process (a benchmark compares them; the output bits do not change)."""
    library(march).w4a8_set_tuning(*w.args)


def prefetches(march: str = "native") -> bool:
    """Whether the kernel prefetches its weights in software now: the plain C path never does."""
    return walk(march).prefetches


def set_prefetch(on: bool, march: str = "native") -> None:
    """The walk in effect with software prefetch on (2 KB into L1, 8 KB into L2) or off."""
    w = walk(march)
    set_walk(Walk(2048 if on else 0, 8192 if on else 0, w.streams, w.split, 0), march)


def tuning(march: str = "native") -> dict[str, Any]:
    """What the calibration chose for this processor and what it measured, for the record."""
    library(march)
    chosen = _CHOSEN.get(march)
    return chosen.as_record() if chosen is not None else {"walk": walk(march).describe(), "calibrated": False}


# Candidates the calibration times: prefetch distances (none; L2 only; 2/8 KB and 4/16 KB into L1/L2; 1 and
# 2 KB non-temporally) by streams by the threads' split. A decode step's weights never fit a cache, so each
# is timed over more weights than any L3 holds here. Prefetch into L2 beside the non-temporal one made a
# compiled step 8-10% slower on a 2-core Zen 5 (16 or 32 KB ahead; step_ab --compare walk --by-step): what
# fills the caches with weights read once evicts what the step reads again.
PREFETCH = ((0, 0, 0), (0, 8192, 0), (2048, 8192, 0), (4096, 16384, 0), (0, 0, 1024), (0, 0, 2048))
STREAMS = (1, 2, 4)
SPLITS = (0, 1)
# The (out, in) of the 8da4w layers one Dia decoder layer calls in a step, in its order: q, k and v
# joined, the self-attention's output, the cross-attention's query and output, the MLP's gate and up
# joined, its down. Layers of other sizes ranked the walks otherwise than the step did: the step's
# short layers never reach the rate of long runs, and the walk that suits them differs.
DECODER_LAYER_SHAPES = ((3072, 2048), (2048, 2048), (2048, 2048), (2048, 2048), (16384, 2048), (2048, 8192))
CALIBRATION_BYTES = 192 << 20
# At least this many rounds and seconds: the bandwidth of these machines moves in episodes of seconds,
# and a choice made within one episode can be the wrong one for the next.
CALIBRATION_ROUNDS = 20
CALIBRATION_SECONDS = 2.0


def candidate_walks(kernel_isa: str) -> list[Walk]:
    """The walks the calibration times for a build of `kernel_isa` (plain C never prefetches: no distances
    to choose there)."""
    walks = [Walk(near, far, streams, split, nta) for near, far, nta in PREFETCH for streams in STREAMS
             for split in SPLITS]
    return [w for w in walks if not w.prefetches] if kernel_isa == "scalar" else walks


def calibrate(lib: ctypes.CDLL | None = None) -> Calibration:
    """Time each candidate walk over decoder layers in a step's order (random codes: the speed does not
    depend on the values) with 2 rows, the candidates taking turns in a new order each round; which wins
    is Calibration.from_times's rule (the simplest of the walks tied with the fastest, round by round)."""
    import random
    import time

    lib = lib or library()
    layers, total = [], 0
    while total < CALIBRATION_BYTES:
        for n, k in DECODER_LAYER_SHAPES:
            codes = torch.randint(0, 256, (n * k // 2,), dtype=torch.uint8)
            scales = (torch.rand(n // TILE, k // 128, TILE) * 1e-3).half()
            layers.append((n, k, codes, scales, torch.zeros_like(scales), torch.empty(2, n)))
            total += codes.numel() + 2 * scales.nbytes
    x = {k: torch.randn(2, k) for _, k in DECODER_LAYER_SHAPES}
    candidates = candidate_walks(lib.w4a8_isa().decode())
    times: dict[Walk, list[float]] = {c: [] for c in candidates}
    order = list(candidates)
    rng = random.Random(0)
    rounds, began = -1, time.perf_counter()  # round -1 warms up and is not kept
    while rounds < CALIBRATION_ROUNDS or time.perf_counter() - began < CALIBRATION_SECONDS:
        rng.shuffle(order)
        for c in order:
            lib.w4a8_set_tuning(*c.args)
            start = time.perf_counter()
            for n, k, codes, scales, lows, y in layers:
                lib.w4a8_linear(x[k].data_ptr(), 2, k, 128, codes.data_ptr(), scales.data_ptr(), lows.data_ptr(),
                                n, n, None, y.data_ptr())
            if rounds >= 0:
                times[c].append(time.perf_counter() - start)
        rounds += 1
    return Calibration.from_times(times, total, torch.get_num_threads())


def pack(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's layout of `weight` [out, in]: codes (uint8, two a byte), scales and lows per group (fp16)."""
    n, k = weight.shape
    pad = -n % TILE
    if pad:
        weight = torch.cat([weight, weight.new_zeros(pad, k)])
    codes, scale, zero = quantize_groupwise(weight, group_size)
    low = zero - 8 * scale  # quantize_groupwise's zero is torch's (q - 8) convention; the kernel's is q * s + low
    tiles, groups = (n + pad) // TILE, k // group_size
    c = codes.to(torch.uint8).reshape(tiles, 4, 16, k // 8, 2, 4).permute(0, 3, 1, 2, 5, 4)
    packed = (c[..., 0] | (c[..., 1] << 4)).contiguous().reshape(-1)

    def per_tile(t: torch.Tensor) -> torch.Tensor:  # fp16: w4a8.c says why
        return t.float().reshape(tiles, TILE, groups).transpose(1, 2).contiguous().half()

    return packed, per_tile(scale), per_tile(low)


# This process's packed layers, by the index the operator is given: each the kernel's arguments but the
# rows, and the tensors they point into (kept alive here). The C++ operator holds the same table.
_LAYERS: list[tuple[tuple[Any, ...], tuple[torch.Tensor | None, ...]] | None] = []
SET_LAYER_ARGS = [ctypes.c_int64] * 3 + [ctypes.c_void_p] * 3 + [ctypes.c_int64] * 2 + [ctypes.c_void_p]


def bind_layer(index: int, args: tuple[Any, ...] | None, keep: tuple[torch.Tensor | None, ...] = ()) -> None:
    """Layer `index` of the operator as the kernel's arguments (`W4A8Linear.kernel_args`), or None to
    withdraw it; `keep` holds the tensors they point into."""
    while len(_LAYERS) <= index:
        _LAYERS.append(None)
    _LAYERS[index] = None if args is None else (args, keep)
    native, _ = operator()
    if native is not None:
        native.w4a8_op_set_layer(index, *(args if args is not None else (0, 0, None, None, None, 0, 0, None)))


def _run(x: torch.Tensor, index: int, out_features: int) -> torch.Tensor:
    """The operator in Python, where its C++ implementation cannot be built: the same call of the kernel."""
    bound = _LAYERS[index] if index < len(_LAYERS) else None
    if bound is None:
        raise RuntimeError(f"no packed 8da4w layer {index} (a layer joined into another is called through its view)")
    args = bound[0]
    if x.dtype != torch.float32 or not x.is_contiguous() or x.shape[-1] != args[0] or out_features != args[6]:
        raise RuntimeError("w4a8_linear takes contiguous fp32 rows of the layer's inputs")
    y = x.new_empty(*x.shape[:-1], out_features)
    if library().w4a8_linear(x.data_ptr(), x.numel() // args[0], *args, y.data_ptr()):
        raise MemoryError("the 8da4w kernel could not allocate its activation buffers")
    return y


def _fake(x: torch.Tensor, index: int, out_features: int) -> torch.Tensor:
    return x.new_empty(*x.shape[:-1], out_features)


define_operator("w4a8_linear", "(Tensor x, int index, int out_features) -> Tensor", _fake)


@cache
def operator() -> tuple[ctypes.CDLL | None, str]:
    """The operator's CPU implementation, bound at the kernel's first use in a process (ops.bind_cpu): the C++
    library, or None where it runs in Python, and which of the two for the record."""
    native, how = bind_cpu("w4a8_linear", OPERATOR_SOURCE, _run, library().w4a8_linear)
    if native is not None:
        native.w4a8_op_set_layer.argtypes = SET_LAYER_ARGS
    return native, how


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
        self.index = len(_LAYERS)
        k, n_pad = self.in_features, scales.shape[0] * TILE
        self.kernel_args = (k, group_size, codes.data_ptr(), scales.data_ptr(), lows.data_ptr(), n_pad,
                            self.out_features, None if bias is None else bias.data_ptr())
        library()  # built (and calibrated) before the first layer is bound
        bind_layer(self.index, self.kernel_args, (codes, scales, lows, bias))

    def _apply(self, fn, recurse=True):
        # The kernel reads this process's table, which holds the buffers as they were packed: a
        # dtype or device cast would leave the table pointing at the old tensors, so refuse it.
        before = [b.data_ptr() for b in (self.codes, self.scales, self.lows)]
        out = super()._apply(fn, recurse)
        if [b.data_ptr() for b in (self.codes, self.scales, self.lows)] != before:
            raise RuntimeError("a packed 8da4w layer cannot be cast or moved: quantize after the cast")
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The operator takes contiguous fp32 rows: a conversion here is part of the traced step, and none
        # when the activations are already so.
        y = torch.ops.dia_bench.w4a8_linear.default(x.float().contiguous(), self.index, self.out_features)
        return y.to(x.dtype)

    @classmethod
    def join(cls, parts: list[W4A8Linear], place: Callable[[torch.Tensor], torch.Tensor] = lambda t: t
             ) -> tuple[W4A8Linear, list[W4A8Linear]]:
        """One layer computing `parts`' outputs side by side, and the parts again as views into its
        buffers (so the weights are held once). Exact: each output's arithmetic is its tile's alone, and
        the activations are quantized the same way once instead of once a part. `place` puts the joined
        codes where they should live (the engine's caller passes huge pages, as the parts had). Raises
        ValueError where the parts cannot be joined (other inputs or groups, a part's outputs not whole
        tiles, some with a bias and some without)."""
        first = parts[0]
        if any(p.in_features != first.in_features or p.group_size != first.group_size for p in parts):
            raise ValueError("parts of other input sizes or group sizes")
        if any(p.out_features % TILE for p in parts):
            raise ValueError(f"a part's outputs are not a multiple of {TILE}")
        if len({p.bias is None for p in parts}) > 1:
            raise ValueError("some parts have a bias and some not")
        biases = None if first.bias is None else torch.cat([p.bias for p in parts])
        joined = cls(None, first.group_size, (first.in_features, sum(p.out_features for p in parts),
                                              place(torch.cat([p.codes for p in parts])),
                                              torch.cat([p.scales for p in parts]),
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
            bind_layer(p.index, None)
        return joined, views

    def dia_bench_weight_bytes(self) -> int:
        """What one forward reads: half a byte a weight (padding included), the scales and lows, the bias."""
        total = sum(b.numel() * b.element_size() for b in (self.codes, self.scales, self.lows))
        return total + (self.bias.numel() * 4 if self.bias is not None else 0)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, group_size={self.group_size}"
