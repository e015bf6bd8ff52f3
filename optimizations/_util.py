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


def half_precision(others: dict[str, Any]) -> bool:
    return others.get("dtype") in ("bf16", "fp16") or others.get("autocast") in ("bf16", "fp16")
