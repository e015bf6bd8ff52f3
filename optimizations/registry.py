"""Finds plugins (this package's modules and the `dia_bench.optimizations` entry points) and
resolves a user's list of `name[=value]` into an ordered, checked plan."""

from __future__ import annotations

import contextlib
import importlib
import pkgutil
import time
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import entry_points
from typing import Any

from dia_bench.harness.errors import UsageError
from dia_bench.optimizations.base import Plugin

ENTRY_POINT_GROUP = "dia_bench.optimizations"
_NOT_PLUGINS = {"base", "registry", "api"}  # and modules starting with "_"


class CompositionError(UsageError):
    """A combination that cannot work: refused before anything runs."""


def _as_plugin(obj: Any) -> Plugin:
    if isinstance(obj, type) and issubclass(obj, Plugin):
        return obj()
    if isinstance(obj, Plugin):
        return obj
    raise TypeError(f"{obj!r} is not a dia-bench Plugin")


@lru_cache(maxsize=1)
def all_plugins() -> dict[str, Plugin]:
    from dia_bench import optimizations

    found: dict[str, Plugin] = {}
    for mod in pkgutil.iter_modules(optimizations.__path__):
        if mod.name in _NOT_PLUGINS or mod.name.startswith("_"):
            continue
        module = importlib.import_module(f"dia_bench.optimizations.{mod.name}")
        plugin = _as_plugin(module.PLUGIN)
        found[plugin.name] = plugin
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        plugin = _as_plugin(ep.load())
        found.setdefault(plugin.name, plugin)  # a third party cannot shadow a built-in
    return dict(sorted(found.items()))


def get_plugin(name: str) -> Plugin:
    plugins = all_plugins()
    if name not in plugins:
        raise UsageError(f"unknown plugin {name!r}: choose one of {', '.join(plugins)} (see `dia-bench plugins`)")
    return plugins[name]


def split_spec(spec: str) -> tuple[str, str | None]:
    name, sep, value = spec.partition("=")
    return name.strip(), (value.strip() if sep else None)


@dataclass
class Step:
    plugin: Plugin
    value: Any

    @property
    def spec(self) -> str:
        return self.plugin.spec(self.value)


@dataclass
class Plan:
    steps: list[Step]  # in the order the harness applies them, not the user's order

    @property
    def specs(self) -> list[str]:
        return [s.spec for s in self.steps]

    def values(self) -> dict[str, Any]:
        return {s.plugin.name: s.value for s in self.steps}

    def load_dtype(self):
        """The dtype the weights load in: the first plugin that sets one, else None (fp32)."""
        return next((d for s in self.steps if (d := s.plugin.load_dtype(s.value)) is not None), None)

    def warms_per_shape(self) -> bool:
        return any(s.plugin.warms_per_shape for s in self.steps)

    def unavailable(self, device: str) -> list[str]:
        """Why this machine cannot run the plan (the cell is then skipped); may import torch."""
        reasons = []
        for step in self.steps:
            reason = step.plugin.availability(step.value, device)
            if reason:
                reasons.append(f"{step.spec}: {reason}")
        return reasons


def device_type(device: str) -> str:
    return device.split(":", 1)[0]


def resolve(specs: list[str], device: str) -> Plan:
    """Parse, order and check a plugin list for a device; raise CompositionError when it cannot work.

    Imports no torch, so the worker can resolve its plan before process set-up.
    """
    chosen: dict[str, Any] = {}
    plugins: dict[str, Plugin] = {}
    for spec in specs:
        name, raw = split_spec(spec)
        plugin = get_plugin(name)
        try:
            value = plugin.value_on(raw, device)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if name in chosen:
            raise CompositionError(f"plugin {name!r} is given twice ({plugin.spec(chosen[name])} and {spec}): "
                                   "keep one value")
        chosen[name], plugins[name] = value, plugin
    dtype = device_type(device)
    for name, plugin in plugins.items():
        if dtype not in plugin.devices:
            raise CompositionError(f"{plugin.spec(chosen[name])} does not apply to {dtype} "
                                   f"(only {', '.join(sorted(plugin.devices))})")
        for other in sorted(plugin.conflicts & set(chosen)):
            raise CompositionError(f"{plugin.spec(chosen[name])} conflicts with {plugins[other].spec(chosen[other])}")
        for needed in sorted(plugin.requires):
            other, _, wanted = needed.partition("=")
            if other not in chosen:
                raise CompositionError(f"{plugin.spec(chosen[name])} needs the {other!r} plugin too"
                                       + (f": add {needed}" if wanted else ""))
            if wanted and chosen[other] != wanted:
                raise CompositionError(f"{plugin.spec(chosen[name])} needs {needed}, not "
                                       f"{plugins[other].spec(chosen[other])}: add {needed}")
        others = {k: v for k, v in chosen.items() if k != name}
        reason = plugin.incompatibility(chosen[name], device, others)
        if reason:
            raise CompositionError(f"{plugin.spec(chosen[name])}: {reason}")
    steps = sorted((Step(plugins[n], chosen[n]) for n in chosen), key=lambda s: (s.plugin.order, s.plugin.name))
    return Plan(steps=steps)


def apply_plan(pipe, plan: Plan, device: str) -> tuple[dict[str, str | None], dict[str, float]]:
    """Apply a resolved plan's load-time transforms, contexts and generate arguments to a pipeline."""
    notes: dict[str, str | None] = {}
    seconds: dict[str, float] = {}
    for step in plan.steps:
        t = time.perf_counter()
        notes[step.spec] = step.plugin.transform(pipe, step.value)
        seconds[step.spec] = round(time.perf_counter() - t, 4)
        pipe.generation_contexts.append(
            lambda s=step: s.plugin.context(s.value, device) or contextlib.nullcontext())
        pipe.generate_kwargs.update(step.plugin.generate_kwargs(step.value))
    return notes, seconds
