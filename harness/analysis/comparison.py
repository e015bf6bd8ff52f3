"""Compares two runs cell by cell: what got faster or slower beyond the repeats' noise."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench.harness import rundir, stats
from dia_bench.harness.analysis import results
from dia_bench.harness.env import usable_cores

# What identifies a machine: runs on two machines are never one line in `dia-bench history`.
MACHINE = {
    "CPU": lambda m: (m.get("cpu") or {}).get("model"),
    # A run pinned to 2 of a server's cores is a 2-core machine, not the server.
    "cores": lambda m: usable_cores(m.get("cpu") or {}),
    "GPUs": lambda m: ", ".join(g.get("name", "?") for g in m.get("gpus") or []) or "none",
}
# What, besides the code, changes how fast one machine runs.
VERSIONS = {
    "torch": lambda m: (m.get("software") or {}).get("torch"),
    "transformers": lambda m: (m.get("software") or {}).get("transformers"),
    "dia-bench": lambda m: (m.get("software") or {}).get("dia_bench"),
    "python": lambda m: (m.get("software") or {}).get("python"),
    "CUDA": lambda m: (m.get("software") or {}).get("cuda"),
    "driver": lambda m: ", ".join(sorted({str(g.get("driver")) for g in m.get("gpus") or []})) or None,
}
# A difference here is named beside the verdicts.
_CONTEXT = {**MACHINE, **VERSIONS}


def machine_key(machine: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(get(machine) for get in MACHINE.values())


def machine_label(machine: dict[str, Any]) -> str:
    cpu, cores, gpus = machine_key(machine)
    return f"{cpu} ({cores} cores), GPUs: {gpus}"


def differences(a: dict[str, Any], b: dict[str, Any], fields: dict[str, Any] | None = None) -> list[str]:
    """`name: old -> new` for each field of two runs' `machine` metadata that differs."""
    out = []
    for name, get in (fields or _CONTEXT).items():
        old, new = get(a), get(b)
        if old != new:
            out.append(f"{name}: {old} -> {new}")
    return out


def compare_runs(base_dir: Path, new_dir: Path) -> pd.DataFrame:
    """Each configuration both runs measured: the new run's speed against the base run's, with both
    runs' between-process terms in the interval (each configuration ran in its own processes)."""
    base, new = (d[(d["status"] == "ok") & ~d["role"].isin(results.EXTRA_PROCESS_ROLES)].set_index("key")
                 for d in (results.load(base_dir), results.load(new_dir)))
    rows = []
    for key in base.index.intersection(new.index):
        b, n = base.loc[key], new.loc[key]
        r = stats.ratio_ci(b["processes"], n["processes"], process=results.process_term(b),
                           new_process=results.process_term(n))
        change_pct = (1 / r["speedup"] - 1) * 100  # positive: the new run takes longer
        verdict = "same" if r["significant"] is False else "too few repeats to tell"
        if r["significant"]:
            verdict = "faster" if r["speedup"] > 1 else "slower"
        rows.append({"key": key, "description": n["description"], "base_rtf": b["rtf"], "new_rtf": n["rtf"],
                     "speedup": r["speedup"], "speedup_low": r["low"], "speedup_high": r["high"],
                     "change_pct": change_pct, "significant": r["significant"], "verdict": verdict,
                     "process_note": process_note(b, n)})
    return pd.DataFrame(rows)


def process_note(b: pd.Series, n: pd.Series) -> str:
    """Which between-process terms a comparison's interval carries, in words."""
    parts = []
    for name, row in (("base", b), ("new", n)):
        term = results.process_term(row)
        parts.append(f"{name} {term.describe()}" if term else f"{name}: none recorded")
    return "; ".join(parts)


def regressions(table: pd.DataFrame, max_regression_pct: float) -> pd.DataFrame:
    """Cells slower by more than the threshold, with significance."""
    if table.empty:
        return table
    return table[(table["verdict"] == "slower") & (table["change_pct"] > max_regression_pct)]


def context_differences(base_dir: Path, new_dir: Path) -> list[str]:
    """Machine and library differences between two runs, and a change of weights: each one a cause
    of a speed change that is not the code's."""
    base_meta, new_meta = rundir.read_meta(base_dir), rundir.read_meta(new_dir)
    out = differences(base_meta.get("machine") or {}, new_meta.get("machine") or {})
    sources = [sorted({(r.get("weights") or {}).get("source") for r in rundir.records(d)} - {None})
               for d in (base_dir, new_dir)]
    if sources[0] != sources[1]:
        out.append(f"weights: {', '.join(sources[0]) or '-'} -> {', '.join(sources[1]) or '-'}")
    return out


def status_changes(base_dir: Path, new_dir: Path) -> list[dict[str, Any]]:
    """Cells whose status differs between the runs, `absent` where a run lacks the cell: a cell that
    now fails has no times to compare, yet it is the worst regression."""
    def statuses(d: Path) -> dict[str, tuple[str, str]]:
        return {r.get("key") or r.get("cell_id"): (r.get("status"), r.get("description") or r.get("cell_id"))
                for r in rundir.records(d)}

    base, new = statuses(base_dir), statuses(new_dir)
    out = []
    for key in sorted(base.keys() | new.keys()):
        b, n = base.get(key, ("absent", None)), new.get(key, ("absent", None))
        if b[0] != n[0]:
            out.append({"key": key, "description": n[1] or b[1], "base": b[0], "new": n[0]})
    return out


def gate(table: pd.DataFrame, changes: list[dict[str, Any]], fail_on: str, threshold_pct: float) -> list[str]:
    """The cells that fail a CI gate: `regression` (significantly slower by more than the threshold, or
    ok before and failed now) or `any-change` (also significantly faster by as much, or any change of status)."""
    failing = list(regressions(table, threshold_pct)["description"]) if not table.empty else []
    if fail_on == "any-change" and not table.empty:
        faster = table[(table["verdict"] == "faster") & ((table["speedup"] - 1) * 100 > threshold_pct)]
        failing += list(faster["description"])
    for c in changes:
        if fail_on == "any-change" or (c["base"] == "ok" and c["new"] == "failed"):
            failing.append(c["description"])
    return failing
