"""Writes a run in pytest-benchmark's JSON format, so its `compare` and CI benchmark actions read it."""

from __future__ import annotations

import datetime as dt
import statistics
from pathlib import Path
from typing import Any

import numpy as np

from harness import rundir

PYTEST_BENCHMARK_VERSION = "5.1.0"


def _stats(data: list[float]) -> dict[str, Any]:
    arr = np.asarray(data, dtype=float)
    q1, median, q3 = (float(x) for x in np.percentile(arr, [25, 50, 75]))
    iqr = q3 - q1
    mean = float(arr.mean())
    stddev = float(statistics.stdev(data)) if len(data) > 1 else 0.0
    lo_fence, hi_fence = q1 - 1.5 * iqr, q3 + 1.5 * iqr
    return {
        "min": float(arr.min()), "max": float(arr.max()), "mean": mean, "stddev": stddev,
        "rounds": len(data), "median": median, "iqr": iqr, "q1": q1, "q3": q3,
        "iqr_outliers": int(((arr < lo_fence) | (arr > hi_fence)).sum()),
        "stddev_outliers": int((abs(arr - mean) > stddev).sum()) if stddev else 0,
        "outliers": f"{int((abs(arr - mean) > stddev).sum()) if stddev else 0};"
                    f"{int(((arr < lo_fence) | (arr > hi_fence)).sum())}",
        "ld15iqr": float(arr[arr >= lo_fence].min()), "hd15iqr": float(arr[arr <= hi_fence].max()),
        "ops": 1 / mean if mean else 0.0, "total": float(arr.sum()), "data": list(map(float, data)),
        "iterations": 1,
    }


def to_pytest_benchmark(run_dir: Path) -> dict[str, Any]:
    meta = rundir.read_meta(run_dir)
    machine = meta.get("machine") or {}
    cpu = machine.get("cpu") or {}
    software = machine.get("software") or {}
    benchmarks = []
    for rec in rundir.records(run_dir):
        if rec.get("status") != "ok" or not rec.get("repeats_seconds"):
            continue
        name = rec.get("description") or rec["cell_id"]
        benchmarks.append({
            "group": f"{rec['preset']}/{rec['device']}",
            "name": name,
            "fullname": f"dia-bench::{meta.get('suite', {}).get('name')}::{name}",
            "params": {"plugins": rec.get("plugins"), "seconds": rec["cell"]["seconds"], "batch": rec["batch"]},
            "param": "+".join(rec.get("plugins") or []) or "baseline",
            "extra_info": {"rtf": rec["rtf"], "xrt": rec["xrt"], "audio_seconds": rec["audio_seconds"],
                           "peak_rss_mb": rec.get("peak_rss_mb"), "peak_vram_mb": rec.get("peak_vram_mb"),
                           "cell_id": rec["cell_id"], "role": rec.get("role")},
            "options": {"disable_gc": False, "timer": "perf_counter", "min_rounds": rec["cell"]["repeats"],
                        "max_time": None, "min_time": None, "warmup": rec["cell"]["warmup"] > 0},
            "stats": _stats(rec["repeats_seconds"]),
        })
    commit = software.get("git_commit") or ""
    return {
        "machine_info": {
            "node": machine.get("hostname"), "processor": cpu.get("arch"), "machine": cpu.get("arch"),
            "python_compiler": "", "python_implementation": "CPython",
            "python_version": software.get("python"), "release": "", "system": "Linux",
            "cpu": {"brand_raw": cpu.get("model"), "count": cpu.get("logical_cores")},
        },
        "commit_info": {"id": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty"),
                        "project": "dia-bench"},
        "benchmarks": benchmarks,
        "datetime": meta.get("finished_at") or dt.datetime.now(dt.timezone.utc).isoformat(),
        "version": PYTEST_BENCHMARK_VERSION,
    }
