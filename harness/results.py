"""Results as a pandas DataFrame: every cell of one or many run directories, with statistics."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from harness import rundir, stats

# Cells are compared against the baseline measured under the same conditions.
BASELINE_KEYS = ("run", "preset", "device", "seconds", "batch", "text_label")


def _row(run: Path, meta: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    cell = rec.get("cell", {})
    env = rec.get("env") or {}
    fid = rec.get("fidelity") or {}
    steps = (rec.get("stages") or {}).get("step_latency_ms") or {}
    machine = meta.get("machine") or {}
    return {
        "run": str(run),
        "suite": (meta.get("suite") or {}).get("name"),
        "key": rec.get("key") or rec.get("cell_id"),
        "cell_id": rec.get("cell_id"),
        "role": rec.get("role", "cell"),
        "description": rec.get("description"),
        "status": rec.get("status"),
        "reason": rec.get("reason"),
        "preset": rec.get("preset"),
        "device": rec.get("device"),
        "device_name": env.get("device_name") or (machine.get("cpu") or {}).get("model"),
        "hostname": env.get("hostname") or machine.get("hostname"),
        "plugins": "+".join(rec.get("plugins") or []) or "baseline",
        "text_label": cell.get("label"),
        "seconds": cell.get("seconds"),
        "batch": rec.get("batch"),
        "frames": rec.get("frames"),
        "rtf": rec.get("rtf"),
        "xrt": rec.get("xrt"),
        "rtf_end_to_end": rec.get("rtf_end_to_end"),
        "generation_seconds": rec.get("generation_seconds"),
        "repeats_seconds": rec.get("repeats_seconds") or [],
        "audio_seconds": rec.get("audio_seconds"),
        "warmup_seconds": sum(rec.get("warmup_seconds") or []) or None,
        "load_seconds": rec.get("load_seconds"),
        "worker_wall_seconds": rec.get("worker_wall_seconds"),
        "peak_rss_mb": rec.get("peak_rss_mb"),
        "peak_vram_mb": rec.get("peak_vram_mb"),
        "step_p50_ms": steps.get("p50"),
        "step_p90_ms": steps.get("p90"),
        "step_p99_ms": steps.get("p99"),
        "encoder_prefill_s": (rec.get("stages") or {}).get("encoder_prefill_s"),
        "decode_s": (rec.get("stages") or {}).get("decode_s"),
        "codec_decode_s": (rec.get("stages") or {}).get("codec_decode_s"),
        "fraction_of_bandwidth": (rec.get("roofline") or {}).get("fraction_of_bandwidth"),
        "top1_agreement": fid.get("top1_agreement"),
        "cosine": fid.get("cosine"),
        "audio_snr_db": fid.get("audio_snr_db"),
        "weights_source": (rec.get("weights") or {}).get("source"),
        "torch": (env.get("software") or {}).get("torch"),
        "git_commit": (env.get("software") or {}).get("git_commit"),
    }


def load(run_dirs: str | Path | Iterable[str | Path], with_stats: bool = True) -> pd.DataFrame:
    """All cells of one or many runs; with statistics: RTF CI and speedup against the baseline."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    rows = []
    for d in run_dirs:
        path = Path(d)
        meta = rundir.read_meta(path)
        rows.extend(_row(path, meta, rec) for rec in rundir.records(path))
    df = pd.DataFrame(rows)
    if with_stats and not df.empty:
        df = add_statistics(df)
    return df


def rtf_samples(row: pd.Series) -> list[float]:
    audio = row["audio_seconds"]
    return [t / audio for t in row["repeats_seconds"]] if audio else []


def add_statistics(df: pd.DataFrame) -> pd.DataFrame:
    df = df.copy()
    cis = [stats.bootstrap_ci(rtf_samples(r)) if r["status"] == "ok" else None for _, r in df.iterrows()]
    df["rtf_ci_low"] = [c[0] if c else None for c in cis]
    df["rtf_ci_high"] = [c[1] if c else None for c in cis]
    df["rtf_iqr"] = [stats.iqr(rtf_samples(r)) if r["status"] == "ok" else None for _, r in df.iterrows()]
    for col in ("speedup", "speedup_low", "speedup_high"):
        df[col] = None
    df["significant"] = None
    ok = df[df["status"] == "ok"]
    for _, group in ok.groupby(list(BASELINE_KEYS), dropna=False):
        base = group[group["role"] == "baseline-start"]
        if base.empty:
            continue
        base_samples = rtf_samples(base.iloc[0])
        for idx, row in group.iterrows():
            r = stats.ratio_ci(base_samples, rtf_samples(row))
            df.loc[idx, ["speedup", "speedup_low", "speedup_high", "significant"]] = (
                r["speedup"], r["low"], r["high"], r["significant"])
    return df


def baseline_drift(df: pd.DataFrame) -> pd.DataFrame:
    """Start against end baseline of each device: a machine that changed speed mid-run shows here."""
    ok = df[(df["status"] == "ok") & df["role"].isin(["baseline-start", "baseline-end"])]
    rows = []
    for keys, group in ok.groupby(list(BASELINE_KEYS), dropna=False):
        start, end = group[group["role"] == "baseline-start"], group[group["role"] == "baseline-end"]
        if start.empty or end.empty:
            continue
        r = stats.ratio_ci(rtf_samples(end.iloc[0]), rtf_samples(start.iloc[0]))
        rows.append({**dict(zip(BASELINE_KEYS, keys, strict=True)), "start_rtf": start.iloc[0]["rtf"],
                     "end_rtf": end.iloc[0]["rtf"], "drift_pct": (r["speedup"] - 1) * 100 if r["speedup"] else None,
                     "significant": r["significant"]})
    return pd.DataFrame(rows)
