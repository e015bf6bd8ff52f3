"""int8 weights written once and loaded after: a checkpoint's dynamically quantized Linear layers as
safetensors, keyed by the checkpoint's digest and the versions that quantized them.

What it saves is reading the fp32 Linear weights at all: loading from here never touches them, so the
worker's peak memory stays near the int8 model's (Dia-1.6B on 2 cores: 3.6 GB instead of 8.3 GB while
transforming). It saves no time: fbgemm's packing, which every load repeats, is most of the
quantization (17 of 19 s), and writing an entry costs a first run about 25 s more (unpacking to read
the int8 values back). An entry that does not match the model, or cannot be read, is deleted and
rebuilt, never used.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from dia_bench.optimizations import _cache_entry
from dia_bench.optimizations._cache_entry import StaleEntry

FORMAT = 1


def entry_path(weights_id: str) -> Path:
    return _cache_entry.entry_path(weights_id, "int8-dynamic")


def _dynamic_linears(model: torch.nn.Module) -> list[tuple[str, torch.nn.Module]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.ao.nn.quantized.dynamic.Linear)]


def save(model: torch.nn.Module, path: Path) -> None:
    tensors: dict[str, torch.Tensor] = {}
    layers = []
    for name, m in _dynamic_linears(model):
        w, b = m._weight_bias()
        tensors[f"{name}.int8"] = w.int_repr().contiguous()
        tensors[f"{name}.scale"] = torch.tensor([w.q_scale()], dtype=torch.float64)
        tensors[f"{name}.zero_point"] = torch.tensor([w.q_zero_point()], dtype=torch.int64)
        if b is not None:
            tensors[f"{name}.bias"] = b.detach().contiguous()
        layers.append([name, m.in_features, m.out_features, b is not None])
    _cache_entry.write(tensors, layers, FORMAT, path)


def _packed(fan_in: int, fan_out: int, q: torch.Tensor, bias: torch.Tensor | None) -> torch.nn.Module:
    new = torch.ao.nn.quantized.dynamic.Linear(fan_in, fan_out, dtype=torch.qint8)
    new.set_weight_bias(q, bias)
    new.dia_bench_has_bias = bias is not None
    return new


def load_into(model: torch.nn.Module, path: Path) -> int:
    """Replace the model's fp32 Linear layers by the entry's int8 ones; the number replaced."""
    with _cache_entry.reading(path, FORMAT) as (fh, layers):
        modules = dict(model.named_modules())
        read = []
        for name, fan_in, fan_out, has_bias in layers:
            old = modules.get(name)
            if type(old) is not torch.nn.Linear or (old.in_features, old.out_features) != (fan_in, fan_out) \
                    or (old.bias is not None) != has_bias:
                raise StaleEntry(f"layer {name} does not match the model")
            q = torch._make_per_tensor_quantized_tensor(
                fh.get_tensor(f"{name}.int8"), float(fh.get_tensor(f"{name}.scale")),
                int(fh.get_tensor(f"{name}.zero_point")))
            read.append((name, fan_in, fan_out, q, fh.get_tensor(f"{name}.bias") if has_bias else None))
        # fbgemm packs a layer on one core, and packing is most of a load (17 of 19 s on dia-1.6b):
        # layers packed side by side on every core torch may use (1.75x on 2 cores; it frees the GIL).
        with ThreadPoolExecutor(max_workers=max(1, torch.get_num_threads())) as pool:
            built = list(pool.map(lambda layer: (layer[0], _packed(*layer[1:])), read))
    if len(built) != sum(type(m) is torch.nn.Linear for m in model.modules()):
        raise StaleEntry("the model has Linear layers the entry lacks")
    for name, new in built:
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return len(built)
