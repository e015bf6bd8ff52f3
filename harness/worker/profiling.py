"""One extra repeat under torch.profiler: a Chrome/Perfetto trace and the top operators."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile


def profile_once(fn: Callable[[], object], device: torch.device, trace_path: Path, top: int = 10) -> dict:
    activities = [ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with profile(activities=activities, record_shapes=False) as prof:
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
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
    return {"trace": str(trace_path), "sorted_by": sort_key, "top_ops": top_ops,
            "all_op_names": sorted({e.key for e in events})}
