"""What a worker measures besides time: host memory, GPU memory and GPU energy."""

from __future__ import annotations

import resource
import threading
from typing import Any

import psutil
import torch


def peak_rss_mb() -> float:
    """The process's peak resident set since it started (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


class NvmlSampler:
    """Samples the device's used memory from NVML while the measured work runs.

    The allocator's peak misses memory outside it (cuBLAS workspaces, CUDA graphs, the context);
    NVML sees the whole device, which is what a user has to provision.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.02):
        import pynvml

        self._nvml = pynvml
        pynvml.nvmlInit()
        index = device.index if device.index is not None else torch.cuda.current_device()
        self._handle = pynvml.nvmlDeviceGetHandleByIndex(index)
        self._interval = interval_s
        self._stop = threading.Event()
        self.peak_used_mb = 0.0
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.energy_start_mj = self._energy()

    def _energy(self) -> int | None:
        try:
            return self._nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle)
        except self._nvml.NVMLError:  # not supported before Volta
            return None

    def _run(self) -> None:
        while not self._stop.is_set():
            used = self._nvml.nvmlDeviceGetMemoryInfo(self._handle).used / 2**20
            self.peak_used_mb = max(self.peak_used_mb, used)
            self._stop.wait(self._interval)

    def __enter__(self) -> NvmlSampler:
        self.energy_start_mj = self._energy()
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self.energy_end_mj = self._energy()

    def energy_joules(self) -> float | None:
        if self.energy_start_mj is None or getattr(self, "energy_end_mj", None) is None:
            return None
        return (self.energy_end_mj - self.energy_start_mj) / 1000


class MemoryTracker:
    """Host RSS always; on CUDA the allocator's peak and NVML's device view and energy."""

    def __init__(self, device: torch.device):
        self.device = device
        self.nvml: NvmlSampler | None = None
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            try:
                self.nvml = NvmlSampler(device)
            except Exception:  # NVML missing: allocator numbers still stand
                self.nvml = None

    def __enter__(self) -> MemoryTracker:
        if self.nvml:
            self.nvml.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.nvml:
            self.nvml.__exit__(*exc)

    def result(self) -> dict[str, Any]:
        out: dict[str, Any] = {"peak_rss_mb": round(peak_rss_mb(), 1), "peak_vram_mb": None,
                               "nvml_peak_used_mb": None}
        if self.device.type == "cuda":
            out["peak_vram_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            out["peak_vram_reserved_mb"] = round(torch.cuda.max_memory_reserved(self.device) / 2**20, 1)
            if self.nvml:
                out["nvml_peak_used_mb"] = round(self.nvml.peak_used_mb, 1)
        return out
