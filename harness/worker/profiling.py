"""One extra repeat under torch.profiler: a Chrome/Perfetto trace, the top operators and, on a GPU,
how much of the repeat's wall time the device was busy (a host-bound loop leaves it idle)."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


def profile_once(fn: Callable[[], object], device: torch.device, trace_path: Path, top: int = 10) -> dict:
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=False) as prof:
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        wall_ms = (time.perf_counter() - start) * 1000
    trace_path.parent.mkdir(parents=True, exist_ok=True)
    prof.export_chrome_trace(str(trace_path))
    sort_key = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    events = sorted(prof.key_averages(), key=lambda e: getattr(e, sort_key, 0), reverse=True)
    top_ops = [
        {
            "name": e.key,
            "calls": e.count,
            "self_cpu_ms": round(e.self_cpu_time_total / 1000, 3),
            "self_device_ms": round(getattr(e, "self_device_time_total", 0) / 1000, 3),
        }
        for e in events[:top]
    ]
    out = {"trace": str(trace_path), "sorted_by": sort_key, "top_ops": top_ops,
           "all_op_names": sorted({e.key for e in events}), "wall_ms": round(wall_ms, 3),
           "device_busy_ms": None, "device_busy_fraction": None, "device_kernels": None}
    if device.type == "cuda":
        # Where the busy time is far below the wall time, the device waited on the host, as it does
        # between the launches of an eager decode step.
        busy_us, kernels = device_busy(prof.events())
        out.update(device_busy_ms=round(busy_us / 1000, 3), device_busy_fraction=round(busy_us / 1000 / wall_ms, 4),
                   device_kernels=kernels)
    return out


# Work the device itself did. Not counted: CPU operators (their device time is that of the kernels they
# launched, counted already), GPU-side user annotations (they span kernels and the gaps between them)
# and CUDA runtime or overhead records such as "Command Buffer Full".
DEVICE_WORK = frozenset({"kernel", "gpu_memcpy", "gpu_memset"})


def is_device_work(event) -> bool:
    """A kernel, copy or memset. Profiler events name their activity from torch 2.12 on; before (torch 2.11
    on the GPU machine, where the activity check alone found nothing), device work is what ran on the
    device and is no user annotation."""
    activity = getattr(event, "activity_type", None)
    if activity is not None:
        return activity in DEVICE_WORK
    return event.device_type == torch.autograd.DeviceType.CUDA and not getattr(event, "is_user_annotation", False)


def device_busy(events) -> tuple[float, int]:
    """Microseconds in which at least one kernel, copy or memset ran (overlaps counted once), and how
    many ran, from a profile's raw events."""
    spans = sorted((e.time_range.start, e.time_range.end) for e in events if is_device_work(e))
    busy, reach = 0.0, float("-inf")
    for start, end in spans:
        if end > reach:
            busy += end - max(start, reach)
            reach = end
    return busy, len(spans)
