"""The local executor: one cell at a time on this machine, in plan order (dia-bench's behaviour before Ray)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from dia_bench.harness.driver.executors import Batch, Display
from dia_bench.harness.driver.expand import PlannedCell
from dia_bench.harness.driver.launcher import run_isolated
from dia_bench.harness.record import not_ok


class LocalExecutor:
    name = "local"
    runs_here = True

    def plan(self, planned: list[PlannedCell]) -> list[PlannedCell]:
        return planned

    def run(self, batch: Batch, display: Display) -> Iterator[tuple[PlannedCell, dict[str, Any]]]:
        from dia_bench.harness.driver.sweep import describe

        for p in batch.cells:
            display.start(describe(p))
            if p.skip_reason:
                rec = not_ok(p.cell, "skipped", p.skip_reason)
            else:
                rec = run_isolated(p.cell, timeout_s=batch.timeout_for(p), on_progress=display.phase,
                                   extra_env=batch.extra_env)
            yield p, rec

    def close(self) -> None:
        pass
