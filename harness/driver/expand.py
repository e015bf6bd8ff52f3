"""Expands a suite into cells: the matrix design, devices, and what cannot run kept as skipped."""

from __future__ import annotations

import itertools
from dataclasses import dataclass

from dia_bench.harness.cell import Cell
from dia_bench.harness.driver.suite import Suite, load_texts, request_texts
from dia_bench.harness.errors import UsageError


@dataclass
class PlannedCell:
    key: str  # unique within a run: the cell id, plus "@end" for the closing baseline
    cell: Cell
    role: str = "cell"  # "baseline-start", "baseline-mid", "baseline-end", "cell" or "cell-process"
    skip_reason: str | None = None
    node: str | None = None  # a Ray node id: the cell must run there (each node's own baselines)
    timeout_s: float | None = None  # the suite's cell table gave this cell its own limit


def _spec(name: str, value: str | None) -> str:
    return name if value is None else f"{name}={value}"


def plugin_combinations(suite: Suite) -> list[list[str]]:
    """The plugin lists the design asks for; the empty list is the baseline."""
    if suite.design == "explicit":
        return [list(c) for c in suite.cells]
    options = [[_spec(n, v) for v in values] for n, values in suite.plugins.items()]
    if suite.design == "full":
        combos = itertools.product(*[[None, *opts] for opts in options])
        return [[s for s in combo if s] for combo in combos]
    if suite.design == "one-at-a-time":
        return [[]] + [[s] for opts in options for s in opts]
    # leave-one-out: every plugin (first value), then all but one
    everything = [opts[0] for opts in options]
    return [everything] + [[s for s in everything if s != left] for left in everything]


def cell_timeouts(suite: Suite) -> list[float | None]:
    """Per entry of plugin_combinations: the cell's own limit in seconds, None for the suite's."""
    if suite.design == "explicit" and suite.cell_timeouts:
        return list(suite.cell_timeouts)
    return [None for _ in plugin_combinations(suite)]


def batch_sizes(suite: Suite) -> list[list[int]]:
    """Per entry of plugin_combinations: the batch sizes it runs at."""
    if suite.design == "explicit" and suite.cell_batches:
        return [b or list(suite.batch) for b in suite.cell_batches]
    return [list(suite.batch) for _ in plugin_combinations(suite)]


def resolve_devices(devices: list[str]) -> list[str]:
    from dia_bench.harness.devices import available_devices

    out: list[str] = []
    for d in devices:
        for dev in (available_devices() if d == "available" else [d]):
            if dev not in out:
                out.append(dev)
    return out


def _skip_reason(cell: Cell, this_machine: bool) -> str | None:
    from dia_bench.harness.devices import check_device, gpu_model_mismatch
    from dia_bench.optimizations.registry import resolve

    try:
        if this_machine:
            check_device(cell.device)
        plan = resolve(cell.plugins, cell.device)
    except UsageError as exc:  # CompositionError too: refused before anything runs
        return str(exc)
    if not this_machine:  # what a node has is for that node's worker to say (it checks the same)
        return None
    reasons = plan.unavailable(cell.device)
    if mismatch := gpu_model_mismatch(cell.device, cell.gpu_model):
        reasons.append(mismatch)
    return "; ".join(reasons) if reasons else None


