"""`report --format json` and `recommend --format json`: the tables and verdicts as data, for CI and
dashboards that should not scrape HTML. Every figure keeps its interval and every choice its reason."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench import harness
from dia_bench.harness import stats
from dia_bench.harness.analysis import quality, results
from dia_bench.reports import recommend, verdicts

FORMAT = "dia-bench-answers"  # what a reader checks before trusting the keys below
FORMAT_VERSION = 1

# Per cell: what it is, its speed with intervals, its memory, and whether its quality is evidence.
CELL_COLUMNS = ("run", "suite", "key", "role", "description", "status", "reason", "machine", "device",
                "device_name", "preset", "plugins", "text_label", "seconds", "batch", "rtf", "rtf_ci_low",
                "rtf_ci_high", "rtf_ci_reason", "xrt", "long_form_rtf", "long_form_rtf_low", "long_form_rtf_high",
                "fixed_seconds", "speedup", "speedup_low", "speedup_high", "speedup_reason", "significant",
                "step_p50_ms", "peak_rss_mb", "peak_vram_mb", "fraction_of_bandwidth", "total_variation",
                "top1_agreement", "weights_source", "torch", "transformers", "git_commit")


def plain(value: Any) -> Any:
    """JSON's own types: numpy scalars unwrapped, NaN and NaT as null, timestamps as ISO text."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, pd.Timestamp):
        return None if pd.isna(value) else value.isoformat()
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is pd.NaT:
        return None
    return value


def _header(kind: str, run_dirs: list[Path], max_tv: float) -> dict[str, Any]:
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "kind": kind,
            "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "dia_bench": harness.__version__, "runs": [str(d) for d in run_dirs],
            "quality_bar": {"max_total_variation": max_tv, "recommendable": list(quality.RECOMMENDABLE),
                            "unverified": list(quality.UNVERIFIED)},
            "statistics": stats.METHOD}


def cells(df: pd.DataFrame, max_tv: float) -> list[dict[str, Any]]:
    out = []
    for _, r in df.iterrows():
        row = {c: r.get(c) for c in CELL_COLUMNS}
        if r["status"] == "ok":
            row["quality"] = quality.assess(r, max_tv)
        out.append(row)
    return out


def report(run_dirs: Iterable[Path], max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> dict[str, Any]:
    run_dirs = [Path(d) for d in run_dirs]
    df = results.load(run_dirs)
    drift = results.baseline_drift(df) if not df.empty else pd.DataFrame()
    return plain({
        **_header("report", run_dirs, max_tv),
        "unmeasured_quality": quality.unmeasured_note(df, max_tv) if not df.empty else None,
        "process_noise": results.process_notes(df) if not df.empty else [],
        "cells": cells(df, max_tv),
        "guide_speedups": verdicts.speedup_rows(df, max_tv) if not df.empty else [],
        "guide_hardware": verdicts.hardware_rows(df, max_tv) if not df.empty else [],
        "baseline_drift": [results.drift_text(d) for _, d in drift.iterrows()],
    })


def recommendations(run_dirs: Iterable[Path], max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION,
                    load_dirs: Iterable[Path] = ()) -> dict[str, Any]:
    run_dirs, load_dirs = [Path(d) for d in run_dirs], [Path(d) for d in load_dirs]
    df = results.load(run_dirs)
    return plain({**_header("recommend", run_dirs + load_dirs, max_tv),
                  "recommendations": recommend.recommendations(df, max_tv) if not df.empty else [],
                  "under_load": recommend.serving(load_dirs, df, max_tv)})


def write(document: dict[str, Any], output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=1, allow_nan=False) + "\n", encoding="utf-8")
    return output
