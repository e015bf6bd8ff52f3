"""Writes a run in pytest-benchmark's JSON format, so its `compare` and CI benchmark actions read it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

from dia_bench.harness import rundir

PYTEST_BENCHMARK_VERSION = "5.1.0"


def _stats(data: list[float]) -> dict[str, Any]:
    """pytest-benchmark's own statistics, so its `compare` reads exactly what it would have computed."""
    from pytest_benchmark.stats import Stats

    stats = Stats()
    for value in data:
        stats.update(float(value))
    return {**stats.as_dict(), "data": [float(v) for v in data], "iterations": 1}


def _machine_info(meta: dict[str, Any]) -> dict[str, Any]:
    """pytest-benchmark's machine info as the sweep recorded it on the machine that measured; runs
    from before that was recorded get the same fields from dia-bench's own."""
    if meta.get("pytest_benchmark_machine_info"):
        return meta["pytest_benchmark_machine_info"]
    machine = meta.get("machine") or {}
    cpu, software = machine.get("cpu") or {}, machine.get("software") or {}
    return {"node": machine.get("hostname"), "processor": cpu.get("arch"), "machine": cpu.get("arch"),
            "python_compiler": "", "python_implementation": "CPython", "python_version": software.get("python"),
            "release": "", "system": "Linux", "cpu": {"brand_raw": cpu.get("model"), "count": cpu.get("logical_cores")}}


def to_pytest_benchmark(run_dir: Path) -> dict[str, Any]:
    meta = rundir.read_meta(run_dir)
    software = (meta.get("machine") or {}).get("software") or {}
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
        "machine_info": _machine_info(meta),
        "commit_info": {"id": commit.removesuffix("-dirty"), "dirty": commit.endswith("-dirty"),
                        "project": "dia-bench"},
        "benchmarks": benchmarks,
        "datetime": meta.get("finished_at") or dt.datetime.now(dt.timezone.utc).isoformat(),
        "version": PYTEST_BENCHMARK_VERSION,
    }