def expand(suite: Suite, this_machine: bool = True) -> list[PlannedCell]:
    """Every cell of the suite in run order: per device, baselines first and again last.

    this_machine: the cells run here, so what this machine lacks (a GPU, a package) skips them now;
    False for an executor whose nodes decide that for themselves.
    """
    texts = load_texts()
    combos = plugin_combinations(suite)
    batches = batch_sizes(suite)
    # Speedups need a baseline at the suite's batch sizes, unless the suite says `baseline = false`. A cell
    # at a batch size of its own gets none unless the suite lists one: its throughput still compares with
    # the same plugins at the suite's.
    covered = {b for plugins, sizes in zip(combos, batches, strict=True) if not plugins for b in sizes}
    missing = [b for b in suite.batch if b not in covered] if suite.baseline else []
    timeouts = cell_timeouts(suite)
    if missing:
        combos, batches, timeouts = [[], *combos], [missing, *batches], [None, *timeouts]
    # The suite's batch sizes first, so suites without per-cell batches keep their order.
    all_batches = list(dict.fromkeys([*suite.batch, *(b for bs in batches for b in bs)]))
    planned: list[PlannedCell] = []
    seen: set[str] = set()
    for device in resolve_devices(suite.devices):
        ends: list[PlannedCell] = []
        for preset, text_key, seconds, batch in itertools.product(suite.presets, suite.texts, suite.seconds,
                                                                    all_batches):
            for plugins, sizes, timeout in zip(combos, batches, timeouts, strict=True):
                if batch not in sizes:
                    continue
                chosen = request_texts(text_key, texts)
                cell = Cell(preset=preset, device=device, plugins=plugins, text=chosen[0],
                            batch_texts=chosen if len(chosen) > 1 else None, seconds=float(seconds), batch=batch,
                            warmup=suite.warmup, warmup_seconds=suite.warmup_seconds,
                            repeats=suite.min_repeats or suite.repeats, seed=suite.seed, fidelity=suite.fidelity,
                            time_budget_s=suite.time_budget_s, label=text_key, weights=suite.weights,
                            codec_weights=suite.codec_weights, target_ci_pct=suite.target_ci_pct,
                            max_repeats=suite.max_repeats,
                            gpu_model=suite.gpu_model if device.startswith("cuda") else None)
                if cell.cell_id in seen:
                    continue
                try:
                    cell.validate()  # the same checks as `dia-bench run`, before anything runs
                except UsageError as exc:
                    raise UsageError(f"{suite.path}: cell {'+'.join(plugins) or 'baseline'} at {seconds:g} s, "
                                     f"batch {batch}, text {text_key!r}: {exc}") from None
                seen.add(cell.cell_id)
                role = "baseline-start" if not plugins else "cell"
                item = PlannedCell(key=cell.cell_id, cell=cell, role=role,
                                   skip_reason=_skip_reason(cell, this_machine), timeout_s=timeout)
                planned.append(item)
                if not plugins:
                    ends.append(PlannedCell(key=cell.cell_id + "@end", cell=cell, role="baseline-end",
                                            skip_reason=item.skip_reason, timeout_s=timeout))
        # Baselines run first (above, in order), again after every `baseline_every` other cells of their
        # conditions, and last: speedups then compare against the machine's speed when each cell ran.
        starts = [p for p in planned if p.cell.device == device and p.role == "baseline-start"]
        others = _rounds(starts, [p for p in planned if p.cell.device == device and p.role == "cell"],
                         suite.processes)
        planned = [p for p in planned if p.cell.device != device] + starts + _interleave(others, starts,
                                                                                       suite.baseline_every) + ends
    return planned


def _rounds(starts: list[PlannedCell], cells: list[PlannedCell], processes: int) -> list[PlannedCell]:
    """The cells once per process, a whole round at a time (pyperf's interleaving): a machine that
    slows down for a minute then touches one process of many cells, not every process of one. Each
    later round opens with the baseline again, which is then measured in as many processes."""
    out = list(cells)
    for i in range(2, processes + 1):
        out += [PlannedCell(key=f"{b.key}@p{i}", cell=b.cell, role="baseline-mid", skip_reason=b.skip_reason,
                            node=b.node, timeout_s=b.timeout_s) for b in starts]
        out += [PlannedCell(key=f"{p.key}@p{i}", cell=p.cell, role="cell-process", skip_reason=p.skip_reason,
                            node=p.node, timeout_s=p.timeout_s) for p in cells]
    return out


def _conditions(cell: Cell) -> tuple:
    return cell.preset, cell.device, cell.label, cell.seconds, cell.batch


def _interleave(others: list[PlannedCell], starts: list[PlannedCell], every: int) -> list[PlannedCell]:
    if every <= 0:
        return others
    base_of = {_conditions(p.cell): p for p in starts}
    # Only cells that run count: a skipped one takes no time for the machine to drift in.
    remaining = {k: sum(_conditions(p.cell) == k and not p.skip_reason for p in others) for k in base_of}
    since = dict.fromkeys(base_of, 0)
    repeats = dict.fromkeys(base_of, 0)
    out: list[PlannedCell] = []
    for p in others:
        out.append(p)
        k = _conditions(p.cell)
        if k not in base_of or p.skip_reason:
            continue
        since[k] += 1
        remaining[k] -= 1
        if since[k] == every and remaining[k] > 0:  # the closing baseline follows the last cell anyway
            since[k] = 0
            repeats[k] += 1
            b = base_of[k]
            out.append(PlannedCell(key=f"{b.key}@{repeats[k]}", cell=b.cell, role="baseline-mid",
                                   skip_reason=b.skip_reason, timeout_s=b.timeout_s))
    return out
