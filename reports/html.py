"""`dia-bench report`: one self-contained HTML file from one or more run directories."""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

import harness
from harness import results, rundir
from reports import charts
from reports.expectations import load as load_expectations
from reports.verdicts import hardware_rows, speedup_rows

WEIGHT_WORDS = {
    "synthetic": "synthetic weights (seeded random at the real architecture): the timings are real, "
                 "the audio is noise, and fidelity compares noise with noise",
    "local": "real weights from a local directory",
    "hf-cache": "real weights from the local Hugging Face cache",
}
AUDIO_CLIP_SECONDS = 5.0


def _env() -> jinja2.Environment:
    return jinja2.Environment(loader=jinja2.PackageLoader("reports", "templates"),
                              autoescape=jinja2.select_autoescape(["html", "j2"], default=True),
                              undefined=jinja2.StrictUndefined)


def _n(v: Any, spec: str, suffix: str = "") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return f"{format(float(v), spec)}{suffix}"


def _rtf_text(r: pd.Series) -> str:
    return f"{_n(r['rtf'], '.3f')} [{_n(r['rtf_ci_low'], '.3f')}, {_n(r['rtf_ci_high'], '.3f')}]"


def _speedup_text(r: pd.Series) -> str:
    if r.get("speedup") is None or r["speedup"] != r["speedup"]:
        return "-"
    star = " *" if r["significant"] else ""
    return f"{_n(r['speedup'], '.2f', 'x')} [{_n(r['speedup_low'], '.2f')}, {_n(r['speedup_high'], '.2f')}]{star}"


def _fidelity_text(r: pd.Series) -> str:
    if r["top1_agreement"] is None or r["top1_agreement"] != r["top1_agreement"]:
        return "reference" if r["plugins"] == "baseline" else "-"
    snr = "identical audio" if r["audio_snr_db"] is None or r["audio_snr_db"] != r["audio_snr_db"] \
        else f"SNR {r['audio_snr_db']:.1f} dB"
    return f"top-1 {r['top1_agreement']:.3f}, cos {r['cosine']:.4f}, {snr}"


def _cells(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for _, r in df.iterrows():
        ok = r["status"] == "ok"
        out.append({
            "description": r["description"] or r["key"], "status": r["status"], "reason": r["reason"] or "",
            "rtf": _rtf_text(r) if ok else "", "xrt": _n(r["xrt"], ".3f", "x") if ok else "",
            "speedup": _speedup_text(r) if ok else "",
            "steps": f"{_n(r['step_p50_ms'], '.1f')} / {_n(r['step_p99_ms'], '.1f')}" if ok else "",
            "rss": _n(r["peak_rss_mb"], ".0f"), "vram": _n(r["peak_vram_mb"], ".0f"),
            "fidelity": _fidelity_text(r) if ok else "",
        })
    return out


def _best(df: pd.DataFrame) -> list[dict[str, Any]]:
    # The baseline's repeats only measure drift; they are not configurations to recommend.
    ok = results.ok_cells(df)
    rows = []
    for (_, device), g in ok.groupby(["device_name", "device"]):
        r = g.loc[g["rtf"].idxmin()]
        rows.append({"device_name": r["device_name"], "device": device, "description": r["description"],
                     "rtf": _rtf_text(r), "xrt": _n(r["xrt"], ".3f", "x"), "speedup": _speedup_text(r),
                     "rss": _n(r["peak_rss_mb"], ".0f"), "vram": _n(r["peak_vram_mb"], ".0f"),
                     "fidelity": _fidelity_text(r)})
    return rows


def _machines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        env = rec.get("env") or {}
        if "software" not in env:
            continue
        key = (env.get("hostname"), env.get("device_name"))
        seen.setdefault(key, {
            "hostname": env.get("hostname"), "device_name": env.get("device_name"),
            "cpu": f"{env['cpu']['model']} ({env['cpu']['physical_cores']} cores)",
            "gpus": ", ".join(f"{g['name']} (cc {g['capability']}, driver {g['driver']})" for g in env.get("gpus", []))
                    or "none",
            "torch": env["software"]["torch"], "transformers": env["software"]["transformers"],
            "commit": (env["software"].get("git_commit") or "-")[:12],
        })
    return list(seen.values())


def _audio(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Short clips, only for real weights: synthetic audio is noise and not worth the bytes."""
    import soundfile

    clips = []
    for rec in records:
        path = rec.get("audio_path")
        if rec.get("status") != "ok" or not path or (rec.get("weights") or {}).get("audio_is_noise", True):
            continue
        if not Path(path).is_file():
            continue
        data, rate = soundfile.read(path, frames=int(AUDIO_CLIP_SECONDS * 44100), dtype="float32")
        buf = io.BytesIO()
        soundfile.write(buf, data, rate, format="WAV", subtype="PCM_16")
        clips.append({"description": rec.get("description") or rec["cell_id"],
                      "uri": "data:audio/wav;base64," + base64.b64encode(buf.getvalue()).decode()})
    return clips


def build_context(run_dirs: Iterable[Path]) -> dict[str, Any]:
    run_dirs = [Path(d) for d in run_dirs]
    df = results.load(run_dirs)
    records = [rec for d in run_dirs for rec in rundir.records(d)]
    latencies = {rec.get("key") or rec["cell_id"]: rec.get("step_latencies_ms") or [] for rec in records}
    guide = speedup_rows(df) if not df.empty else []
    for g in guide:
        g["measured_text"] = ("-" if g["measured"] is None else
                              f"{g['measured']:.2f}x [{g['low']:.2f}, {g['high']:.2f}]")
    hardware = hardware_rows(df) if not df.empty else []
    for h in hardware:
        h["rtf_text"] = f"{_n(h['rtf'], '.3f')} [{_n(h['rtf_low'], '.3f')}, {_n(h['rtf_high'], '.3f')}]"
        h["xrt_text"] = _n(h["xrt"], ".3f", "x")
    sources = sorted({(rec.get("weights") or {}).get("source") for rec in records} - {None})
    drift = results.baseline_drift(df) if not df.empty else pd.DataFrame()
    return {
        "title": "dia-bench report",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": harness.__version__,
        "runs": [{"path": str(d), "suite": rundir.read_meta(d).get("suite", {}).get("name"),
                  "cells": len(rundir.records(d))} for d in run_dirs],
        "machines": _machines(records),
        "weights": [{"words": WEIGHT_WORDS.get(s, s), "noise": s == "synthetic"} for s in sources],
        "best": _best(df) if not df.empty else [],
        "guide": guide,
        "hardware": hardware,
        "published": load_expectations()["published"],
        "charts": charts.all_charts(df, latencies) if not df.empty else [],
        "audio": _audio(records),
        "cells": _cells(df) if not df.empty else [],
        "drift": [results.drift_text(d) for _, d in drift.iterrows()],
    }


def render(run_dirs: Iterable[Path]) -> str:
    return _env().get_template("report.html.j2").render(**build_context(run_dirs))


def write(run_dirs: Iterable[Path], output: Path) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(run_dirs), encoding="utf-8")
    return output
