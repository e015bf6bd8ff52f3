"""A run directory: run.json (suite, machine, versions, start and end) and one record per cell."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.errors import UsageError
from harness.jsonio import read_json, write_json_atomic
from harness.record import SCHEMA_VERSION, now

RUN_FILE = "run.json"
CELLS_DIR = "cells"


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILE).is_file()


def read_meta(path: Path) -> dict[str, Any]:
    if not is_run_dir(path):
        raise UsageError(f"{path} is not a dia-bench run directory (no {RUN_FILE}); give a directory "
                         "written by `dia-bench sweep`")
    try:
        meta = read_json(path / RUN_FILE)
    except ValueError as exc:
        raise UsageError(f"{path / RUN_FILE} is not valid JSON ({exc})") from None
    version = meta.get("schema_version")
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise UsageError(f"{path} was written with record schema {version!r}, newer than this dia-bench "
                         f"understands ({SCHEMA_VERSION}); upgrade dia-bench to read it")
    return meta


def create(path: Path, meta: dict[str, Any]) -> None:
    (path / CELLS_DIR).mkdir(parents=True, exist_ok=True)
    write_json_atomic(path / RUN_FILE, {"schema_version": SCHEMA_VERSION, "kind": "dia-bench-run",
                                        "started_at": now(), "finished_at": None, **meta})


def update_meta(path: Path, **fields: Any) -> None:
    meta = read_json(path / RUN_FILE)
    meta.update(fields)
    write_json_atomic(path / RUN_FILE, meta)


def record_path(path: Path, key: str) -> Path:
    return path / CELLS_DIR / f"{key}.json"


def done_keys(path: Path) -> set[str]:
    return {p.stem for p in (path / CELLS_DIR).glob("*.json")}


def write_record(path: Path, key: str, record: dict[str, Any]) -> Path:
    return write_json_atomic(record_path(path, key), record)


def records(path: Path) -> list[dict[str, Any]]:
    out = []
    for p in sorted((path / CELLS_DIR).glob("*.json")):
        try:
            out.append(read_json(p))
        except ValueError:
            continue  # a torn file cannot exist (atomic writes); a hand-edited one is skipped
    return out
