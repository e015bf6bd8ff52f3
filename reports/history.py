"""`dia-bench history`: every configuration followed across runs, in time order, with its steps.

A line (a series) is one configuration (preset, device, plugins, text, length, batch) on one machine
(`comparison.MACHINE`): runs on two machines are never one line. Each run of a line carries its date,
commit and versions; `changepoints` finds where the line changed level, and each step names the first
run after it, the commits on either side and what else changed between those runs.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench import harness
from dia_bench.harness import rundir, stats
from dia_bench.harness.analysis import changepoints, comparison, load_runs, results
from dia_bench.reports import figures

# Charts cost a second and a few hundred kB each: configurations with a step come first, then each
# machine's baselines, then the rest, up to this many.
MAX_CHARTS = 24
COMMIT_CHARS = 12
SUBJECT_CHARS = 80
# A software stack (noxfile's bench-stack sessions) is a configuration chosen on purpose, like a plugin:
# its runs are a line of their own, not a change of versions within another line.
SERIES_KEYS = ("machine", "stack", "preset", "device", "plugins", "text_label", "seconds", "batch")


@dataclass
class Run:
    path: Path
    started_at: pd.Timestamp
    meta: dict[str, Any]
    order: int = 0

    @property
    def machine(self) -> dict[str, Any]:
        return self.meta.get("machine") or {}

    @property
    def commit(self) -> str:
        full = str((self.machine.get("software") or {}).get("git_commit") or "-")
        # Measured from uncommitted code: the hash alone would claim more than it is.
        return full[:COMMIT_CHARS] + ("-dirty" if full.endswith("-dirty") else "")

    @property
    def subject(self) -> str:
        subject = str((self.machine.get("software") or {}).get("git_subject") or "")
        return subject if len(subject) <= SUBJECT_CHARS else subject[:SUBJECT_CHARS - 3] + "..."

    @property
    def date(self) -> str:
        return "-" if pd.isna(self.started_at) else self.started_at.strftime("%Y-%m-%d %H:%M UTC")

    def versions(self) -> dict[str, Any]:
        return {name: get(self.machine) for name, get in comparison.VERSIONS.items()}


@dataclass
class Point:
    run: Run
    status: str
    samples: list[float]
    rtf: float | None = None
    low: float | None = None
    high: float | None = None
    peak_rss_mb: float | None = None
    peak_vram_mb: float | None = None
    weights: str | None = None


@dataclass
class StepInfo:
    step: changepoints.Step
    before: Point
    after: Point
    changed: list[str]


@dataclass
class Series:
    machine: str
    description: str
    is_baseline: bool
    points: list[Point] = field(default_factory=list)
    steps: list[StepInfo] = field(default_factory=list)


def _timestamp(value: Any) -> pd.Timestamp:
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return pd.NaT
    if pd.isna(ts):
        return pd.NaT
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def read_runs(run_dirs: Iterable[Path]) -> list[Run]:
    """The runs in time order (by their start; a run without one goes last)."""
    runs = []
    for d in run_dirs:
        meta = rundir.read_meta(Path(d))
        runs.append(Run(Path(d), _timestamp(meta.get("started_at")), meta))
    runs.sort(key=lambda r: (pd.isna(r.started_at), r.started_at if not pd.isna(r.started_at) else 0, str(r.path)))
    for i, r in enumerate(runs):
        r.order = i + 1
    return runs


def _description(r: pd.Series) -> str:
    stack = f" (stack {r['stack']})" if r.get("stack") else ""
    return (f"{r['preset']}/{r['device']}/{r['plugins']}/{r['text_label'] or 'text'}/"
            f"{r['seconds']:g}s/b{r['batch']}{stack}")


def _point(run: Run, r: pd.Series) -> Point:
    samples = results.rtf_samples(r) if r["status"] == "ok" else []
    point = Point(run, r["status"], samples, peak_rss_mb=r["peak_rss_mb"], peak_vram_mb=r["peak_vram_mb"],
                  weights=r["weights_source"])
    if samples:
        # The run's own between-process term: one run's point is one process of its configuration.
        ci = stats.location_ci(samples, process=results.process_term(r))
        point.rtf, point.low, point.high = ci["center"], ci["low"], ci["high"]
    return point


def _changed(before: Point, after: Point) -> list[str]:
    out = comparison.differences(before.run.machine, after.run.machine, comparison.VERSIONS)
    if before.weights != after.weights:
        out.append(f"weights: {before.weights} -> {after.weights}")
    return out


def build(run_dirs: Iterable[Path], min_effect: float = changepoints.MIN_EFFECT) -> tuple[list[Run], list[Series]]:
    """The runs in time order and every configuration's line across them, with its steps."""
    runs = read_runs(run_dirs)
    by_path = {str(r.path): r for r in runs}
    df = results.load([r.path for r in runs], with_stats=False)
    if df.empty:
        return runs, []
    # The baseline measured again within a run checks the machine; it is not another run of the line.
    df = df[df["status"].isin(["ok", "failed"]) & ~df["role"].isin(results.REPEATED_BASELINE_ROLES)].copy()
    df["order"] = [by_path[p].order for p in df["run"]]
    df["machine"] = [comparison.machine_label(by_path[p].machine) for p in df["run"]]
    series = []
    for _, g in df.sort_values("order").groupby(list(SERIES_KEYS), dropna=False, sort=True):
        first = g.iloc[0]
        line = Series(machine=first["machine"], description=_description(first),
                      is_baseline=first["plugins"] == "baseline",
                      points=[_point(by_path[r["run"]], r) for _, r in g.iterrows()])
        measured = [p for p in line.points if p.samples]
        for step in changepoints.detect([p.samples for p in measured], min_effect=min_effect):
            before, after = measured[step.before], measured[step.index]
            line.steps.append(StepInfo(step, before, after, _changed(before, after)))
        series.append(line)
    # Steps first, then baselines, then the rest: the order charts are drawn in.
    series.sort(key=lambda s: (not s.steps, not s.is_baseline, s.machine, s.description))
    return runs, series


