"""Compares two runs cell by cell: what got faster or slower beyond the repeats' noise."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness import results, rundir, stats

# What, besides the code, changes how fast a run is: a difference here is named beside the verdicts.
_CONTEXT = {
    "CPU": lambda m: (m.get("cpu") or {}).get("model"),
    "cores": lambda m: (m.get("cpu") or {}).get("logical_cores"),
    "GPUs": lambda m: ", ".join(g.get("name", "?") for g in m.get("gpus") or []) or "none",
    "torch": lambda m: (m.get("software") or {}).get("torch"),
    "transformers": lambda m: (m.get("software") or {}).get("transformers"),
}


def compare_runs(base_dir: Path, new_dir: Path) -> pd.DataFrame:
    base = results.load(base_dir, with_stats=False)
    new = results.load(new_dir, with_stats=False)
    base = base[base["status"] == "ok"].set_index("key")
    new = new[new["status"] == "ok"].set_index("key")
    rows = []
    for key in base.index.intersection(new.index):
        b, n = base.loc[key], new.loc[key]
        r = stats.ratio_ci(results.rtf_samples(b), results.rtf_samples(n))
        change_pct = (1 / r["speedup"] - 1) * 100  # positive: the new run takes longer
        verdict = "same" if r["significant"] is False else "too few repeats to tell"
        if r["significant"]:
            verdict = "faster" if r["speedup"] > 1 else "slower"
        rows.append({"key": key, "description": n["description"], "base_rtf": b["rtf"], "new_rtf": n["rtf"],
                     "speedup": r["speedup"], "speedup_low": r["low"], "speedup_high": r["high"],
                     "change_pct": change_pct, "significant": r["significant"], "verdict": verdict})
    return pd.DataFrame(rows)


def regressions(table: pd.DataFrame, max_regression_pct: float) -> pd.DataFrame:
    """Cells slower by more than the threshold, with significance."""
    if table.empty:
        return table
    return table[(table["verdict"] == "slower") & (table["change_pct"] > max_regression_pct)]


def context_differences(base_dir: Path, new_dir: Path) -> list[str]:
    """Machine and library differences between two runs, and a change of weights: each one a cause
    of a speed change that is not the code's."""
    base_meta, new_meta = rundir.read_meta(base_dir), rundir.read_meta(new_dir)
    out = []
    for name, get in _CONTEXT.items():
        a, b = get(base_meta.get("machine") or {}), get(new_meta.get("machine") or {})
        if a != b:
            out.append(f"{name}: {a} -> {b}")
    sources = [sorted({(r.get("weights") or {}).get("source") for r in rundir.records(d)} - {None})
               for d in (base_dir, new_dir)]
    if sources[0] != sources[1]:
        out.append(f"weights: {', '.join(sources[0]) or '-'} -> {', '.join(sources[1]) or '-'}")
    return out
