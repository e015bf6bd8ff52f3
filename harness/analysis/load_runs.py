"""Load runs (`dia-bench load`'s load.json) read back: what a run held, two runs compared rate by rate, and
one configuration's runs in time order.

A quantile's interval in load.json covers the requests' own spread within one process. Two processes of
one configuration also differ as a whole (a process term of 10-30% on these machines, see
harness/process_noise.py), so a change is called only where the two intervals stay apart by more than
that term allows: the lower side of one over the upper side of the other, on the log scale, beyond
t(df) x sqrt(2) x the term. Where a side is unbounded (too few requests, or past the timeout), nothing
is called on it.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench.harness import process_noise, rundir, stats
from dia_bench.harness.errors import UsageError

LOAD_FILE = "load.json"
KIND = "dia-bench load"
# What compare, history and recommend read of each rate: the quantiles a deployment is judged on.
MEASURES = (("ttfa_s", "p50", "p50 TTFA"), ("ttfa_s", "p95", "p95 TTFA"), ("latency_s", "p50", "p50 latency"),
            ("latency_s", "p95", "p95 latency"))
# The configuration fields that make two load runs one line: a change to any of these is another experiment.
IDENTITY = ("target", "url", "preset", "device", "plugins", "seconds", "texts", "max_batch", "max_wait_s",
            "chunk_frames")


def is_load_dir(path: Path) -> bool:
    return (path / LOAD_FILE).is_file()


def load_dir(path: str | Path) -> Path | None:
    """The load run a command-line path names (its directory, or its load.json), else None."""
    path = Path(path)
    if path.name == LOAD_FILE and path.is_file():
        path = path.parent
    return path if is_load_dir(path) else None


@dataclass(frozen=True)
class LoadRun:
    """One load.json with the names the reports use."""

    path: Path
    doc: dict[str, Any]

    @property
    def configuration(self) -> dict[str, Any]:
        return self.doc.get("configuration") or {}

    @property
    def machine(self) -> dict[str, Any]:
        return self.doc.get("machine") or {}

    @property
    def machine_name(self) -> str:
        m = self.machine
        return m.get("device_name") or (m.get("cpu") or {}).get("model") or "unknown machine"

    @property
    def device(self) -> str:
        return self.configuration.get("device") or ("http" if self.configuration.get("target") == "http" else "cpu")

    @property
    def preset(self) -> str | None:
        return self.configuration.get("preset")

    @property
    def plugins(self) -> str:
        """As a sweep's cells name them: the resolved specs joined by `+`, or `baseline`."""
        return "+".join(self.configuration.get("plugins") or []) or "baseline"

    @property
    def served(self) -> str:
        """What the load was pointed at: the engine with its plugins, or a URL."""
        c = self.configuration
        if c.get("target") == "http":
            return f"the server at {c.get('url')}"
        return f"{c.get('preset')} {self.plugins} on {c.get('device')}"

    @property
    def includes(self) -> str:
        """What each figure includes, in words: codec, chunking, batching, network."""
        i = self.doc.get("includes") or {}
        parts = ["codec decoded" if i.get("codec") else "no codec"]
        if i.get("chunk_frames"):
            first = i.get("first_chunk_frames") or i["chunk_frames"]
            parts.append(f"audio in chunks of {i['chunk_frames']} frames"
                         + (f", the first of {first}" if first != i["chunk_frames"] else ""))
        if i.get("batch_policy"):
            parts.append(f"batches of {i['batch_policy']}")
        parts.append(i["network"] if isinstance(i.get("network"), str) else
                     "over HTTP" if i.get("network") else "in process, no network")
        return "; ".join(parts)

    @property
    def texts(self) -> str:
        return ",".join(self.configuration.get("texts") or {}) or "?"

    @property
    def description(self) -> str:
        c = self.configuration
        return f"{self.served}, texts {self.texts}, {c.get('seconds', '?'):g} s of audio a request"

    @property
    def identity(self) -> tuple[Any, ...]:
        c = self.configuration
        return tuple(json.dumps(c.get(k), sort_keys=True) for k in IDENTITY)

    @property
    def started_at(self) -> pd.Timestamp:
        value = self.doc.get("started_at")
        ts = pd.to_datetime(value, utc=True, errors="coerce") if value else pd.NaT
        if pd.isna(ts):  # written before load.json said when: the file's own time is the best left
            ts = pd.Timestamp(os.path.getmtime(self.path / LOAD_FILE), unit="s", tz="UTC")
        return ts

    @property
    def commit(self) -> str:
        return ((self.machine.get("software") or {}).get("git_commit") or "?")[:10]

    @property
    def max_rate(self) -> dict[str, Any]:
        return self.doc.get("max_rate") or {}

    @property
    def target_text(self) -> str:
        m = self.max_rate
        how = "its 95% upper bound" if m.get("criterion") == "upper-bound" else "the estimate"
        return f"p{(m.get('quantile') or 0.95) * 100:g} TTFA <= {m.get('target_ttfa_s', '?'):g} s ({how})"

    @property
    def held(self) -> str:
        rps = self.max_rate.get("max_rps")
        return f"{rps:g} req/s" if rps is not None else "none of the rates tried"

    def summaries(self) -> dict[float, dict[str, Any]]:
        return {float(r["summary"]["offered_rps"]): r["summary"] for r in self.doc.get("rates") or []}

    @property
    def process_prior(self) -> stats.ProcessNoise:
        """The process term the run was made under (stored with it), else the preset's default."""
        stored = process_noise.from_dict(self.doc.get("process_prior"))
        return stored or process_noise.default_prior(process_noise.noise_kind(self.device, self.preset or ""))

    @property
    def weights(self) -> str | None:
        return ((self.configuration.get("weights") or {}).get("source"))


