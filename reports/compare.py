"""`dia-bench compare --format markdown|json`: the comparison for a CI job summary or a program."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench.harness import stats
from dia_bench.reports import figures
from dia_bench.reports.history import md_cell

COLUMNS = ("key", "description", "base_rtf", "new_rtf", "change_pct", "speedup", "speedup_low", "speedup_high",
           "significant", "verdict")


def json_scalar(v: Any) -> Any:
    """JSON for numpy and pandas scalars; NaN (no interval) and infinity as null."""
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return None
    v = v.item() if hasattr(v, "item") else v
    return None if isinstance(v, float) and not math.isfinite(v) else v


def footer(differences: list[str], gate: dict[str, Any], what: str) -> list[str]:
    """The Markdown lines after a comparison's table: what else differs, and the gate's verdict on `what`
    failed (cells of a sweep, figures of a load run)."""
    lines = []
    if differences:
        lines += ["", "The runs differ in more than the code: " + md_cell("; ".join(differences))]
    if gate["fail_on"]:
        verdict = (f"**failed**: {len(gate['failing'])} {what}: " + md_cell("; ".join(gate["failing"]))
                   if gate["failing"] else "passed")
        lines += ["", f"Gate (`--fail-on {gate['fail_on']}`, threshold {gate['threshold_pct']:g}%): {verdict}"]
    return lines


def markdown(base: Path, new: Path, table: pd.DataFrame, changes: list[dict[str, Any]], differences: list[str],
             gate: dict[str, Any]) -> str:
    lines = ["## dia-bench compare", "", f"base `{md_cell(base)}` -> new `{md_cell(new)}`", ""]
    if table.empty:
        lines.append("No measured cell in common between the two runs.")
    else:
        lines += ["| cell | base RTF | new RTF | change | speedup [95% CI] | verdict |", "|---|---|---|---|---|---|"]
        for _, r in table.iterrows():
            verdict = {"slower": "**slower**", "faster": "faster"}.get(r["verdict"], r["verdict"])
            lines.append(f"| {md_cell(r['description'])} | {r['base_rtf']:.3f} | {r['new_rtf']:.3f} | "
                         f"{r['change_pct']:+.1f}% | {figures.speedup(r)} | {verdict} |")
        lines += ["", f"\\* = beyond the noise of repeats and processes (95% interval excludes 1; {stats.METHOD})"]
    if changes:
        lines += ["", "Status changed: " + "; ".join(f"{md_cell(c['description'])}: {c['base']} -> {c['new']}"
                                                      for c in changes)]
    lines += footer(differences, gate, "cell(s)")
    return "\n".join(lines) + "\n"


def as_json(base: Path, new: Path, table: pd.DataFrame, changes: list[dict[str, Any]], differences: list[str],
            gate: dict[str, Any]) -> str:
    cells = [{c: json_scalar(r[c]) for c in COLUMNS} for _, r in table.iterrows()]
    return json.dumps({"base": str(base), "new": str(new), "cells": cells, "status_changes": changes,
                       "context_differences": differences, "gate": gate}, indent=2) + "\n"


def render(fmt: str, base: Path, new: Path, table: pd.DataFrame, changes: list[dict[str, Any]],
           differences: list[str], gate: dict[str, Any]) -> str:
    return (markdown if fmt == "markdown" else as_json)(base, new, table, changes, differences, gate)