def step_text(s: StepInfo) -> str:
    st = s.step
    return f"{st.change_pct:+.1f}% ({figures.interval(st.ratio, st.low, st.high, '.3f')} x the time before)"


def commit_range(s: StepInfo) -> str:
    return f"{s.before.run.commit}..{s.after.run.commit}"


def _run_row(r: Run) -> dict[str, Any]:
    v = r.versions()
    return {"order": r.order, "date": r.date, "commit": r.commit, "subject": r.subject,
            "machine": comparison.machine_label(r.machine), "torch": v["torch"], "transformers": v["transformers"],
            "dia_bench": v["dia-bench"], "driver": v["driver"] or "-", "path": str(r.path)}


def _step_row(line: Series, s: StepInfo) -> dict[str, Any]:
    return {"machine": line.machine, "description": line.description, "run": s.after.run.order,
            "date": s.after.run.date, "commits": commit_range(s), "subject": s.after.run.subject,
            "change": step_text(s), "slower": s.step.ratio > 1,
            "segments": f"{s.step.runs_before} run(s) before, {s.step.runs_after} after",
            "changed": "; ".join(s.changed) or "nothing recorded (the code, or the machine's state)"}


def _steps_text(line: Series) -> str:
    n = changepoints.measured_runs([p.samples for p in line.points])
    if n < changepoints.MIN_RUNS:
        return f"- ({n} run(s) with an interval; steps need {changepoints.MIN_RUNS})"
    return str(len(line.steps))


def _series_row(i: int, line: Series) -> dict[str, Any]:
    measured = [p for p in line.points if p.samples]
    first, last = (measured[0], measured[-1]) if measured else (None, None)
    return {"id": f"s{i}", "machine": line.machine, "description": line.description, "runs": len(line.points),
            "failed": sum(p.status == "failed" for p in line.points),
            "first": figures.interval(first.rtf, first.low, first.high) if first else "-",
            "latest": figures.interval(last.rtf, last.low, last.high) if last else "-",
            "latest_run": last.run.order if last else "-", "steps": _steps_text(line), "chart": None,
            "points": [{"run": p.run.order, "date": p.run.date, "commit": p.run.commit, "status": p.status,
                        "rtf": figures.interval(p.rtf, p.low, p.high) if p.samples else p.status,
                        "rss": figures.number(p.peak_rss_mb, ".0f"), "vram": figures.number(p.peak_vram_mb, ".0f")}
                       for p in line.points]}


