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
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

FORMAT = 1


class StaleEntry(Exception):
    """The entry cannot serve this model: rebuild it."""


@cache
def _packing_digest() -> str:
    from dia_bench.harness.kernels import groupwise, w4a8

    source = inspect.getsource(w4a8.pack) + inspect.getsource(groupwise.quantize_groupwise) + f"TILE={w4a8.TILE}"
    return hashlib.sha256(source.encode()).hexdigest()[:12]


def entry_path(weights_id: str, group: int, dtype: str) -> Path:
    from dia_bench.harness.caches import versions_key
    from dia_bench.harness.paths import cache_dir

    digest = weights_id.removeprefix("sha256:")
    return (cache_dir() / "quantized" / versions_key()
            / f"{digest}-8da4w-{group}-{dtype}-pack-{_packing_digest()}.safetensors")


def save(packed: dict[str, tuple], path: Path) -> None:
    """`packed`: layer name -> (in_features, out_features, codes, scales, lows, bias or None)."""
    from safetensors.torch import save_file

    tensors, layers = {}, []
    for name, (fan_in, fan_out, codes, scales, lows, bias) in packed.items():
        tensors[f"{name}.codes"], tensors[f"{name}.scales"], tensors[f"{name}.lows"] = codes, scales, lows
        if bias is not None:
            tensors[f"{name}.bias"] = bias
        layers.append([name, fan_in, fan_out, bias is not None])
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    save_file(tensors, str(tmp), metadata={"format": str(FORMAT), "layers": json.dumps(layers)})
    os.replace(tmp, path)


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
    from safetensors import safe_open

    from dia_bench.harness.weights_dir import check_safetensors

    try:
        check_safetensors(path)
        with safe_open(str(path), framework="pt") as fh:
            meta = fh.metadata() or {}
            if meta.get("format") != str(FORMAT):
                raise StaleEntry(f"format {meta.get('format')!r}, this dia-bench writes {FORMAT}")
            layers = {name: (fan_in, fan_out, has_bias)
                      for name, fan_in, fan_out, has_bias in json.loads(meta["layers"])}
            if layers != expected:
                raise StaleEntry("its layers do not match the model's")
            out: dict[str, tuple[Any, ...]] = {}
            for name, (fan_in, fan_out, has_bias) in layers.items():
                codes, scales, lows = (fh.get_tensor(f"{name}.{part}") for part in ("codes", "scales", "lows"))
                _check_shapes(name, fan_in, fan_out, group, codes, scales, lows)
                out[name] = (fan_in, fan_out, codes, scales, lows, fh.get_tensor(f"{name}.bias") if has_bias else None)
            return out
    except StaleEntry:
        raise
    except Exception as exc:  # a file cut short or damaged: the safetensors reader says how
        raise StaleEntry(f"{type(exc).__name__}: {exc}") from None
