"""Suites: TOML files that describe a matrix of cells. Parsing and validation only."""

from __future__ import annotations

import difflib
import hashlib
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from dia_bench.harness.errors import UsageError
from dia_bench.suites import DIR as SUITES_DIR

DESIGNS = ("full", "one-at-a-time", "leave-one-out", "explicit")

SUITE_KEYS: dict[str, type | tuple[type, ...]] = {
    "description": str, "presets": list, "devices": list, "texts": list, "seconds": list, "batch": list,
    "warmup": int, "repeats": int, "min_repeats": int, "time_budget_s": (int, float), "seed": int,
    "timeout_s": (int, float), "fidelity": bool, "design": str, "cells": list, "weights": str,
    "codec_weights": str, "baseline_every": int, "target_ci_pct": (int, float), "max_repeats": int,
    "gpu_model": str, "warmup_seconds": (int, float), "processes": int, "baseline": bool,
}
TOP_KEYS = {"suite", "plugins"}


@dataclass
class Suite:
    name: str
    path: Path
    text_hash: str
    description: str = ""
    presets: list[str] = field(default_factory=lambda: ["dia-1.6b"])
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    texts: list[str] = field(default_factory=lambda: ["short"])
    seconds: list[float] = field(default_factory=lambda: [1.0])
    batch: list[int] = field(default_factory=lambda: [1])
    warmup: int = 1
    warmup_seconds: float | None = None  # a warmup cut short after this much audio of decode steps (Cell.warmup_steps)
    repeats: int = 3
    min_repeats: int | None = None
    max_repeats: int | None = None  # adaptive repeats: the most a cell may run to reach target_ci_pct
    target_ci_pct: float | None = None
    time_budget_s: float | None = None
    seed: int = 0
    timeout_s: float = 1800.0
    baseline_every: int = 0  # repeat the baseline after every N cells (0: only first and last)
    # False: no fp32 baseline is added to an explicit suite's cells (where it would cost more than they
    # do, such as at long lengths), and its cells have no speedup.
    baseline: bool = True
    # Each cell measured in this many worker processes, a round of all cells per process, so that
    # its interval rests on the spread between processes it showed, not on the machine's prior alone.
    processes: int = 1
    fidelity: bool = True
    design: str = "one-at-a-time"
    weights: str | None = None  # else the HF cache, else synthetic
    codec_weights: str | None = None
    gpu_model: str | None = None  # CUDA cells run only on this GPU model (Ray's accelerator type)
    plugins: dict[str, list[str | None]] = field(default_factory=dict)
    cells: list[list[str]] = field(default_factory=list)
    # Per explicit cell: the batch sizes it runs at instead of `batch` (None: the suite's).
    cell_batches: list[list[int] | None] = field(default_factory=list)
    # Per explicit cell: the seconds it may take instead of `timeout_s` (None: the suite's).
    cell_timeouts: list[float | None] = field(default_factory=list)


def load_texts() -> dict[str, str | list[str]]:
    """The corpus: a name is a text, or a list of names (a batch of requests of different lengths)."""
    with open(SUITES_DIR / "texts.toml", "rb") as fh:
        return tomllib.load(fh)


def request_texts(name: str, texts: dict[str, str | list[str]]) -> list[str]:
    """The texts a corpus name stands for: one, or one per request in turn."""
    value = texts[name]
    return [texts[n] for n in value] if isinstance(value, list) else [value]


DATA_FILES = {"texts", "expectations", "stacks"}  # data beside the suites, not suites


def suite_names() -> list[str]:
    return sorted(p.stem for p in SUITES_DIR.glob("*.toml") if p.stem not in DATA_FILES)


def find_suite(name_or_path: str) -> Path:
    """A shipped suite by bare name (`default` picks gpu or cpu), else a TOML file by path.

    A bare name always means a shipped suite, so a folder called `smoke` in the working directory
    (a run directory, say) cannot hide the shipped one; `./smoke.toml` or a path names a file.
    """
    if name_or_path == "default":
        import torch

        name_or_path = "gpu" if torch.cuda.is_available() else "cpu"
    candidate = Path(name_or_path)
    bare = candidate.suffix != ".toml" and len(candidate.parts) == 1
    if bare:
        shipped = SUITES_DIR / f"{name_or_path}.toml"
        if shipped.is_file() and name_or_path not in DATA_FILES:
            return shipped
        if not candidate.exists():
            raise UsageError(f"unknown suite {name_or_path!r}: choose one of {', '.join(suite_names())}, "
                             "default, or a path to a .toml file")
    if candidate.is_dir():
        hint = " (a run directory: `dia-bench report` reads it)" if (candidate / "run.json").is_file() else ""
        raise UsageError(f"{candidate} is a directory, not a suite file{hint}; give a shipped suite "
                         f"({', '.join(suite_names())}) or a .toml file")
    if not candidate.is_file():
        raise UsageError(f"suite file {candidate} does not exist")
    return candidate


