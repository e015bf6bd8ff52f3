"""Executors: where a sweep's cells run. The sweep hands them cells and writes each record as it arrives.

`local` runs one cell at a time on this machine (the default); `ray` spreads them over a Ray cluster.
Both run every cell through dia_bench.harness.driver.launcher.run_isolated, so a cell's process, timeout and failure
records are the same wherever it runs.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from dia_bench.harness.driver.expand import PlannedCell
from dia_bench.harness.errors import UsageError

EXECUTORS = ("local", "ray")


@dataclass
class Batch:
    """The cells still to run and how: the same for every executor."""

    cells: list[PlannedCell]
    timeout_s: float
    extra_env: dict[str, str] = field(default_factory=dict)
    run_dir: Path | None = None  # where the records go (a Ray node checks whether it sees it)

    def timeout_for(self, planned: PlannedCell) -> float:
        """The cell's own limit where its suite gave one, else the suite's."""
        return planned.timeout_s if planned.timeout_s is not None else self.timeout_s


class Display(Protocol):
    def start(self, desc: str) -> None: ...
    def phase(self, info: dict[str, Any]) -> None: ...


class Executor(Protocol):
    name: str
    # True: cells run on this machine, so the driver skips what it cannot run before anything starts;
    # False: each node's worker says what its node lacks.
    runs_here: bool

    def plan(self, planned: list[PlannedCell]) -> list[PlannedCell]:
        """The cells this executor will run for a suite's plan (ray: each node's own baselines)."""
        ...

    def run(self, batch: Batch, display: Display) -> Iterator[tuple[PlannedCell, dict[str, Any]]]:
        """Each cell's record as soon as it finishes, in whatever order they finish."""
        ...

    def close(self) -> None: ...


def get(name: str, address: str | None = None) -> Executor:
    if name == "local":
        if address:
            raise UsageError("--address is for --executor ray; drop it, or add --executor ray")
        from dia_bench.harness.driver.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        try:
            import ray  # noqa: F401
        except ImportError:
            raise UsageError("--executor ray needs Ray, which is not installed: pip install 'dia-bench[ray]'") from None
        from dia_bench.harness.driver.executors.raycluster import RayExecutor

        return RayExecutor(address)
    raise UsageError(f"unknown executor {name!r}: choose one of {', '.join(EXECUTORS)}")



