"""The first screen of a report: per device, what to run for one request and for throughput, in words,
and a one-line summary of what the run says about the guide. The detail follows it."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from dia_bench.harness.analysis import quality, results
from dia_bench.reports import recommend, verdicts

QUALITY_WORDS = {
    "reference": "the unoptimized fp32 reference itself",
    "exact": "same output as the reference (its plugins change no arithmetic)",
    "passes": "passes the quality bar",
}
# The verdicts a measured claim can get, in the order the summary names them.
VERDICT_WORDS = ("reproduced", "below", "above", "inconclusive")


def _xrt(xrt: Any, low: Any, high: Any) -> str:
    """x real time with its interval, from the RTF's (the interval inverts with it)."""
    if xrt is None or xrt != xrt:
        return "-"
    text = f"{float(xrt):.3g}x real time"
    if low is not None and low == low and high is not None and high == high and float(low) > 0:
        text += f" [{1 / float(high):.3g}, {1 / float(low):.3g}]"
    return text


def cell_name(r: pd.Series) -> str:
    """A cell's description, with the number of processes where it ran in more than one."""
    processes = r.get("processes")
    many = isinstance(processes, list) and len(processes) > 1 and r.get("role") == "cell"
    return f"{r['description'] or r['key']}" + (f" ({len(processes)} processes)" if many else "")


def compare_order(df: pd.DataFrame) -> pd.DataFrame:
    """Cells in the order a reader compares them: by device (a CPU's figures are never weighed against a
    GPU's), then model, then the fastest first by x real time; cells that measured nothing close their
    device's list. Ties keep the order the cells ran in. A cell's extra processes (`processes = N`) are
    in its own row's figures, not rows of their own."""
    if "role" in df:
        df = df[~df["role"].isin(results.EXTRA_PROCESS_ROLES)].reset_index(drop=True)
    if df.empty:
        return df
    key = pd.DataFrame({"device": df["device"].astype(str).to_numpy(), "preset": df["preset"].astype(str).to_numpy(),
                        "failed": (df["status"] != "ok").to_numpy(),
                        "slowest": -pd.to_numeric(df["xrt"], errors="coerce").to_numpy()})
    order = key.sort_values(["device", "preset", "failed", "slowest"], kind="stable", na_position="last").index
    return df.iloc[order]


def devices(df: pd.DataFrame, max_tv: float) -> list[dict[str, Any]]:
    """One entry per machine, device, model and length: the latency answer, the throughput answer, and the
    fastest configuration no run has verified, each in a sentence's parts."""
    out = []
    for r in recommend.recommendations(df, max_tv):
        entry = {
            "machine": r["machine"], "device": r["device"], "preset": r["preset"], "seconds": r["seconds"],
            "settings": r["settings"], "speed": _xrt(r["xrt"], r["rtf_low"], r["rtf_high"]),
            "quality": QUALITY_WORDS.get(r["quality"], r["quality_why"]), "note": r["note"],
            "weights": r["weights"], "throughput": None, "unverified": None,
            # The fastest that failed the bar: a first screen that says only "run the baseline" hides why.
            "held_back": r["trades"][0] if r["trades"] else None,
        }
        if t := r["throughput"]:
            entry["throughput"] = {"settings": t["settings"], "batch": t["batch"],
                                   "speed": _xrt(t["xrt"], t["rtf_low"], t["rtf_high"]) + " in aggregate"}
        if r["unverified"]:
            entry["unverified"] = r["unverified"][0]
        entry["baseline"] = baseline_kernel_note(df, r)
        out.append(entry)
    return out


# Below half of the memory's rate, both the baseline's step and its kernel: the kernel is what holds it.
HELD_BY_KERNEL = 0.5


def baseline_kernel_note(df: pd.DataFrame, r: dict[str, Any]) -> str | None:
    """Where the fp32 baseline's step is held by torch's fp32 kernel rather than by the memory (MKL's
    product for two rows on an AMD CPU): every speedup of that machine is then partly against the kernel,
    which whoever reads a 20x should know. None where the baseline is not, or the run cannot tell."""
    rows = df[(df["machine"] == r["machine"]) & (df["device"] == r["device"]) & (df["preset"] == r["preset"])
              & (df["seconds"] == r["seconds"]) & df["role"].isin(results.BASELINE_ROLES) & (df["status"] == "ok")]
    fractions, shares = rows["fraction_of_bandwidth"].dropna(), rows["fp32_matvec_share"].dropna()
    if fractions.empty or shares.empty:
        return None
    fraction, share = float(fractions.median()), float(shares.median())
    if fraction >= HELD_BY_KERNEL or share >= HELD_BY_KERNEL:
        return None
    return (f"the fp32 baseline read its weights at {fraction:.0%} of the memory's rate, held by torch's fp32 "
            f"matrix-vector kernel, which reads at {share:.0%} of it here: speedups on this machine are partly "
            "against that kernel (the onednn plugin keeps fp32 and avoids it)")


def guide_summary(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How many of the guide's claims the run measured and what they came to; the others named once."""
    measured = [g for g in rows if g["measured"] is not None]
    counts = Counter(next((w for w in VERDICT_WORDS if str(g["verdict"]).startswith(w)), "other") for g in measured)
    parts = [f"{counts[w]} {w}" for w in VERDICT_WORDS if counts[w]]
    if counts["other"]:
        parts.append(f"{counts['other']} without a verdict")
    unmeasured = sorted({g["technique"] for g in rows if g["measured"] is None}
                        - {g["technique"] for g in measured})
    if measured:
        text = f"{len(measured)} of the guide's claims measured here: " + ", ".join(parts) + "."
    else:
        text = "None of the guide's claims was measured here."
    others = sorted({p for g in rows if g["measured"] is None for p in g["other_presets"]})
    if others:
        text += (f" The guide speaks of dia-1.6b; cells measured only on {', '.join(others)} are shown with the cells, "
                 "never set against it.")
    return {"text": text, "measured": measured, "unmeasured": unmeasured}


def markdown(df: pd.DataFrame, max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> list[str]:
    """The same first screen as Markdown lines, for the summary and a CI job page."""
    if df.empty:
        return []
    lines = ["## The answers", ""]
    for d in devices(df, max_tv):
        where = f"**{d['machine']} ({d['device']}, {d['preset']}, {d['seconds']:g} s)**"
        lines.append(f"- {where}: for one request, run `{d['settings']}`: {d['speed']}; quality: {d['quality']}."
                     + (f" {d['note']}." if d["note"] else ""))
        if d["throughput"]:
            t = d["throughput"]
            lines.append(f"  - throughput: `{t['settings']}` at batch {t['batch']}: {t['speed']}.")
        if d["unverified"]:
            lines.append(f"  - fastest, quality not verified: {d['unverified']}")
        if d["held_back"]:
            lines.append(f"  - fastest held back by the quality bar: {d['held_back']}")
        if d["baseline"]:
            lines.append(f"  - baseline: {d['baseline']}")
    summary = guide_summary(verdicts.speedup_rows(df, max_tv))
    lines.append(f"- the guide: {summary['text']}")
    if summary["unmeasured"]:
        lines.append(f"  - not measured here: {', '.join(summary['unmeasured'])}.")
    return [*lines, ""]

