"""Small helpers shared by plugins."""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any


def has_module(name: str) -> bool:
    return importlib.util.find_spec(name) is not None


def cuda_capability(device: str) -> tuple[int, int] | None:
    import torch

    if not device.startswith("cuda") or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_capability(torch.device(device))


@contextlib.contextmanager
def swapped(get: Callable[[], Any], put: Callable[[Any], None], value: Any) -> Iterator[None]:
    """Set a global for the duration of a block and put the old value back."""
    old = get()
    put(value)
    try:
        yield
    finally:
        put(old)


def positive_int(plugin: str, value: str, takes: str, unit: str) -> int:
    """`value` as a whole number of at least 1, else a ValueError naming the plugin, what it takes and the `unit`."""
    try:
        n = int(value)
    except ValueError:
        raise ValueError(f"plugin {plugin!r} takes {takes} (got {value!r})") from None
    if n < 1:
        raise ValueError(f"plugin {plugin!r} needs at least 1 {unit} (got {n})")
    return n


def half_precision(others: dict[str, Any]) -> bool:
    return others.get("dtype") in ("bf16", "fp16") or others.get("autocast") in ("bf16", "fp16")


def own_remaining_tensors(model: Any) -> None:
    """Copy the parameters and buffers quantization left in place (embeddings, norms) into memory of
    their own. from_pretrained maps the safetensors file, and one tensor still on that mapping keeps
    every page of it that was read resident: without this, the fp32 weights quantization replaced
    stay in RSS and a quantized model looks as heavy as fp32."""
    import gc

    import torch

    with torch.no_grad():
        for module in model.modules():
            for param in module.parameters(recurse=False):
                param.data = param.data.clone()
            for name, buf in list(module.named_buffers(recurse=False)):
                if buf is not None:
                    module._buffers[name] = buf.clone()
    gc.collect()
