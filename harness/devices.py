"""Device names (`cpu`, `cuda`, `cuda:N`) and GPU models, checked against what this machine has.

Shared: the driver checks a local sweep's cells before running them, and on a Ray cluster each node's
worker checks its own cell, since only the node knows what it has.
"""

from __future__ import annotations

import re

from dia_bench.harness.errors import UsageError

_DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")
# A GPU model as a suite names it: Ray's accelerator types (H100, A100, A10G, L4, ...).
GPU_MODEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


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


def gpu_model_matches(model: str, gpu_name: str) -> bool:
    """Whether a GPU called `gpu_name` (as CUDA names it: "NVIDIA H100 80GB HBM3") is a `model` ("H100").

    Whole words only, so an L4 is not an L40S.
    """
    return re.search(rf"(?<![A-Z0-9]){re.escape(model.upper())}(?![A-Z0-9])", gpu_name.upper()) is not None


def gpu_model_mismatch(device: str, model: str | None) -> str | None:
    """Why `device` here is not the GPU model a suite asks for, else None (also when none is asked)."""
    if not model or not device.startswith("cuda"):
        return None
    import torch

    index = int(device.split(":")[1]) if ":" in device else 0
    name = torch.cuda.get_device_name(index)
    if gpu_model_matches(model, name):
        return None
    return f"the suite asks for a {model} GPU; {device} here is {name}"
