"""8da4w weights packed once and read after: a checkpoint's Linear layers in dia-bench's int4 kernel
layout (codes, scales, lows, bias) as safetensors, keyed by the checkpoint's digest, the group size, the
weights' dtype and the code that packs them.

Packing is a pass over every fp32 weight in torch ops (dia-1.6b: about 15 s of a worker's start on 2
cores, in every process that runs the plugin); reading the packed layers back is a copy of a tenth of
that memory. The key holds a digest of the packing code itself, so a change to the layout can never
read an entry written by the old one. An entry that does not match the model, or cannot be read, is
deleted and rebuilt, never used.
"""

from __future__ import annotations

import hashlib
import inspect
from functools import cache
from pathlib import Path
from typing import Any

from dia_bench.optimizations import _cache_entry
from dia_bench.optimizations._cache_entry import StaleEntry

FORMAT = 1


@cache
def _packing_digest() -> str:
    from dia_bench.harness.kernels import groupwise, w4a8

    source = inspect.getsource(w4a8.pack) + inspect.getsource(groupwise.quantize_groupwise) + f"TILE={w4a8.TILE}"
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def entry_path(weights_id: str, group: int, dtype: str) -> Path:
    return _cache_entry.entry_path(weights_id, f"8da4w-{group}-{dtype}-pack-{_packing_digest()}")


def save(packed: dict[str, tuple], path: Path) -> None:
    """`packed`: layer name -> (in_features, out_features, codes, scales, lows, bias or None)."""
    tensors, layers = {}, []
    for name, (fan_in, fan_out, codes, scales, lows, bias) in packed.items():
        tensors[f"{name}.codes"], tensors[f"{name}.scales"], tensors[f"{name}.lows"] = codes, scales, lows
        if bias is not None:
            tensors[f"{name}.bias"] = bias
        layers.append([name, fan_in, fan_out, bias is not None])
    _cache_entry.write(tensors, layers, FORMAT, path)


def _check_shapes(name: str, fan_in: int, fan_out: int, group: int, codes, scales, lows) -> None:
    # The kernel walks the buffers by pointer, so a buffer of the wrong size would be read past its end.
    import torch

    from dia_bench.harness.kernels.w4a8 import TILE

    tiles = -(-fan_out // TILE)
    if (codes.dtype != torch.uint8 or codes.shape != (tiles * TILE * fan_in // 2,)
            or any(t.dtype != torch.float16 or t.shape != (tiles, fan_in // group, TILE) for t in (scales, lows))):
        raise StaleEntry(f"layer {name}'s packed buffers are not the layout of a {fan_out}x{fan_in} layer")


def load(path: Path, expected: dict[str, tuple[int, int, bool]], group: int) -> dict[str, tuple]:
    """The entry's packed layers, each checked against `expected` (name -> in, out, has bias); the
    entry must hold exactly those layers."""
    with _cache_entry.reading(path, FORMAT) as (fh, entries):
        layers = {name: (fan_in, fan_out, has_bias) for name, fan_in, fan_out, has_bias in entries}
        if layers != expected:
            raise StaleEntry("its layers do not match the model's")
        out: dict[str, tuple[Any, ...]] = {}
        for name, (fan_in, fan_out, has_bias) in layers.items():
            codes, scales, lows = (fh.get_tensor(f"{name}.{part}") for part in ("codes", "scales", "lows"))
            _check_shapes(name, fan_in, fan_out, group, codes, scales, lows)
            out[name] = (fan_in, fan_out, codes, scales, lows, fh.get_tensor(f"{name}.bias") if has_bias else None)
        return out