def _unknown(path: Path, key: str, where: str, known) -> UsageError:
    close = difflib.get_close_matches(key, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(sorted(known))})"
    return UsageError(f"{path}: unknown key {key!r} in {where}{hint}")


def _plugin_values(path: Path, name: str, raw: Any) -> list[str | None]:
    values = raw if isinstance(raw, list) else [raw]
    out: list[str | None] = []
    for v in values:
        if v is True:
            out.append(None)
        elif isinstance(v, (str, int, float)) and not isinstance(v, bool):
            out.append(str(v))
        else:
            raise UsageError(f"{path}: [plugins] {name} = {raw!r}: give a list of values, or true for a plugin "
                             "without one")
    return out


CELL_TABLE_KEYS = {"plugins", "batch", "timeout_s"}


def _explicit_cells(path: Path, raw: list[Any]) -> tuple[list[list[str]], list[list[int] | None], list[float | None]]:
    """A cell is a list of plugin specs, or {plugins = [...], batch = N or [N, ...], timeout_s = S}.

    The table form runs one configuration at other batch sizes without multiplying every cell by
    them, as a suite-level `batch` list would, or gives one cell (a cold compile) a limit of its own.
    """
    cells: list[list[str]] = []
    batches: list[list[int] | None] = []
    timeouts: list[float | None] = []
    shape = "cells must be lists of 'name=value' strings or {plugins = [...], batch = N, timeout_s = S} tables"
    for cell in raw:
        batch: list[int] | None = None
        timeout: float | None = None
        if isinstance(cell, dict):
            for key in cell:
                if key not in CELL_TABLE_KEYS:
                    raise _unknown(path, key, "a [suite] cells table", CELL_TABLE_KEYS)
            if "batch" not in cell and "timeout_s" not in cell:
                raise UsageError(f"{path}: [suite] cells: {cell!r} needs batch = N or timeout_s = S "
                                 "(or write the plugin list alone)")
            if "batch" in cell:
                value = cell["batch"]
                batch = value if isinstance(value, list) else [value]
                if not batch or not all(isinstance(b, int) and not isinstance(b, bool) and b >= 1 for b in batch):
                    raise UsageError(f"{path}: [suite] cells: batch = {value!r} must be an integer >= 1 or a list "
                                     "of them")
            if "timeout_s" in cell:
                timeout = cell["timeout_s"]
                if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
                    raise UsageError(f"{path}: [suite] cells: timeout_s = {timeout!r}: give the seconds this cell "
                                     "may take, > 0")
                timeout = float(timeout)
            cell = cell.get("plugins", [])
        if not isinstance(cell, list) or not all(isinstance(s, str) for s in cell):
            raise UsageError(f"{path}: [suite] {shape} (got {cell!r})")
        cells.append(list(cell))
        batches.append(batch)
        timeouts.append(timeout)
    return cells, batches, timeouts


