"""How much one process differs from another on this machine: measured per run, kept per machine.

Every configuration a run measures in more than one worker process (the baseline at the start,
again and at the end; every cell of a suite with `processes = N`) shows the between-process part of
the noise (`harness/stats.py`). A run's estimate rests on few processes, so it is moderated by a
prior: the pooled estimate of earlier runs on the same machine (kept in the cache directory, as
`dia-bench noise` shows), else a stated default (`default_prior`). The prior a sweep used is written into its
run.json, so a report rendered elsewhere computes the same intervals.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from dia_bench.harness import stats
from dia_bench.harness.env import usable_cores
from dia_bench.harness.paths import cache_dir

# Roles whose records are one more process of a configuration measured in another record.
PROCESS_ROLES = ("baseline-start", "baseline-mid", "baseline-end", "cell", "cell-process")
# A machine's history keeps its newest runs until they hold this many degrees of freedom between
# processes: older ones may describe a machine since changed. Counted in degrees of freedom, not runs,
# so that a ten-process A/A run (9) is not pushed out by a few two-process runs (1 each).
HISTORY_DF = 40


# A history whose repeats are noisier than its processes differ cannot tell a small process term
# from none; it is not trusted below this (2% a process, under any difference a report calls one).
MIN_PRIOR_VARIANCE = 0.02 ** 2


# dia-tiny's decode step takes about 2 ms, so where a process's memory and threads landed moves its
# speed far more than dia-1.6b's: ten-process A/A runs on a 2-core AMD EPYC spread by 17-36% a
# process on dia-tiny and 4% on dia-1.6b (`dia-bench noise reference-results/*-aa*`). Assumed at 10%,
# dia-tiny's first runs on a machine marked about twice the false alarms they should.
PRESET_PRIORS = {"dia-tiny": stats.ProcessNoise(
    variance=0.25 ** 2, df=4.0, source="the default prior for dia-tiny (25% a process, 4 df): no machine history")}


def default_prior(kind: str) -> stats.ProcessNoise:
    """What is assumed for `kind` (a `noise_kind`) without a history: the preset's own, else `stats.DEFAULT_PRIOR`."""
    return PRESET_PRIORS.get(kind.rsplit(" ", 1)[-1], stats.DEFAULT_PRIOR)


def device_kind(device: str | None) -> str:
    return "cuda" if str(device).startswith("cuda") else "cpu"


def noise_kind(device: str | None, preset: str | None) -> str:
    """What a process term is kept for: the device kind and the preset (`cpu dia-1.6b`); dia-tiny's
    processes, dominated by fixed costs, say little about dia-1.6b's."""
    return f"{device_kind(device)} {preset}"


def record_kind(rec: dict[str, Any]) -> str:
    return noise_kind(rec.get("device"), rec.get("preset") or (rec.get("cell") or {}).get("preset"))


def rtf_repeats(rec: dict[str, Any]) -> list[float]:
    audio = rec.get("audio_seconds")
    return [t / audio for t in rec.get("repeats_seconds") or []] if audio else []


def anova_by_kind(records: Iterable[dict[str, Any]]) -> dict[tuple[str | None, str], stats.ProcessAnova]:
    """Per (node, `noise_kind`): the sums of squares of every configuration measured in several processes."""
    processes: dict[tuple[Any, ...], list[list[float]]] = defaultdict(list)
    for rec in records:
        if rec.get("status") != "ok" or rec.get("role", "cell") not in PROCESS_ROLES:
            continue
        node = (rec.get("node") or {}).get("id")
        if samples := rtf_repeats(rec):
            processes[(node, record_kind(rec), rec.get("cell_id"))].append(samples)
    out: dict[tuple[str | None, str], stats.ProcessAnova] = defaultdict(stats.ProcessAnova)
    for (node, kind, _), groups in processes.items():
        if len(groups) > 1:
            out[(node, kind)] = out[(node, kind)] + stats.process_anova(groups)
    return dict(out)


def pooled_by_kind(records: Iterable[dict[str, Any]]) -> dict[str, stats.ProcessAnova]:
    """`anova_by_kind` with its nodes pooled: what one run measured per `noise_kind`."""
    out: dict[str, stats.ProcessAnova] = defaultdict(stats.ProcessAnova)
    for (_, kind), anova in anova_by_kind(records).items():
        out[kind] = out[kind] + anova
    return dict(sorted(out.items()))


