"""What a worker measures besides time: host memory, GPU memory and GPU energy."""

from __future__ import annotations

import contextlib
import resource
import threading
from collections.abc import Iterator
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


class RssWindow:
    """Peak resident memory over one window of the worker's life, not since the process started.

    Linux resets its high-water mark when 5 is written to /proc/self/clear_refs; elsewhere a thread
    samples the resident set every 10 ms, which can miss a spike shorter than that.
    """

    def __init__(self) -> None:
        self.method = "kernel high-water mark (VmHWM), reset at the start of each phase"
        self._sampler: threading.Thread | None = None
        self._stop = threading.Event()
        self._sampled = 0.0

    def start(self) -> None:
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")
            return
        except OSError:
            pass
        self.method = "resident set sampled every 10 ms (no resettable high-water mark here)"
        self._stop.clear()
        self._sampled = rss_mb()

        def sample() -> None:
            while not self._stop.wait(0.01):
                self._sampled = max(self._sampled, rss_mb())

        self._sampler = threading.Thread(target=sample, daemon=True)
        self._sampler.start()

    def peak_mb(self) -> float:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sampler = None
            return max(self._sampled, rss_mb())
        try:
            with open("/proc/self/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        return peak_rss_mb()


class PhaseMemory:
    """Peak host and device memory per phase of a cell (load, transform, warmup, repeats).

    Every phase is its own window: the repeats' peak is what serving needs, the load and transform
    peaks what provisioning needs (int8 loads fp32 weights, then quantizes). On CUDA the measured
    repeats also sample NVML (the whole device) and read its energy counter.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.rss = RssWindow()
        self.phases: dict[str, dict[str, float | None]] = {}
        self.nvml: NvmlSampler | None = None

    @contextlib.contextmanager
    def phase(self, name: str, sample_device: bool = False) -> Iterator[None]:
        cuda = self.device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
        if sample_device and cuda:
            try:
                self.nvml = NvmlSampler(self.device)
            except Exception:  # NVML missing: the allocator's numbers still stand
                self.nvml = None
        self.rss.start()
        with self.nvml if (sample_device and self.nvml) else contextlib.nullcontext():
            yield
        if cuda:
            torch.cuda.synchronize(self.device)
        out: dict[str, float | None] = {"peak_rss_mb": round(self.rss.peak_mb(), 1), "peak_vram_mb": None,
                                        "peak_vram_reserved_mb": None}
        if cuda:
            out["peak_vram_mb"] = round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1)
            out["peak_vram_reserved_mb"] = round(torch.cuda.max_memory_reserved(self.device) / 2**20, 1)
        if sample_device and self.nvml:
            out["nvml_peak_used_mb"] = round(self.nvml.peak_used_mb, 1)
        self.phases[name] = out

    def result(self, window: str = "repeats") -> dict[str, Any]:
        """The measured window's peaks at the top level, every phase's beside them."""
        w = self.phases.get(window, {})
        return {
            "peak_rss_mb": w.get("peak_rss_mb"), "peak_vram_mb": w.get("peak_vram_mb"),
            "peak_vram_reserved_mb": w.get("peak_vram_reserved_mb"), "nvml_peak_used_mb": w.get("nvml_peak_used_mb"),
            "memory": {"window": f"the measured {window}", "rss_method": self.rss.method, "phases": self.phases},
        }
