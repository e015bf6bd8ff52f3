"""A compact Markdown summary of one or more runs, for a CI job page."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from harness import results

WEIGHTS = {"synthetic": "synthetic weights: timings are real, audio is noise",
           "local": "real weights (local directory)", "hf-cache": "real weights (Hugging Face cache)"}


def _num(v, spec: str) -> str:
    return "-" if v is None or v != v else format(v, spec)


def render(run_dirs: Iterable[Path]) -> str:
    df = results.load(list(run_dirs))
    lines = ["# dia-bench summary", ""]
    if df.empty:
        return "\n".join([*lines, "No cells recorded."])
    for (host, device_name), _ in df.groupby(["hostname", "device_name"], dropna=False):
        lines.append(f"- machine: {host}, {device_name}")
    sources = sorted(s for s in df["weights_source"].dropna().unique())
    lines += [f"- weights: {', '.join(WEIGHTS.get(s, s) for s in sources) or 'unknown'}",
              "- RTF = compute / audio (lower is better); x real time = audio / compute; "
              "speedup against the baseline of the same device, length and batch, interpolated to when the "
              "cell ran, with a 95% bootstrap interval (* = beyond noise)", ""]
    lines.append("| cell | status | RTF [95% CI] | x real time | speedup | peak RSS MB | fidelity (cos) |")
    lines.append("|---|---|---|---|---|---|---|")
    for _, r in df.iterrows():
        if r["status"] == "ok":
            sig = "*" if r["significant"] else ""
            speed = "-" if r["speedup"] is None else (
                f"{r['speedup']:.2f}x [{r['speedup_low']:.2f}, {r['speedup_high']:.2f}]{sig}")
            lines.append(f"| {r['description']} | ok | {r['rtf']:.3f} [{r['rtf_ci_low']:.3f}, "
                         f"{r['rtf_ci_high']:.3f}] | {r['xrt']:.3f} | {speed} | {_num(r['peak_rss_mb'], '.0f')} | "
                         f"{_num(r['cosine'], '.4f')} |")
        else:
            reason = str(r["reason"] or "").replace("|", "/")
            lines.append(f"| {r['description']} | {r['status']} | {reason} | | | | |")
    drift = results.baseline_drift(df)
    if not drift.empty:
        lines.append("")
        for _, d in drift.iterrows():
            lines.append(f"- baseline drift {results.drift_text(d)}")
    return "\n".join(lines) + "\n"


def write(run_dirs: Iterable[Path], output: Path) -> Path:
    output.write_text(render(run_dirs))
    return output



