"""Runs a suite: every cell in its own worker, one at a time, each record written as it finishes."""

from __future__ import annotations

import fnmatch
import sys
import time
from pathlib import Path
from typing import Any

from dia_bench.harness import process_noise, rundir
from dia_bench.harness.driver import overlap
from dia_bench.harness.driver.executors import Batch, Executor
from dia_bench.harness.driver.expand import PlannedCell, expand
from dia_bench.harness.driver.suite import Suite
from dia_bench.harness.errors import UsageError
from dia_bench.harness.record import now


def describe(p: PlannedCell) -> str:
    c = p.cell
    plugins = "+".join(c.plugins) or "baseline"
    end = {"baseline-end": " (end)", "baseline-mid": f" (again, {p.key.rsplit('@', 1)[-1]})",
           "cell-process": f" (process {p.key.rsplit('@p', 1)[-1]})"}.get(p.role, "")
    device = f"{c.device}({c.gpu_model})" if c.gpu_model else c.device
    return f"{c.preset}/{device}/{plugins}/{c.label or 'text'}/{c.seconds:g}s/b{c.batch}{end}"


def select(planned: list[PlannedCell], only: str | None) -> list[PlannedCell]:
    if not only:
        return planned
    return [p for p in planned if fnmatch.fnmatch(describe(p), only) or only in describe(p)]


def prepare_run_dir(out: Path, suite: Suite, resume: bool) -> None:
    if resume:
        meta = rundir.read_meta(out)
        if meta.get("suite", {}).get("text_hash") != suite.text_hash:
            raise UsageError(f"{out} holds a run of suite {meta.get('suite', {}).get('name')!r} "
                             f"({meta.get('suite', {}).get('text_hash')}); refusing to mix in {suite.path} "
                             f"({suite.text_hash}): use another --out")
        rundir.update_meta(out, finished_at=None)
        return
    if rundir.is_run_dir(out):
        raise UsageError(f"{out} already holds a run: pass --resume to finish it, or another --out")
    from pytest_benchmark.plugin import pytest_benchmark_generate_machine_info

    from dia_bench.harness import env

    machine = env.collect("cpu")
    rundir.create(out, {
        "suite": {"name": suite.name, "path": str(suite.path), "text_hash": suite.text_hash,
                  "text": suite.path.read_text()},
        "machine": machine,
        # Fixed when the run starts, so the run's intervals do not change as the history grows.
        "process_noise_prior": process_noise.priors_for(
            machine, [process_noise.noise_kind(d, p) for d in ("cpu", "cuda") for p in suite.presets]),
        # What `dia-bench export` hands to pytest-benchmark: its own view of the measuring machine.
        "pytest_benchmark_machine_info": pytest_benchmark_generate_machine_info(),
    })


def run_suite(suite: Suite, out: Path, resume: bool = False, only: str | None = None,
              quiet: bool = False, cold: bool = False, executor: Executor | None = None,
              retry_failed: bool = False) -> list[dict[str, Any]]:
    """Runs the suite's cells missing from `out` (and, with retry_failed, those that failed) on `executor`
    (local by default), writing each record as it arrives."""
    if executor is None:
        from dia_bench.harness.driver.executors.local import LocalExecutor

        executor = LocalExecutor()
    planned = select(expand(suite, this_machine=executor.runs_here), only)
    if not planned:
        raise UsageError(f"--only {only!r} matches no cell of suite {suite.name!r}")
    planned = executor.plan(planned)
    prepare_run_dir(out, suite, resume or retry_failed)
    if resume or retry_failed:
        for dest in rundir.set_aside_unreadable(out):
            print(f"dia-bench: an unreadable record was set aside as {dest}; its cell is measured again",
                  file=sys.stderr)
    done = rundir.done_keys(out)
    if retry_failed:
        done -= {r.get("key") for r in rundir.records(out) if r.get("status") == "failed"}
    todo = [p for p in planned if p.key not in done]
    # The compile cache outlives the run (harness/caches.py); --cold gives every cell an empty one.
    from dia_bench.harness.caches import COLD_ENV

    priors = rundir.read_meta(out).get("process_noise_prior") or {}
    for p in todo:
        p.cell.audio_dir = str((out / "audio").resolve())
        # Adaptive repeats stop on an interval that includes the noise between processes.
        p.cell.process_term = priors.get(process_noise.noise_kind(p.cell.device, p.cell.preset))
        # One fp32 history per condition for the whole run: every cell is judged on the same one.
        p.cell.fidelity_dir = str((out / "fidelity").resolve())
    batch = Batch(todo, timeout_s=suite.timeout_s, extra_env={COLD_ENV: "1"} if cold else {}, run_dir=out)
    records: list[dict[str, Any]] = []
    with _Display(len(planned), len(planned) - len(todo), quiet) as display:
        for p, rec in executor.run(batch, display):
            rec.update(key=p.key, role=p.role, description=describe(p), suite=suite.name, executor=executor.name)
            rundir.write_record(out, p.key, rec)
            records.append(rec)
            display.finish(rec)
    overlap.annotate(out)
    rundir.update_meta(out, finished_at=now(), cells_total=len(planned))
    if executor.runs_here:  # a cluster's nodes are other machines, with histories of their own
        every = list(rundir.records(out))
        process_noise.remember(out, every, rundir.read_meta(out).get("machine") or {})
        if sums := process_noise.sums_by_kind(every):
            rundir.update_meta(out, process_noise=sums)
    return records


class _Display:
    """Rich progress: the current cell and its phase, cells done / total, elapsed and ETA."""

    def __init__(self, total: int, already: int, quiet: bool):
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(stderr=True)
        self.quiet = quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(),
                                 console=self.console, disable=quiet, transient=False)
        self.task = self.progress.add_task("sweep", total=total, completed=already)
        self.current = ""
        self.t0 = time.monotonic()

    def __enter__(self) -> _Display:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def start(self, desc: str) -> None:
        self.current = desc
        self.progress.update(self.task, description=desc)

    def phase(self, info: dict[str, Any]) -> None:
        detail = f" {info['i']}/{info['n']}" if "i" in info else ""
        self.progress.update(self.task, description=f"{self.current}: {info['phase']}{detail}")

    def finish(self, rec: dict[str, Any]) -> None:
        self.progress.advance(self.task)
        if not self.quiet:
            status = rec["status"]
            tail = f"RTF {rec['rtf']:.3f}" if status == "ok" else rec.get("reason") or ""
            self.progress.console.print(f"[{'green' if status == 'ok' else 'yellow'}]{status}[/] "
                                        f"{rec['description']}: {tail}")
