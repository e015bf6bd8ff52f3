"""The isolated worker: runs one cell in a fresh Python process and writes its record.

    python -m dia_bench.harness.worker CELL.json RECORD.json

Nothing here imports torch before the plugins' process set-up has run. A worker forked from the
launcher's fork server has torch imported already: where that set-up changes what imports read, it
becomes a fresh interpreter first (harness/worker/forked.py). Progress goes to stderr as
`@dia-bench {json}` lines for the parent's display.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from dia_bench.harness.cell import Cell
from dia_bench.harness.devices import check_device, gpu_model_mismatch
from dia_bench.harness.errors import UsageError
from dia_bench.harness.jsonio import read_json, write_json_atomic
from dia_bench.harness.record import PROGRESS_PREFIX, base_record, exception_reason, now

FAULT_ENV = "DIA_BENCH_INJECT_FAULT"  # abort | exit | hang | kill | raise: makes a worker die, for tests


def progress(phase: str, **info: Any) -> None:
    print(PROGRESS_PREFIX + json.dumps({"phase": phase, **info}), file=sys.stderr, flush=True)


def _inject_fault() -> None:
    fault = os.environ.get(FAULT_ENV)
    if not fault:
        return
    import signal

    if fault == "abort":
        os.abort()
    if fault == "exit":
        os._exit(3)
    if fault == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang":
        time.sleep(3600)
    if fault == "raise":
        raise RuntimeError("injected fault")


def run_cell(cell: Cell, argv: list[str] | None = None) -> dict[str, Any]:
    from dia_bench.harness.worker import forked
    from dia_bench.optimizations.registry import resolve, split_spec

    rec = base_record(cell)
    cell.validate()  # the parent checked already; a cell file written by hand meets the same rules
    plan = resolve(cell.plugins, cell.device)
    for step in plan.steps:
        os.environ.update(step.plugin.process_env(step.value))
    if argv is not None:
        forked.replace_if_imports_differ(argv)
    rec["worker_start"] = forked.how_started()

    import torch

    from dia_bench.harness import env as envmod
    from dia_bench.harness.worker.measure import measure_pipeline

    rec["plugins"] = plan.specs
    # A bare spec runs the fastest variant that runs correctly on this machine: say which it became here.
    bare = {n for n, v in map(split_spec, cell.plugins) if v is None}
    rec["plugin_defaults"] = {step.plugin.name: step.spec for step in plan.steps
                              if step.plugin.name in bare and step.value is not None}
    # A local sweep's driver checked this machine already; on a Ray node nobody has until now.
    try:
        check_device(cell.device)
    except UsageError as exc:
        rec.update(status="skipped", reason=str(exc), env=envmod.collect("cpu"))
        return rec
    reasons = plan.unavailable(cell.device)
    if mismatch := gpu_model_mismatch(cell.device, cell.gpu_model):
        reasons.append(mismatch)
    if reasons:
        rec.update(status="skipped", reason="; ".join(reasons), env=envmod.collect(cell.device))
        return rec
    for step in plan.steps:
        step.plugin.configure_torch(step.value)
    index = torch.device(cell.device).index
    if cell.device.startswith("cuda") and index is not None:
        # cuda:N only: set_device refuses a device without an index (seen on torch 2.11 with an H200).
        torch.cuda.set_device(index)
    rec.update(measure_pipeline(cell, plan, progress, _inject_fault))
    rec["env"] = envmod.collect(cell.device)
    rec["status"] = "ok"
    return rec


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cell_path, record_path = argv
    cell = Cell.from_dict(read_json(cell_path))
    try:
        rec = run_cell(cell, argv)
        code = 0
    except Exception as exc:
        reason, tb = exception_reason(exc)
        rec = base_record(cell)
        rec.update(status="failed", reason=reason, traceback=tb)
        code = 1
    rec["finished_at"] = now()
    write_json_atomic(Path(record_path), rec)
    return code


if __name__ == "__main__":
    sys.exit(main())