def parse_suite(path: Path) -> Suite:
    """Read and check a suite file; every problem is one line naming the file and the key or line."""
    from dia_bench.harness.devices import _DEVICE, GPU_MODEL
    from dia_bench.harness.presets import PRESETS
    from dia_bench.optimizations.registry import get_plugin, split_spec

    raw_bytes = path.read_bytes()
    try:
        data = tomllib.loads(raw_bytes.decode())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not valid TOML: {exc}") from None
    for key in data:
        if key not in TOP_KEYS:
            raise _unknown(path, key, "the file (tables are [suite] and [plugins])", TOP_KEYS)
    section = data.get("suite", {})
    suite = Suite(name=path.stem, path=path, text_hash=hashlib.sha256(raw_bytes).hexdigest()[:16])
    for key, value in section.items():
        if key not in SUITE_KEYS:
            raise _unknown(path, key, "[suite]", SUITE_KEYS)
        expected = SUITE_KEYS[key]
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise UsageError(f"{path}: [suite] {key} = {value!r} has the wrong type")
        setattr(suite, key, value)
    for name, raw in data.get("plugins", {}).items():
        try:
            plugin = get_plugin(name)
        except UsageError as exc:
            raise UsageError(f"{path}: [plugins] {exc}") from None
        values = _plugin_values(path, name, raw)
        for v in values:
            try:
                plugin.parse(v)
            except ValueError as exc:
                raise UsageError(f"{path}: [plugins] {exc}") from None
        suite.plugins[name] = values

    if suite.design not in DESIGNS:
        raise UsageError(f"{path}: [suite] design = {suite.design!r}: choose one of {', '.join(DESIGNS)}")
    if suite.design == "explicit" and not suite.cells:
        raise UsageError(f"{path}: design 'explicit' needs cells = [[...], ...] in [suite]")
    suite.cells, suite.cell_batches, suite.cell_timeouts = _explicit_cells(path, suite.cells)
    for cell in suite.cells:
        for spec in cell:
            name, value = split_spec(spec)
            try:
                get_plugin(name).parse(value)
            except UsageError as exc:
                raise UsageError(f"{path}: [suite] cells: {exc}") from None
            except ValueError as exc:
                raise UsageError(f"{path}: [suite] cells: {exc}") from None
    for preset in suite.presets:
        if preset not in PRESETS:
            raise UsageError(f"{path}: [suite] presets: unknown preset {preset!r} (choose from "
                             f"{', '.join(PRESETS)})")
    for device in suite.devices:
        if device != "available" and not _DEVICE.match(str(device)):
            raise UsageError(f"{path}: [suite] devices: unknown device {device!r} (cpu, cuda, cuda:N or available)")
    if suite.gpu_model is not None:
        if not GPU_MODEL.match(suite.gpu_model):
            raise UsageError(f"{path}: [suite] gpu_model = {suite.gpu_model!r}: give a GPU model as Ray names "
                             "accelerators, such as H100, A100 or L4")
        if not any(str(d).startswith("cuda") or d == "available" for d in suite.devices):
            raise UsageError(f"{path}: [suite] gpu_model = {suite.gpu_model!r} is for CUDA cells, and devices = "
                             f"{suite.devices!r} has none: add cuda to devices, or drop gpu_model")
    texts = load_texts()
    for text in suite.texts:
        if text not in texts:
            raise UsageError(f"{path}: [suite] texts: unknown text {text!r} (the corpus has {', '.join(texts)})")
    for s in suite.seconds:
        if not isinstance(s, (int, float)) or not math.isfinite(s) or s <= 0:
            raise UsageError(f"{path}: [suite] seconds: {s!r} must be a finite number > 0")
    for b in suite.batch:
        if not isinstance(b, int) or b < 1:
            raise UsageError(f"{path}: [suite] batch: {b!r} must be an integer >= 1")
    if suite.repeats < 1 or suite.warmup < 0:
        raise UsageError(f"{path}: [suite] repeats must be >= 1 and warmup >= 0")
    if suite.min_repeats is not None and suite.min_repeats < 1:
        raise UsageError(f"{path}: [suite] min_repeats = {suite.min_repeats}: give a whole number >= 1")
    if not math.isfinite(suite.timeout_s) or suite.timeout_s <= 0:
        raise UsageError(f"{path}: [suite] timeout_s = {suite.timeout_s}: give the seconds one cell may take, > 0")
    if suite.warmup == 0:
        from dia_bench.harness.driver.expand import plugin_combinations

        if any(split_spec(spec)[0] == "compile" for cell in plugin_combinations(suite) for spec in cell):
            raise UsageError(f"{path}: [suite] warmup = 0 with a compile cell would time compilation as "
                             "generation: set warmup = 1 or more")
    if suite.processes < 1:
        raise UsageError(f"{path}: [suite] processes = {suite.processes}: give how many worker processes measure "
                         "each cell, 1 or more")
    if not suite.baseline:
        if suite.design != "explicit":
            raise UsageError(f"{path}: [suite] baseline = false needs design = \"explicit\": the {suite.design} "
                             "design forms the baseline itself")
        if any(not cell for cell in suite.cells):
            raise UsageError(f"{path}: [suite] baseline = false, yet cells list the baseline ([]): drop one")
        if suite.baseline_every:
            raise UsageError(f"{path}: [suite] baseline = false with baseline_every = {suite.baseline_every}: "
                             "drop baseline_every")
    if suite.baseline_every < 0:
        raise UsageError(f"{path}: [suite] baseline_every = {suite.baseline_every}: give 0 (baselines first "
                         "and last only) or N >= 1 (a baseline again after every N cells)")
    from dia_bench.harness.weights_dir import check_weights_dir

    for key, kind in (("weights", "model"), ("codec_weights", "codec")):
        if getattr(suite, key):
            try:
                setattr(suite, key, str(check_weights_dir(getattr(suite, key), kind).resolve()))
            except UsageError as exc:
                raise UsageError(f"{path}: [suite] {key}: {exc}") from None
    return suite
