"""The plugin contract: what an optimization declares and the hook points where it acts.

Hooks, in the order the worker calls them:
1. `process_env` - environment variables set before torch is imported (threads, allocator).
2. `configure_torch` - process-wide torch settings after import (thread counts).
3. `load_dtype` - the dtype weights load in.
4. `transform` - model transforms at load time, in ascending `order` (quantize before compile).
5. `context` - a context entered around generation and restored afterwards (autocast, SDPA, TF32).
6. `generate_kwargs` - arguments added to `generate` (CFG scale).
Compile wraps the model's forward inside `transform`, last of all.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from dia_bench.harness.runtime.pipeline import DiaPipeline


@dataclass(frozen=True)
class Expectation:
    """What the guide promises for a technique, kept as data for the reports."""

    section: str
    speedup: tuple[float, float] | None = None
    note: str = ""


class Plugin:
    name: ClassVar[str]
    description: ClassVar[str]
    expectation: ClassVar[Expectation]
    devices: ClassVar[frozenset[str]] = frozenset({"cpu", "cuda"})
    # Allowed values; None means the plugin takes no value, () means it parses its own.
    values: ClassVar[tuple[str, ...] | None] = None
    default: ClassVar[str | None] = None
    conflicts: ClassVar[frozenset[str]] = frozenset()
    requires: ClassVar[frozenset[str]] = frozenset()  # plugin names, or name=value where one value will do
    order: ClassVar[int] = 50
    # True where the plugin changes no arithmetic at all (where memory lives, not what is computed): its
    # cells produce the reference's output, so a run without fidelity may still recommend them. Anything
    # that can reorder a sum (threads, another kernel, a compiled graph) stays False and must be judged.
    preserves_numerics: ClassVar[bool] = False
    # True where the plugin prepares work for the shapes it first sees (a compiled graph, cuDNN's
    # autotuned algorithms): the warmup must then be a request of the measured length.
    warms_per_shape: ClassVar[bool] = False

    def default_value(self, device: str) -> str | None:
        """What a bare spec (`--opt int4`) runs on this device: the fastest variant that runs correctly on
        this machine. A plugin whose fastest variant depends on the machine says so here; the chosen value
        is then what the plan, the cell and the record carry."""
        return self.default

    def value_on(self, raw: str | None, device: str) -> Any:
        """The value a spec runs with on this device: `parse` of what the user wrote, where a plugin with a
        list of values and none given takes `default_value(device)`."""
        return self.parse(self.default_value(device) if raw is None and self.values else raw)

    def parse(self, value: str | None) -> Any:
        """Turn the user's value into the plugin's; raise ValueError naming the allowed ones."""
        if self.values is None:
            if value is not None:
                raise ValueError(f"plugin {self.name!r} takes no value (got {value!r})")
            return None
        if value is None:
            value = self.default
        if self.values and value not in self.values:
            raise ValueError(f"plugin {self.name!r} has no value {value!r}: choose one of {', '.join(self.values)}")
        return value

    def availability(self, value: Any, device: str) -> str | None:
        """None when it can run here; else the reason (missing package, no CUDA, old GPU...)."""
        return None

    def incompatibility(self, value: Any, device: str, others: dict[str, Any]) -> str | None:
        """Why this plugin cannot work with this device or these other plugins, else None."""
        return None

    def process_env(self, value: Any) -> dict[str, str]:
        return {}

    def configure_torch(self, value: Any) -> None:
        return None

    def load_dtype(self, value: Any):
        return None

    def transform(self, pipeline: DiaPipeline, value: Any) -> str | None:
        """Change the model; return a note for the record (say so when there was nothing to act on)."""
        return None

    def context(self, value: Any, device: str) -> contextlib.AbstractContextManager | None:
        return None

    def generate_kwargs(self, value: Any) -> dict[str, Any]:
        return {}

    def changes_output(self, value: Any) -> bool:
        """True where the plugin changes what is sampled on purpose (another CFG scale): however exact
        its arithmetic, its output is not the reference's, and recommendations must not take it for free."""
        return False

    def report(self, pipeline: DiaPipeline, value: Any) -> dict[str, Any]:
        """Evidence of what the plugin did, gathered after the measured runs (dynamo counters...)."""
        return {}

    def spec(self, value: Any) -> str:
        return self.name if value is None else f"{self.name}={value}"
