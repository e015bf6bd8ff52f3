"""`dia-bench recommend`: the hardware table the guide should have had, from runs on many machines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

import harness
from harness import results
from reports.html import _env, _n
from reports.verdicts import hardware_rows


def recommendations(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Per machine, device and audio length: the best configuration and what it allows."""
    ok = results.ok_cells(df)
    guide = {(h["machine"], h["device"], h["preset"]): h for h in hardware_rows(df)}
    rows = []
    for (machine, device, preset, seconds), g in ok.groupby(["device_name", "device", "preset", "seconds"]):
        single = g[g["batch"] == 1]
        best = (single if not single.empty else g).sort_values("rtf").iloc[0]
        # A stream keeps up when a request's audio takes less compute than its own length.
        per_request = g.assign(stream_rtf=g["generation_seconds"] / g["seconds"])
        keeping_up = per_request[per_request["stream_rtf"] < 1]
        largest = int(keeping_up["batch"].max()) if not keeping_up.empty else None
        h = guide.get((machine, str(device).split(":")[0], preset), {})
        rows.append({
            "machine": machine, "device": device, "preset": preset, "seconds": seconds,
            "settings": best["plugins"], "rtf": best["rtf"], "rtf_low": best["rtf_ci_low"],
            "rtf_high": best["rtf_ci_high"], "xrt": best["xrt"], "faster_than_real_time": bool(best["rtf"] < 1),
            "largest_real_time_batch": largest, "batches_measured": sorted(int(b) for b in g["batch"].unique()),
            "peak_rss_mb": best["peak_rss_mb"], "peak_vram_mb": best["peak_vram_mb"],
            "guide": h.get("guide"), "guide_range": h.get("guide_range"),
            "verdict": h.get("verdict", "not comparable: other hardware"),
            "weights": best["weights_source"],
        })
    return rows


def _display(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append({**r, "rtf_text": f"{_n(r['rtf'], '.3f')} [{_n(r['rtf_low'], '.3f')}, {_n(r['rtf_high'], '.3f')}]",
                    "xrt_text": _n(r["xrt"], ".2f", "x"), "rss": _n(r["peak_rss_mb"], ".0f"),
                    "vram": _n(r["peak_vram_mb"], ".0f"),
                    "largest": "none" if r["largest_real_time_batch"] is None else str(r["largest_real_time_batch"]),
                    "batches": ", ".join(map(str, r["batches_measured"]))})
    return out


def render(run_dirs: Iterable[Path]) -> str:
    df = results.load([Path(d) for d in run_dirs])
    rows = _display(recommendations(df)) if not df.empty else []
    return _env().get_template("recommend.html.j2").render(
        title="dia-bench hardware recommendations", rows=rows, version=harness.__version__,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=[str(d) for d in run_dirs])


def render_markdown(run_dirs: Iterable[Path]) -> str:
    df = results.load([Path(d) for d in run_dirs])
    rows = _display(recommendations(df)) if not df.empty else []
    lines = ["# dia-bench hardware recommendations", "",
             "| machine | device | model | audio s | recommended settings | RTF [95% CI] | x real time | faster than "
             "real time | largest real-time batch | peak RSS MB | peak VRAM MB | guide | verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['machine']} | {r['device']} | {r['preset']} | {r['seconds']:g} | {r['settings']} | "
                     f"{r['rtf_text']} | {r['xrt_text']} | {'yes' if r['faster_than_real_time'] else 'no'} | "
                     f"{r['largest']} (of {r['batches']}) | {r['rss']} | {r['vram']} | {r['guide_range'] or '-'} | "
                     f"{r['verdict']} |")
    return "\n".join(lines) + "\n"


def write(run_dirs: Iterable[Path], output: Path, markdown: bool = False) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_markdown(run_dirs) if markdown else render(run_dirs), encoding="utf-8")
    return output
