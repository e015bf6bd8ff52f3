"""Runs of the same suite under several software stacks as one table: a row a cell, a column a stack.

Each column holds the cell's RTF under that stack, its speedup against the same stack's own
baseline, and its speedup against the same cell under the first stack (the reference column), with
Welch intervals. So an upgrade's effect on every configuration is one look. Runs on different
machines are still shown, but the table names what else differs, since then the software is not
the only cause.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench.harness import stats
from dia_bench.harness.analysis import results
from dia_bench.harness.analysis.comparison import context_differences

# What must match for two runs' cells to be the same configuration.
CELL_KEYS = ("preset", "device", "plugins", "text_label", "seconds", "batch")


def stack_label(df: pd.DataFrame, run: str) -> str:
    """The stack's name as recorded (nox stack sessions set it), else its torch version."""
    rows = df[df["run"] == run]
    named = rows["stack"].dropna().unique() if "stack" in rows else []
    if len(named):
        return str(named[0])
    torch = rows["torch"].dropna().unique()
    return f"torch {torch[0]}" if len(torch) else Path(run).name


def is_stack_set(run_dirs: list[Path], df: pd.DataFrame) -> bool:
    """Two or more runs on one machine and device whose software differs: what the table is for. Runs on
    different machines or devices differ in more than their software, and a CPU run beside a GPU run is
    not two stacks."""
    if len(run_dirs) < 2 or df.empty:
        return False
    ok = df[df["status"] == "ok"]
    if ok["machine"].nunique() > 1 or ok["device"].map(lambda d: str(d).split(":")[0]).nunique() > 1:
        return False
    labels = {stack_label(df, str(d)) for d in run_dirs}
    versions = {tuple(df[df["run"] == str(d)][["torch", "transformers"]].dropna().drop_duplicates()
                      .itertuples(index=False)) for d in run_dirs}
    return len(labels) > 1 or len(versions) > 1


def _fmt(point, low, high, spec: str, suffix: str = "") -> str:
    if point is None or point != point:
        return "-"
    text = f"{format(point, spec)}{suffix}"
    if low is None or low != low:
        return text
    return f"{text} [{format(low, spec)}, {format(high, spec)}]"


def build(run_dirs: Iterable[Path], df: pd.DataFrame) -> dict[str, Any]:
    """The table as data: `columns` (one a stack), `rows` (one a cell) and `differences`, from the
    runs' table as `results.load(run_dirs)` gives it (the report has it loaded already)."""
    run_dirs = [Path(d) for d in run_dirs]
    if df.empty:
        return {"columns": [], "rows": [], "differences": []}
    cells = df[~df["role"].isin(results.REPEATED_BASELINE_ROLES)].copy()
    cells["cell"] = [tuple(r[k] for k in CELL_KEYS) for _, r in cells.iterrows()]
    runs = [str(d) for d in run_dirs]
    labels = [stack_label(df, r) for r in runs]
    order = list(dict.fromkeys(c for r in runs for c in cells[cells["run"] == r]["cell"]))
    rows = []
    for cell in order:
        same = cells[cells["cell"] == cell]
        by_run = {r: same[same["run"] == r].iloc[0] for r in runs if (same["run"] == r).any()}
        ref = by_run.get(runs[0])
        entries = []
        for run in runs:
            row = by_run.get(run)
            if row is None:
                entries.append({"status": "absent", "text": "not in this run"})
                continue
            if row["status"] != "ok":
                # The first clause says why; the cell's own record has the rest (the fix, the command).
                why = str(row["reason"] or "").split("; ")[0]
                entries.append({"status": row["status"], "text": f"{row['status']}: {why}"})
                continue
            entry = {"status": "ok", "rtf": _fmt(row["rtf"], row["rtf_ci_low"], row["rtf_ci_high"], ".3f")
                     + (f" ({row['disturbed']})" if row.get("disturbed") else ""),
                     "own_speedup": _fmt(row["speedup"], row["speedup_low"], row["speedup_high"], ".2f", "x")
                     + ("*" if row["significant"] is True else ""),
                     "vs_reference": "reference" if run == runs[0] else "- (not measured there)"}
            if run != runs[0] and ref is not None and ref["status"] == "ok":
                r = stats.ratio_ci(results.rtf_samples(ref), results.rtf_samples(row),
                                   process=results.process_term(ref), new_process=results.process_term(row))
                entry["vs_reference"] = (_fmt(r["speedup"], r["low"], r["high"], ".2f", "x")
                                         + ("*" if r["significant"] else ""))
                entry["vs_reference_value"] = r["speedup"]
            entries.append(entry)
        first = same.iloc[0]
        rows.append({"description": first["plugins"] if first["role"] != "baseline-start" else "baseline",
                     "entries": entries})
    differences = []
    for run, label in zip(runs[1:], labels[1:], strict=True):
        for diff in context_differences(run_dirs[0], Path(run)):
            differences.append(f"{labels[0]} -> {label}: {diff}")
    machines = {(h, d) for h, d in df[["hostname", "device_name"]].drop_duplicates().itertuples(index=False)}
    return {"columns": labels, "runs": runs, "rows": rows, "differences": differences,
            "one_machine": len({d for _, d in machines}) <= 1,
            "statistics": stats.METHOD}


def markdown(table: dict[str, Any]) -> list[str]:
    """The table as Markdown lines (empty when there is nothing to compare)."""
    if not table["rows"]:
        return []
    cols = table["columns"]
    lines = ["## Across software stacks", "",
             f"Each entry: RTF [95% CI]; speedup against the same stack's baseline; speedup against "
             f"{cols[0]} (the reference column) for the same cell (* = beyond noise).", ""]
    if not table["one_machine"]:
        lines += ["**These runs come from different machines: the differences below are not the software's "
                  "alone.**", ""]
    lines.append("| cell | " + " | ".join(cols) + " |")
    lines.append("|---|" + "---|" * len(cols))
    for row in table["rows"]:
        parts = []
        for e in row["entries"]:
            if e["status"] != "ok":
                parts.append(e["text"].replace("|", "/"))
            else:
                parts.append(f"{e['rtf']}; own baseline {e['own_speedup']}; vs {cols[0]} {e['vs_reference']}")
        lines.append(f"| {row['description']} | " + " | ".join(parts) + " |")
    if table["differences"]:
        lines += ["", *[f"- differs: {d}" for d in table["differences"]]]
    return lines