def read(path: Path) -> LoadRun:
    """A load directory (or its load.json); a one-line UsageError for anything else."""
    path = load_dir(path) or Path(path)
    file = path / LOAD_FILE
    try:
        doc = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path} has no {LOAD_FILE}; give a directory written by `dia-bench load --out`") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"{file} is unreadable ({exc}); run `dia-bench load` again into a new --out") from None
    if not isinstance(doc, dict) or doc.get("kind") != KIND or not isinstance(doc.get("rates"), list):
        raise UsageError(f"{file} is not a dia-bench load record; give a directory written by `dia-bench load`")
    return LoadRun(path, doc)


def find(paths: Iterable[str | Path]) -> tuple[list[Path], list[Path]]:
    """Run directories and load directories named directly or found below folders, each once, in the
    order met; a path that holds neither is a UsageError."""
    runs: dict[Path, None] = {}
    loads: dict[Path, None] = {}
    for p in paths:
        path = Path(p)
        if path.is_file() and path.name in (rundir.RUN_FILE, LOAD_FILE):
            path = path.parent
        if not path.exists():
            raise UsageError(f"{path} does not exist; give run or load directories, or a folder that holds them")
        if not path.is_dir():
            raise UsageError(f"{path} is a file, not a run directory; give run or load directories, or a folder "
                             "that holds them")
        found = 0
        for root, dirs, _ in os.walk(path):
            here = Path(root)
            if rundir.is_run_dir(here) or is_load_dir(here):
                (runs if rundir.is_run_dir(here) else loads).setdefault(here.resolve(), None)
                found += 1
                dirs.clear()
            else:
                dirs.sort()
        if not found:
            raise UsageError(f"{path} holds no dia-bench run directory (no {rundir.RUN_FILE}, or {LOAD_FILE} of a "
                             "load run, in it or below it); give directories written by `dia-bench sweep` or "
                             "`dia-bench load`")
    return list(runs), list(loads)


def _log(x: float | None) -> float | None:
    return None if x is None or x <= 0 or math.isinf(x) else math.log(x)


def band(base: LoadRun, new: LoadRun) -> float:
    """How far apart, on the log scale, two processes' intervals may stand by the process term alone."""
    a, b = base.process_prior, new.process_prior
    variance, df = max((a.variance, a.df), (b.variance, b.df))
    return stats.t_quantile(1 - (1 - stats.CONFIDENCE) / 2, df) * math.sqrt(2 * variance)


def judge(base: dict[str, Any], new: dict[str, Any], margin: float) -> str:
    """`slower`, `faster` or `within noise` for one quantile's estimates (load.json's dicts), or why not."""
    if base.get("censored") or new.get("censored"):
        if base.get("censored") and not new.get("censored") and new.get("value") is not None:
            return "faster"  # the base timed out at this quantile and the new one answers
        if new.get("censored") and not base.get("censored"):
            return "slower"
        return "both past the timeout"
    if base.get("value") is None or new.get("value") is None:
        return "not measured"
    lo_new, hi_new, lo_base, hi_base = (_log(new.get("low")), _log(new.get("high")), _log(base.get("low")),
                                        _log(base.get("high")))
    if lo_new is not None and hi_base is not None and lo_new - hi_base > margin:
        return "slower"
    if lo_base is not None and hi_new is not None and lo_base - hi_new > margin:
        return "faster"
    return "within noise"


def _failed(summary: dict[str, Any]) -> int:
    return int(summary["requests"]) - int((summary.get("counts") or {}).get("ok", 0))


