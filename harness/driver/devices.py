"""Device names: `cpu`, `cuda`, `cuda:N`; checked against what this machine has."""

from __future__ import annotations

import re

from dia_bench.harness.errors import UsageError

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str) -> str:
    """Normalize and validate; raise UsageError naming what this machine offers."""
    device = device.strip().lower()
    if not _DEVICE.match(device):
        raise UsageError(f"unknown device {device!r}: use cpu, cuda or cuda:N")
    if device == "cpu":
        return device
    import torch

    if not torch.cuda.is_available():
        raise UsageError(f"device {device!r} asked for, but this machine has no CUDA GPU "
                         f"(torch {torch.__version__}); use --device cpu")
    index = int(device.split(":")[1]) if ":" in device else 0
    if index >= torch.cuda.device_count():
        raise UsageError(f"device {device!r} does not exist: this machine has {torch.cuda.device_count()} "
                         f"GPU(s), cuda:0..cuda:{torch.cuda.device_count() - 1}")
    return device


def available_devices() -> list[str]:
    import torch

    return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]
