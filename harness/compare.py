"""Compares two runs cell by cell: what got faster or slower beyond the repeats' noise."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from harness import results, stats


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
        verdict = "same"
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
