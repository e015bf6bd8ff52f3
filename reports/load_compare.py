"""`dia-bench compare` of two load runs: each rate both offered, each quantile with both intervals and the
verdict beyond them and the process term; the rate each held; as text, Markdown or JSON."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from dia_bench.harness.analysis import load_runs
from dia_bench.harness.analysis.load_runs import LoadRun
from dia_bench.reports.compare import footer, json_scalar
from dia_bench.reports.figures import ms_text
from dia_bench.reports.history import md_cell

FORMAT = "dia-bench-load-compare"
FORMAT_VERSION = 1


def _ms(r: pd.Series, side: str) -> str:
    """One run's quantile of a compare row, as the load page prints it, in ms."""
    def plain(v: Any) -> Any:
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v

    text = ms_text({"value": plain(r[side]), "low": plain(r[f"{side}_low"]), "high": plain(r[f"{side}_high"]),
                    "censored": r[f"{side}_censored"]})
    return text if text in ("-", ">timeout") else f"{text} ms"


def _change(r: pd.Series) -> str:
    return "-" if r["change_pct"] is None or pd.isna(r["change_pct"]) else f"{r['change_pct']:+.1f}%"


def _rows(table: pd.DataFrame) -> list[list[str]]:
    return [[f"{r['rate']:g}", r["measure"], _ms(r, "base"), _ms(r, "new"), _change(r), r["verdict"],
             f"{r['base_failed']} -> {r['new_failed']}"] for _, r in table.iterrows()]


HEADER = ["req/s", "quantile", "base [95%]", "new [95%]", "change", "verdict", "not completed"]


def _held(base: LoadRun, new: LoadRun) -> str:
    if base.target_text != new.target_text:
        return f"held: base {base.held} at {base.target_text}; new {new.held} at {new.target_text}"
    return f"held at {new.target_text}: {base.held} -> {new.held}"


def _noise(base: LoadRun, new: LoadRun) -> str:
    prior = max((base.process_prior, new.process_prior), key=lambda p: p.variance)
    return (f"a change is called where the two intervals stand apart by more than two processes may differ: "
            f"{prior.describe()}")


def text(base: LoadRun, new: LoadRun, table: pd.DataFrame) -> str:
    lines = [f"base {base.path}: {base.description} on {base.machine_name}",
             f"new  {new.path}: {new.description} on {new.machine_name}", f"includes: {new.includes}"]
    if table.empty:
        lines.append("No offered rate in common between the two load runs.")
    else:
        rows = [HEADER, *_rows(table)]
        widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
        lines.append(_noise(base, new))
    lines.append(_held(base, new))
    return "\n".join(lines) + "\n"


def markdown(base: LoadRun, new: LoadRun, table: pd.DataFrame, differences: list[str],
             gate: dict[str, Any]) -> str:
    lines = ["## dia-bench compare (load)", "", f"base `{md_cell(base.path)}` -> new `{md_cell(new.path)}`: "
             f"{md_cell(new.description)} on {md_cell(new.machine_name)}; {md_cell(new.includes)}", ""]
    if table.empty:
        lines.append("No offered rate in common between the two load runs.")
    else:
        lines += ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        for row in _rows(table):
            row[5] = {"slower": "**slower**"}.get(row[5], row[5])
            lines.append("| " + " | ".join(md_cell(c) for c in row) + " |")
        lines += ["", md_cell(_noise(base, new))]
    lines += ["", md_cell(_held(base, new))]
    lines += footer(differences, gate, "figure(s)")
    return "\n".join(lines) + "\n"


def as_json(base: LoadRun, new: LoadRun, table: pd.DataFrame, differences: list[str], gate: dict[str, Any]) -> str:
    def side(run: LoadRun) -> dict[str, Any]:
        return {"path": str(run.path), "description": run.description, "machine": run.machine_name,
                "includes": run.includes, "held_rps": run.max_rate.get("max_rps"), "target": run.target_text,
                "process_prior": run.process_prior.describe(), "started_at": run.started_at.isoformat()}

    rows = [{k: json_scalar(v) for k, v in r.items()} for r in table.to_dict("records")]
    return json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "base": side(base), "new": side(new),
                       "rates": rows, "context_differences": differences, "gate": gate},
                      indent=2, allow_nan=False) + "\n"


def render(fmt: str, base: LoadRun, new: LoadRun, table: pd.DataFrame, differences: list[str],
           gate: dict[str, Any]) -> str:
    if fmt == "markdown":
        return markdown(base, new, table, differences, gate)
    if fmt == "json":
        return as_json(base, new, table, differences, gate)
    return text(base, new, table)


def compare(base: LoadRun, new: LoadRun, fail_on: str | None, threshold_pct: float) -> tuple[pd.DataFrame,
                                                                                             list[str], dict[str, Any]]:
    table = load_runs.compare(base, new)
    failing = load_runs.gate(table, fail_on, threshold_pct) if fail_on else []
    return table, load_runs.differences(base, new), {"fail_on": fail_on, "threshold_pct": threshold_pct if fail_on
                                                     else None, "failing": failing}