def sums_by_kind(records: Iterable[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """What a run measured of the noise between processes, per `noise_kind`, for run.json."""
    return {kind: dataclasses.asdict(a) for kind, a in pooled_by_kind(records).items()}


def from_dict(d: dict[str, Any] | None) -> stats.ProcessNoise | None:
    if not d or d.get("variance") is None:
        return None
    return stats.ProcessNoise(float(d["variance"]), float(d["df"]), str(d.get("source") or "recorded prior"))


def as_dict(noise: stats.ProcessNoise) -> dict[str, Any]:
    return {"variance": noise.variance, "df": noise.df, "source": noise.source}


def run_noise(records: list[dict[str, Any]], meta: dict[str, Any]) -> dict[tuple[str | None, str], stats.ProcessNoise]:
    """The process term per (node, `noise_kind`) of one run: what it measured, moderated by its prior."""
    measured = anova_by_kind(records)
    keys = set(measured) | {((rec.get("node") or {}).get("id"), record_kind(rec)) for rec in records}
    out = {}
    for key in keys:
        anova = measured.get(key)
        est = anova.estimate(f"measured in this run ({anova.processes} processes)") if anova else None
        out[key] = stats.moderate(est, run_prior(meta, key[1]))
    return out


def run_prior(meta: dict[str, Any], kind: str) -> stats.ProcessNoise:
    """The prior a run started from (recorded in its run.json), else the default."""
    return from_dict((meta.get("process_noise_prior") or {}).get(kind)) or default_prior(kind)


HISTORY_ENV = "DIA_BENCH_PROCESS_HISTORY"  # another history file: a machine shared by unlike workloads, tests


def history_path() -> Path:
    explicit = os.environ.get(HISTORY_ENV)
    return Path(explicit).expanduser().absolute() if explicit else cache_dir() / "process-noise.json"


def machine_id(machine: dict[str, Any]) -> str:
    """CPU model, cores and GPUs: what makes two runs the same machine for the history."""
    cpu = machine.get("cpu") or {}
    gpus = ",".join(g.get("name", "?") for g in machine.get("gpus") or []) or "no GPU"
    return f"{cpu.get('model')} | {usable_cores(cpu)} cores | {gpus}"


def _read_history() -> dict[str, Any]:
    try:
        return json.loads(history_path().read_text())
    except (OSError, ValueError):
        return {}


def _newest(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The newest runs that together reach HISTORY_DF degrees of freedom between processes (all, if fewer)."""
    kept, df = [], 0
    for run in reversed(runs):
        if df >= HISTORY_DF:
            break
        kept.append(run)
        df += run["anova"].get("df_between", 0)
    return kept[::-1]


def prior_for(machine: dict[str, Any], kind: str) -> stats.ProcessNoise:
    """The pooled estimate of this machine's stored runs, else the default prior."""
    runs = _newest((_read_history().get(machine_id(machine)) or {}).get(kind) or [])
    pooled = sum((stats.ProcessAnova(**r["anova"]) for r in runs), stats.ProcessAnova())
    est = pooled.estimate(f"this machine's history ({len(runs)} runs, {pooled.processes} processes)")
    if est is None or est.df < 2:
        return default_prior(kind)
    return stats.ProcessNoise(max(est.variance, MIN_PRIOR_VARIANCE), est.df, est.source)


def priors_for(machine: dict[str, Any], kinds: Iterable[str]) -> dict[str, dict[str, Any]]:
    return {kind: as_dict(prior_for(machine, kind)) for kind in sorted(set(kinds))}


def remember(run_dir: Path, records: list[dict[str, Any]], machine: dict[str, Any]) -> int:
    """Adds a finished run's measured sums of squares to the machine's history (once per run);
    returns how many device kinds it added."""
    history = _read_history()
    mine = history.setdefault(machine_id(machine), {})
    added = 0
    for kind, anova in pooled_by_kind(records).items():
        runs = [r for r in mine.setdefault(kind, []) if r.get("run") != str(run_dir.resolve())]
        runs.append({"run": str(run_dir.resolve()), "anova": dataclasses.asdict(anova)})
        mine[kind] = _newest(runs)
        added += 1
    if added:
        path = history_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(history, indent=1))
        tmp.replace(path)
    return added


def describe_runs(run_dirs: Iterable[Path]) -> list[str]:
    """A line per run and device kind with what it measured, then the pool per machine and kind."""
    from dia_bench.harness import rundir

    lines, pooled = [], defaultdict(stats.ProcessAnova)
    for d in run_dirs:
        records = list(rundir.records(d))
        machine = machine_id(rundir.read_meta(d).get("machine") or {})
        by_kind = pooled_by_kind(records)
        if not by_kind:
            lines.append(f"{d}: no configuration measured in two or more processes")
        for kind, anova in by_kind.items():
            pooled[(machine, kind)] = pooled[(machine, kind)] + anova
            lines.append(f"{d}: {kind}: {_said(anova)}")
    for (machine, kind), anova in sorted(pooled.items()):
        lines.append(f"pooled, {machine}, {kind}: {_said(anova)}")
    return lines


def _said(anova: stats.ProcessAnova) -> str:
    est = anova.estimate("")
    if est is None:
        return f"{anova.processes} processes: too few to estimate"
    return f"{est.sd_pct:.1f}% a process ({est.df:.1f} df, {anova.processes} processes)"
