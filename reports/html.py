"""`dia-bench report`: one self-contained HTML file from one or more run directories."""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench import harness
from dia_bench.harness import rundir, stats
from dia_bench.harness.analysis import quality, results, scaling
from dia_bench.harness.env import cores_label
from dia_bench.harness.weights_dir import REAL_WEIGHTS_HINT
from dia_bench.reports import answers, charts, figures, pages
from dia_bench.reports import stacks as stack_table
from dia_bench.reports.expectations import load as load_expectations
from dia_bench.reports.verdicts import best_eligible, hardware_rows, not_beaten_note, speedup_rows

WEIGHT_WORDS = {
    "synthetic": "synthetic weights (seeded random at the real architecture): the timings are real, "
                 "the audio is noise, and fidelity compares noise with noise",
    "local": "real weights from a local directory",
    "hf-cache": "real weights from the local Hugging Face cache",
}
AUDIO_CLIP_SECONDS = 5.0


def _rtf_text(r: pd.Series) -> str:
    text = figures.interval(r["rtf"], r["rtf_ci_low"], r["rtf_ci_high"])
    return f"{text} ({r['disturbed']})" if r.get("disturbed") else text


def _long_form_text(r: pd.Series) -> str:
    text = figures.interval(r["long_form_rtf"], r["long_form_rtf_low"], r["long_form_rtf_high"])
    if r["fixed_seconds"] is not None and r["fixed_seconds"] == r["fixed_seconds"]:
        text += f" + {r['fixed_seconds']:.2f} s a request"
    return text


def _cells(df: pd.DataFrame, max_tv: float) -> list[dict[str, Any]]:
    out = []
    for _, r in answers.compare_order(df).iterrows():
        ok = r["status"] == "ok"
        out.append({
            "machine": r["machine"], "description": answers.cell_name(r), "status": r["status"],
            "reason": r["reason"] or "",
            "rtf": _rtf_text(r) if ok else "", "long_form": _long_form_text(r) if ok else "",
            "xrt": figures.number(r["xrt"], ".3f", "x") if ok else "",
            "speedup": figures.speedup(r) if ok else "",
            "steps": (f"{figures.number(r['step_p50_ms'], '.1f')} / {figures.number(r['step_p99_ms'], '.1f')}"
                      if ok else ""),
            "roofline": figures.roofline(r) if ok else "",
            "rss": figures.number(r["peak_rss_mb"], ".0f"), "vram": figures.number(r["peak_vram_mb"], ".0f"),
            "fidelity": quality.fidelity_text(r) if ok else "",
            "quality": quality.assess(r, max_tv)["status"] if ok else "",
        })
    return out


def _speedup_of(r: pd.Series) -> float:
    return 1.0 if r["plugins"] == "baseline" or r["speedup"] is None or r["speedup"] != r["speedup"] \
        else float(r["speedup"])


def _best(df: pd.DataFrame, max_tv: float) -> list[dict[str, Any]]:
    """Per machine and device: the fastest cell that clears the quality bar, and the faster ones it
    held back. The baseline's repeats only measure drift; they are not configurations to recommend."""
    ok = results.ok_cells(df)
    rows = []
    for (device, _), g in ok.groupby(["device", "machine"]):
        # The best for one request: a batch's aggregate speed answers throughput, shown in its own table.
        single = g[g["batch"].fillna(1).astype(int) == 1]
        g = single if not single.empty else g
        r = best_eligible(g, max_tv)
        if r is None:
            continue
        speed = g.apply(_speedup_of, axis=1)
        held = g[(speed > _speedup_of(r)) & ~quality.eligible(g, max_tv)]
        rows.append({"device_name": r["machine"], "device": device, "description": r["description"],
                     "rtf": _rtf_text(r), "long_form": _long_form_text(r), "xrt": figures.number(r["xrt"], ".3f", "x"),
                     "speedup": figures.speedup(r), "rss": figures.number(r["peak_rss_mb"], ".0f"),
                     "vram": figures.number(r["peak_vram_mb"], ".0f"), "fidelity": quality.fidelity_text(r),
                     "quality": quality.assess(r, max_tv)["why"], "note": not_beaten_note(g, r, max_tv),
                     "held_back": [f"{h['description']}: {figures.speedup(h)}, {quality.assess(h, max_tv)['why']}"
                                   for _, h in held.sort_values("rtf").iterrows()]})
    return rows


