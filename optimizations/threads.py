"""Thread tuning: the guide's `optimize_for_cpu`, set before torch starts."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations._util import positive_int
from dia_bench.optimizations.base import Expectation, Plugin


def physical_cores() -> int:
    import psutil

    return psutil.cpu_count(logical=False) or psutil.cpu_count() or 1


class Threads(Plugin):
    name = "threads"
    description = "Intra-op threads = N or the physical cores (OMP/MKL variables set before torch starts)"
    expectation = Expectation(section="CPU-Specific Optimizations / 1. Thread Configuration",
                              note="use physical cores, not hyperthreads")
    devices = frozenset({"cpu"})
    values = ()
    default = "auto"

    def parse(self, value: str | None) -> int:
        value = value or self.default
        if value == "auto":
            return physical_cores()
        return positive_int(self.name, value, "a thread count or 'auto'", "thread")

    def process_env(self, value: int) -> dict[str, str]:
        return {"OMP_NUM_THREADS": str(value), "MKL_NUM_THREADS": str(value)}

    def configure_torch(self, value: int) -> None:
        import torch

        torch.set_num_threads(value)

    def transform(self, pipeline, value: int) -> str:
        import torch

        return f"torch runs {torch.get_num_threads()} intra-op threads (OMP_NUM_THREADS={value})"

    def report(self, pipeline, value: int) -> dict[str, Any]:
        import torch

        return {"torch_threads": torch.get_num_threads()}


PLUGIN = Threads
