"""How close a decode step comes to the memory-bandwidth floor.

A decode step is memory bound: it reads every decoder weight once. The floor is those bytes over
the machine's measured bandwidth; the fraction achieved says how much room an optimization has.
"""

from __future__ import annotations

import contextlib
import time

import torch
from torch import nn

from harness.jsonio import read_json, write_json_atomic
from harness.paths import cache_dir


def _tensor_bytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


def _module_weight_bytes(module: nn.Module) -> int:
    """Bytes a module's own weights occupy, including packed int8 weights that are not Parameters."""
    total = sum(_tensor_bytes(p) for p in module.parameters(recurse=False))
    weight_fn = getattr(module, "weight", None)
    if callable(weight_fn) and not isinstance(weight_fn, torch.Tensor):
        # torch.ao dynamic quantized Linear keeps its int8 weight behind weight().
        try:
            w = weight_fn()
            total += w.numel() * (1 if w.is_quantized else w.element_size())
            bias = module.bias() if callable(getattr(module, "bias", None)) else None
            if bias is not None:
                total += _tensor_bytes(bias)
        except (RuntimeError, TypeError):
            pass
    return total


def decode_step_weight_bytes(model: nn.Module) -> int:
    """Weights one decode step reads: the decoder and LM head, minus what is computed once.

    The encoder runs once; cross-attention keys and values are cached after the first step; an
    embedding lookup touches nine rows, not the table.
    """
    decoder = model.model.decoder
    total = 0
    for name, module in decoder.named_modules():
        if "cross_attention.k_proj" in name or "cross_attention.v_proj" in name:
            continue
        if isinstance(module, nn.Embedding) or name.endswith("embeddings"):
            continue
        total += _module_weight_bytes(module)
    for name, module in model.named_modules():
        if not name.startswith("model.") and name:
            total += _module_weight_bytes(module)  # the logits head
    return total


def _measure(device: torch.device, size_mb: int = 512, iters: int = 10) -> float:
    """Read bandwidth in GB/s: a sum is a pure read on CPU; on GPU a copy reads and writes."""
    n = size_mb * 2**20 // 4
    x = torch.ones(n, device=device)
    if device.type == "cuda":
        y = torch.empty_like(x)
        y.copy_(x)
        torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(iters):
            y.copy_(x)
        torch.cuda.synchronize(device)
        # Read + write: both directions move bytes through the same memory.
        return 2 * iters * x.nbytes / (time.perf_counter() - t0) / 1e9
    x.sum()
    best = float("inf")
    for _ in range(iters):
        t0 = time.perf_counter()
        x.sum()
        best = min(best, time.perf_counter() - t0)
    return x.nbytes / best / 1e9


def measured_bandwidth_gbps(device: torch.device) -> dict:
    """Measured once per machine, device and thread count, then read from the cache."""
    import socket

    key = f"{socket.gethostname()}|{device}|{torch.get_num_threads()}"
    if device.type == "cuda":
        key += "|" + torch.cuda.get_device_name(device)
    path = cache_dir() / "bandwidth.json"
    try:
        cached = read_json(path)
    except (OSError, ValueError):
        cached = {}
    if key in cached:
        return {"gbps": cached[key], "cached": True}
    value = round(_measure(device), 2)
    cached[key] = value
    with contextlib.suppress(OSError):
        write_json_atomic(path, cached)
    return {"gbps": value, "cached": False}


def roofline(model: nn.Module, device: torch.device, step_seconds: float | None) -> dict:
    weight_bytes = decode_step_weight_bytes(model)
    bw = measured_bandwidth_gbps(device)
    out = {
        "weight_bytes_per_step": weight_bytes,
        "measured_bandwidth_gbps": bw["gbps"],
        "bandwidth_from_cache": bw["cached"],
        "floor_step_ms": round(weight_bytes / (bw["gbps"] * 1e9) * 1000, 4),
        "achieved_bandwidth_gbps": None,
        "fraction_of_bandwidth": None,
    }
    if step_seconds:
        achieved = weight_bytes / step_seconds / 1e9
        out["achieved_bandwidth_gbps"] = round(achieved, 3)
        out["fraction_of_bandwidth"] = round(achieved / bw["gbps"], 4)
    return out