def compare(base: LoadRun, new: LoadRun) -> pd.DataFrame:
    """One row per rate both runs offered and per measure in MEASURES: the two estimates with their
    intervals, the change of the estimate, and the verdict beyond both intervals and the process term."""
    margin = band(base, new)
    a, b = base.summaries(), new.summaries()
    rows = []
    for rate in sorted(set(a) & set(b)):
        for measure, p, label in MEASURES:
            e_a, e_b = a[rate]["quantiles"][measure][p], b[rate]["quantiles"][measure][p]
            change = (e_b["value"] / e_a["value"] - 1) * 100 \
                if e_a.get("value") and e_b.get("value") is not None else None
            rows.append({"rate": rate, "measure": label, "base": e_a.get("value"), "base_low": e_a.get("low"),
                         "base_high": e_a.get("high"), "base_censored": bool(e_a.get("censored")),
                         "new": e_b.get("value"), "new_low": e_b.get("low"), "new_high": e_b.get("high"),
                         "new_censored": bool(e_b.get("censored")), "change_pct": change,
                         "verdict": judge(e_a, e_b, margin), "base_failed": _failed(a[rate]),
                         "new_failed": _failed(b[rate])})
    return pd.DataFrame(rows)


def differences(base: LoadRun, new: LoadRun) -> list[str]:
    """What besides the code differs between two load runs: the configuration, the target, the machine."""
    from dia_bench.harness.analysis.comparison import differences as machine_differences

    out = [f"{k}: {base.configuration.get(k)} -> {new.configuration.get(k)}" for k in IDENTITY
           if k not in ("texts",) and base.configuration.get(k) != new.configuration.get(k)]
    if base.configuration.get("texts") != new.configuration.get("texts"):
        out.append(f"texts: {base.texts} -> {new.texts}")
    if base.target_text != new.target_text:
        out.append(f"target: {base.target_text} -> {new.target_text}")
    return out + machine_differences(base.machine, new.machine)


def gate(table: pd.DataFrame, fail_on: str, threshold_pct: float) -> list[str]:
    """What fails `compare --fail-on`: a quantile slower (or, with any-change, changed) beyond noise by
    more than the threshold, or more requests failing at a rate. A lower rate held is reported, not
    gated: one step of the search can move by chance, and a real loss shows in the rows at that rate."""
    failing = []
    for _, r in table.iterrows():
        where = f"{r['measure']} at {r['rate']:g} req/s"
        called = r["verdict"] == "slower" or (fail_on == "any-change" and r["verdict"] == "faster")
        unsized = r["change_pct"] is None or pd.isna(r["change_pct"])  # past the timeout: no ratio, yet real
        if called and (unsized or abs(r["change_pct"]) > threshold_pct):
            shown = "past the timeout" if r["new_censored"] or r["base_censored"] else f"{r['change_pct']:+.1f}%"
            failing.append(f"{where}: {r['verdict']} ({shown})")
    if not table.empty:  # each rate's counts, as `compare` put them on its rows
        for rate, r in table.groupby("rate", sort=True).first().iterrows():
            if r["new_failed"] > r["base_failed"]:
                failing.append(f"{rate:g} req/s: {r['new_failed']} request(s) did not complete "
                               f"(before: {r['base_failed']})")
    return failing


def lines(runs: Iterable[LoadRun]) -> list[list[LoadRun]]:
    """Runs of one configuration on one machine, in time order: the load side of `dia-bench history`."""
    from dia_bench.harness.analysis.comparison import machine_key

    groups: dict[tuple[Any, ...], list[LoadRun]] = {}
    for run in runs:
        groups.setdefault((machine_key(run.machine), run.identity), []).append(run)
    return [sorted(g, key=lambda r: r.started_at) for g in groups.values()]


def step_text(before: LoadRun, after: LoadRun) -> str:
    """What changed beyond noise from one run of a line to the next, or `no change beyond noise`."""
    table = compare(before, after)
    moved = [f"{r['measure']} at {r['rate']:g} req/s {r['verdict']} ({r['change_pct']:+.0f}%)"
             if r["change_pct"] is not None and not pd.isna(r["change_pct"]) else f"{r['measure']} at "
             f"{r['rate']:g} req/s {r['verdict']}" for _, r in table.iterrows() if r["verdict"] in ("slower", "faster")]
    if before.max_rate.get("max_rps") != after.max_rate.get("max_rps") and before.target_text == after.target_text:
        moved.insert(0, f"held {before.held} -> {after.held}")
    return "; ".join(moved) or "no change beyond noise"


def idle_ttfa(run: LoadRun) -> dict[str, Any] | None:
    """The p50 time to first audio at the lowest rate offered: what one listener waits on a quiet server."""
    summaries = run.summaries()
    if not summaries:
        return None
    low = min(summaries)
    e = summaries[low]["quantiles"]["ttfa_s"]["p50"]
    return {"rate": low, **e}