def idle_ttfa_text(run: load_runs.LoadRun) -> str:
    """The quiet-server time to first audio (`load_runs.idle_ttfa`) with its interval and rate, as the
    history and the recommendations show it."""
    e = load_runs.idle_ttfa(run)
    if e is None:
        return "-"
    if e.get("censored"):
        return f">timeout at {e['rate']:g} req/s"
    return f"{figures.interval(e['value'], e['low'], e['high'], '.2f', ' s')} at {e['rate']:g} req/s"


def load_lines(load_dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """Load runs (`dia-bench load`) as lines: one configuration, target and machine in time order, each run
    with the rate it held, its quiet-server time to first audio, and what moved beyond noise since the run
    before (`load_runs.compare`)."""
    out = []
    for line in load_runs.lines(load_runs.read(Path(d)) for d in load_dirs):
        first = line[0]
        points = []
        for i, run in enumerate(line):
            points.append({"date": run.started_at.strftime("%Y-%m-%d %H:%M UTC"), "commit": run.commit,
                           "path": str(run.path), "held_rps": run.max_rate.get("max_rps"), "held": run.held,
                           "idle_ttfa": idle_ttfa_text(run),
                           "since_before": load_runs.step_text(line[i - 1], run) if i else "-"})
        out.append({"machine": comparison.machine_label(first.machine), "description": first.description,
                    "includes": first.includes, "target": line[-1].target_text, "runs": len(line),
                    "first_held": first.held, "latest_held": line[-1].held,
                    "changes": sum(p["since_before"] not in ("-", "no change beyond noise") for p in points),
                    "points": points})
    return out


def context(run_dirs: Iterable[Path], min_effect: float = changepoints.MIN_EFFECT,
            load_dirs: Iterable[Path] = ()) -> dict[str, Any]:
    from dia_bench.reports import charts

    runs, series = build(run_dirs, min_effect)
    rows = [_series_row(i, line) for i, line in enumerate(series)]
    # A line that never measured (every run failed) has nothing to draw.
    drawn = [(row, line) for row, line in zip(rows, series, strict=True) if any(p.samples for p in line.points)]
    for row, line in drawn[:MAX_CHARTS]:
        row["chart"] = charts.history(line)
    dates = [r.started_at for r in runs if not pd.isna(r.started_at)]
    return {
        "title": "dia-bench history",
        "generated": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "version": harness.__version__,
        "runs": [_run_row(r) for r in runs],
        "span": f"{min(dates):%Y-%m-%d} to {max(dates):%Y-%m-%d}" if dates else "no dates recorded",
        "machines": sorted({comparison.machine_label(r.machine) for r in runs}),
        "steps": [_step_row(line, s) for line in series for s in line.steps],
        "series": rows,
        "charted": min(len(drawn), MAX_CHARTS),
        "max_charts": MAX_CHARTS,
        "min_effect_pct": min_effect * 100,
        "min_runs": changepoints.MIN_RUNS,
        "statistics": stats.METHOD,
        "load_lines": load_lines(load_dirs),
    }


def render_html(run_dirs: Iterable[Path], min_effect: float = changepoints.MIN_EFFECT,
                load_dirs: Iterable[Path] = ()) -> str:
    from dia_bench.reports.pages import environment

    return environment().get_template("history.html.j2").render(**context(run_dirs, min_effect, load_dirs))


def md_cell(value: Any) -> str:
    """Text from a run inside a Markdown table cell: no column breaks, no live HTML."""
    text = str(value).replace("\r", " ").replace("\n", " ")
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _load_markdown(lines: list[dict[str, Any]]) -> list[str]:
    out = ["", "## Under load", "",
           "Load runs (`dia-bench load`) of one configuration on one machine, in time order: the rate each held "
           "and the time to first audio on a quiet server; a change is named where it stands beyond both runs' "
           "intervals and the noise between two processes.", ""]
    for line in lines:
        out += [f"### {md_cell(line['description'])}", "",
                f"{md_cell(line['machine'])}; {md_cell(line['includes'])}; held at {md_cell(line['target'])}", "",
                "| date | commit | held | p50 TTFA [95% CI] | since the run before |", "|---|---|---|---|---|"]
        out += ["| " + " | ".join(md_cell(p[k]) for k in ("date", "commit", "held", "idle_ttfa", "since_before"))
                + " |" for p in line["points"]]
        out.append("")
    return out


def render_markdown(run_dirs: Iterable[Path], min_effect: float = changepoints.MIN_EFFECT,
                    load_dirs: Iterable[Path] = ()) -> str:
    loads = load_lines(load_dirs)
    runs, series = build(run_dirs, min_effect)
    if not runs:
        return "\n".join(["# dia-bench history", *_load_markdown(loads)]).rstrip("\n") + "\n"
    machines = sorted({comparison.machine_label(r.machine) for r in runs})
    lines = ["# dia-bench history", "",
             f"- {len(runs)} run(s) on {len(machines)} machine(s), {len(series)} configuration line(s); "
             "a line is one configuration on one machine",
             f"- a step needs a change of at least {min_effect * 100:g}% between segments of runs, significant "
             "beyond both the repeats' noise and the run-to-run noise (95%, corrected for the splits tried), "
             f"and a line of at least {changepoints.MIN_RUNS} runs with an interval", ""]
    steps = [(line, s) for line in series for s in line.steps]
    lines += ["## Change points", ""]
    if steps:
        lines += ["| machine | configuration | first run after | commits | change [95% CI] | what else changed |",
                  "|---|---|---|---|---|---|"]
        for line, s in steps:
            row = _step_row(line, s)
            lines.append("| " + " | ".join(md_cell(v) for v in (
                row["machine"], row["description"], f"#{row['run']} {row['date']} {row['subject']}",
                row["commits"], row["change"], row["changed"])) + " |")
    else:
        lines.append("No step in any configuration.")
    lines += ["", "## Configurations", "", "| machine | configuration | runs | first RTF | latest RTF | steps |",
              "|---|---|---|---|---|---|"]
    for i, line in enumerate(series):
        row = _series_row(i, line)
        lines.append("| " + " | ".join(md_cell(v) for v in (
            row["machine"], row["description"], row["runs"], row["first"], row["latest"], row["steps"])) + " |")
    if loads:
        lines += _load_markdown(loads)
    return "\n".join(lines).rstrip("\n") + "\n"


def as_json(run_dirs: Iterable[Path], min_effect: float = changepoints.MIN_EFFECT,
            load_dirs: Iterable[Path] = ()) -> dict[str, Any]:
    """`history --format json`: each line's runs with their intervals and steps, and the load lines."""
    runs, series = build(run_dirs, min_effect)

    def point(p: Point) -> dict[str, Any]:
        return {"run": p.run.order, "date": p.run.date, "commit": p.run.commit, "status": p.status,
                "rtf": p.rtf, "rtf_low": p.low, "rtf_high": p.high, "peak_rss_mb": p.peak_rss_mb,
                "peak_vram_mb": p.peak_vram_mb, "weights": p.weights}

    return {"format": "dia-bench-history", "format_version": 1, "kind": "history",
            "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "dia_bench": harness.__version__, "statistics": stats.METHOD, "min_effect_pct": min_effect * 100,
            "runs": [_run_row(r) for r in runs],
            "series": [{"machine": line.machine, "description": line.description,
                        "points": [point(p) for p in line.points],
                        "steps": [_step_row(line, s) for s in line.steps]} for line in series],
            "load_lines": load_lines(load_dirs)}


def write(run_dirs: Iterable[Path], output: Path, markdown: bool = False,
          min_effect: float = changepoints.MIN_EFFECT, load_dirs: Iterable[Path] = ()) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    render = render_markdown if markdown else render_html
    output.write_text(render(list(run_dirs), min_effect, list(load_dirs)), encoding="utf-8")
    return output