def _scaling(df: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for f in scaling.fits(df):
        out.append({"config": f"{f['preset']}/{f['device']}/{f['plugins']}/b{f['batch']}",
                    "lengths": ", ".join(f"{s:g}" for s in f["lengths"]),
                    "slope": figures.interval(f["slope"], f["slope_low"], f["slope_high"]),
                    "intercept": figures.interval(f["intercept"], f["intercept_low"], f["intercept_high"], ".2f", " s"),
                    "cell": figures.interval(f["long_form_rtf"], f["long_form_low"], f["long_form_high"])
                    + f" at {f['long_form_at']:g} s", "points": f["points"],
                    "predicted": figures.number(f["slope_from_steps"], ".3f")})
    return out


def _throughput(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Aggregate x real time (all requests' audio over the batch's generation time) per batch size, for
    each configuration measured at two batch sizes or more."""
    ok = results.ok_cells(df)
    keys = ["machine", "preset", "device", "plugins", "text_label", "seconds"]
    out = []
    for k, g in ok.groupby(keys, dropna=False):
        if g["batch"].nunique() < 2:
            continue
        per_batch = []
        for _, r in g.sort_values("batch").iterrows():
            # x real time is 1 / RTF: its interval is the RTF interval's, inverted.
            low = 1 / r["rtf_ci_high"] if r["rtf_ci_high"] == r["rtf_ci_high"] and r["rtf_ci_high"] else None
            high = 1 / r["rtf_ci_low"] if r["rtf_ci_low"] == r["rtf_ci_low"] and r["rtf_ci_low"] else None
            per_batch.append(f"b{int(r['batch'])}: {figures.interval(r['xrt'], low, high, '.2f', 'x')}")
        named = dict(zip(keys, k, strict=True))
        # Each device's configurations, the one with the highest aggregate first.
        out.append(((str(named["device"]), -float(g["xrt"].max())), {
            "config": f"{named['preset']}/{named['device']}/{named['plugins']}", "text": named["text_label"] or "-",
            "seconds": f"{named['seconds']:g}", "machine": named["machine"], "batches": per_batch}))
    return [row for _, row in sorted(out, key=lambda o: o[0])]


def _machines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        env = rec.get("env") or {}
        if "software" not in env:
            continue
        key = (env.get("hostname"), env.get("device_name"), env["software"].get("stack"), env["software"]["torch"])
        seen.setdefault(key, {
            "hostname": env.get("hostname"), "device_name": env.get("device_name"),
            "cpu": f"{env['cpu']['model']} ({cores_label(env['cpu'])})",
            "gpus": ", ".join(f"{g['name']} (cc {g['capability']}, driver {g['driver']})" for g in env.get("gpus", []))
                    or "none",
            "torch": env["software"]["torch"], "transformers": env["software"]["transformers"],
            "stack": env["software"].get("stack") or "-",
            "packages": ", ".join(f"{k} {v}" for k, v in (env["software"].get("packages") or {}).items()) or "-",
            "commit": (env["software"].get("git_commit") or "-")[:12],
            "kernels": None,
        })
        if seen[key]["kernels"] is None:
            seen[key]["kernels"] = figures.kernel_rates(rec)
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


def build_context(run_dirs: Iterable[Path], max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> dict[str, Any]:
    run_dirs = [Path(d) for d in run_dirs]
    df = results.load(run_dirs)
    records = [rec for d in run_dirs for rec in rundir.records(d)]
    latencies = {rec.get("key") or rec["cell_id"]: rec.get("step_latencies_ms") or [] for rec in records}
    guide = speedup_rows(df, max_tv) if not df.empty else []
    for g in guide:
        g["measured_text"] = figures.interval(g["measured"], g["low"], g["high"], ".2f", "x")
    # Each device's machines, the fastest first.
    hardware = sorted(hardware_rows(df, max_tv) if not df.empty else [],
                      key=lambda h: (str(h["device"]), str(h["preset"]),
                                     -h["xrt"] if not figures.absent(h["xrt"]) else float("inf")))
    for h in hardware:
        h["rtf_text"] = figures.interval(h["rtf"], h["rtf_low"], h["rtf_high"])
        h["long_form_text"] = figures.interval(h["long_form_rtf"], h["long_form_low"], h["long_form_high"])
        h["xrt_text"] = figures.number(h["xrt"], ".3f", "x")
    sources = sorted({(rec.get("weights") or {}).get("source") for rec in records} - {None})
    drift = results.baseline_drift(df) if not df.empty else pd.DataFrame()
    problems = sorted({f"{rec.get('description') or rec.get('cell_id')}: {rec['roofline']['problem']}"
                       for rec in records if (rec.get("roofline") or {}).get("problem")})
    summary = answers.guide_summary(guide)
    return {
        "title": "dia-bench report",
        "answers": answers.devices(df, max_tv) if not df.empty else [],
        "guide_summary": summary,
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": harness.__version__,
        "runs": [{"path": str(d), "suite": rundir.read_meta(d).get("suite", {}).get("name"),
                  "cells": len(rundir.records(d))} for d in run_dirs],
        "machines": _machines(records),
        "weights": [{"words": WEIGHT_WORDS.get(s, s) + (f"; {REAL_WEIGHTS_HINT}" if s == "synthetic" else ""),
                     "noise": s == "synthetic"} for s in sources],
        "max_tv": max_tv,
        "unmeasured": quality.unmeasured_note(df, max_tv) if not df.empty else None,
        "statistics": stats.METHOD,
        "process_notes": results.process_notes(df) if not df.empty else [],
        "best": _best(df, max_tv) if not df.empty else [],
        "guide": summary["measured"],
        "guide_chart": charts.guide_forest(summary["measured"]),
        "hardware": hardware,
        "scaling": _scaling(df) if not df.empty else [],
        "throughput": _throughput(df) if not df.empty else [],
        "published": load_expectations()["published"],
        "charts": charts.all_charts(df, latencies, max_tv) if not df.empty else [],
        "sortable": pages.inline_script("_sortable.js.j2"),
        "audio": _audio(records),
        "cells": _cells(df, max_tv) if not df.empty else [],
        "several_machines": not df.empty and df["machine"].nunique() > 1,
        "drift": [results.drift_text(d) for _, d in drift.iterrows()],
        "roofline_problems": problems,
        "stacks": stack_table.build(run_dirs, df) if stack_table.is_stack_set(run_dirs, df) else None,
    }


def render(run_dirs: Iterable[Path], max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> str:
    return pages.environment().get_template("report.html.j2").render(**build_context(run_dirs, max_tv))


def write(run_dirs: Iterable[Path], output: Path, max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render(run_dirs, max_tv), encoding="utf-8")
    return output
