"""A run directory: run.json (suite, machine, versions, start and end) and one record per cell."""

from __future__ import annotations

import os
import shutil
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dia_bench.harness.errors import UsageError
from dia_bench.harness.jsonio import read_json, write_json_atomic
from dia_bench.harness.record import now
from dia_bench.harness.record_schema import OLDEST_UPGRADABLE, SCHEMA_VERSION
from dia_bench.harness.record_schema import upgrade as upgrade_document

RUN_FILE = "run.json"
CELLS_DIR = "cells"
# Where --resume moves records it cannot read: kept for a look, out of the cells/*.json every reader sees.
UNREADABLE_DIR = "unreadable"


@dataclass(frozen=True)
class Unreadable:
    path: Path
    why: str

    def line(self) -> str:
        return (f"dia-bench: {self.path} cannot be read ({self.why}): that cell is left out; "
                f"`dia-bench sweep SUITE --out {self.path.parent.parent} --resume` measures it again")


_named: set[Path] = set()


def is_run_dir(path: Path) -> bool:
    return (path / RUN_FILE).is_file()


def _read_run_file(path: Path) -> dict[str, Any]:
    """run.json as it is on disk, whatever its schema version."""
    if not is_run_dir(path):
        raise UsageError(f"{path} is not a dia-bench run directory (no {RUN_FILE}); give a directory "
                         "written by `dia-bench sweep`")
    try:
        return read_json(path / RUN_FILE)
    except ValueError as exc:
        raise UsageError(f"{path / RUN_FILE} is not valid JSON ({exc})") from None


def read_meta(path: Path) -> dict[str, Any]:
    meta = _read_run_file(path)
    _check_version(path, meta)
    return meta


def _version(path: Path, meta: Any) -> int:
    version = meta.get("schema_version") if isinstance(meta, dict) else None
    if not isinstance(version, int) or isinstance(version, bool):
        raise UsageError(f"{path / RUN_FILE} has no schema_version ({version!r}): it was not written by "
                         "`dia-bench sweep`")
    if version > SCHEMA_VERSION:
        raise UsageError(f"{path} was written with record schema {version!r}, newer than this dia-bench "
                         f"understands ({SCHEMA_VERSION}); upgrade dia-bench to read it")
    if version < OLDEST_UPGRADABLE:
        raise UsageError(f"{path} was written with record schema {version}, which this dia-bench can neither read "
                         f"nor upgrade (it lacks what schema {OLDEST_UPGRADABLE} added): measure the suite again")
    return version


def _check_version(path: Path, meta: dict[str, Any]) -> None:
    """Readers take the current schema only: an older run is upgraded once, in place, not patched by
    every reader."""
    version = _version(path, meta)
    if version < SCHEMA_VERSION:
        raise UsageError(f"{path} was written with record schema {version}, older than this dia-bench reads "
                         f"({SCHEMA_VERSION}): run `dia-bench upgrade {path}` first (it rewrites the run in place "
                         "and keeps the originals)")


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


def scan(path: Path) -> tuple[list[dict[str, Any]], list[Unreadable]]:
    """Every cell record of a run, and the files among them that are not one (cut short by a copy, a
    full disk, a hand edit): those are never dropped without a word."""
    out, bad = [], []
    for p in sorted((path / CELLS_DIR).glob("*.json")):
        try:
            rec = read_json(p)
        except (OSError, ValueError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
            bad.append(Unreadable(p, f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'empty'}"))
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("status"), str):
            bad.append(Unreadable(p, "valid JSON but not a cell record (no status)"))
            continue
        out.append(rec)
    return out, bad


def records(path: Path) -> list[dict[str, Any]]:
    """The readable records; each unreadable file is named on stderr once per process."""
    out, bad = scan(path)
    for b in bad:
        if b.path not in _named:
            _named.add(b.path)
            print(b.line(), file=sys.stderr)
    return out


def unreadable(path: Path) -> list[Unreadable]:
    return scan(path)[1]


def done_keys(path: Path) -> set[str]:
    """Cells with a readable record: an unreadable one is not done."""
    return {p.stem for p in (path / CELLS_DIR).glob("*.json")} - {b.path.stem for b in unreadable(path)}


def set_aside_unreadable(path: Path) -> list[Path]:
    """Moves unreadable records to cells/unreadable/ (timestamped, never overwritten) so their cells
    are measured again; returns where each went."""
    moved = []
    for b in unreadable(path):
        dest = path / CELLS_DIR / UNREADABLE_DIR / f"{b.path.stem}.{time.strftime('%Y%m%d-%H%M%S')}.json"
        n = 1
        while dest.exists():
            dest = dest.with_name(f"{b.path.stem}.{time.strftime('%Y%m%d-%H%M%S')}-{n}.json")
            n += 1
        dest.parent.mkdir(parents=True, exist_ok=True)
        b.path.replace(dest)
        moved.append(dest)
    return moved


def write_record(path: Path, key: str, record: dict[str, Any]) -> Path:
    return write_json_atomic(record_path(path, key), record)


def find(paths: Iterable[str | Path]) -> list[Path]:
    """Run directories named directly (or by their run.json) or found below folders, each once.

    A CI job downloads its stored runs into nested folders (one per artifact), so a folder is
    searched at any depth; a run directory is not searched further.
    """
    found: dict[Path, None] = {}
    for p in paths:
        path = Path(p)
        if path.name == RUN_FILE and path.is_file():
            path = path.parent
        if not path.exists():
            raise UsageError(f"{path} does not exist; give run directories or a folder that holds them")
        if not path.is_dir():
            raise UsageError(f"{path} is a file, not a run directory; give run directories or a folder that holds them")
        before = len(found)
        for root, dirs, _ in os.walk(path):
            if is_run_dir(Path(root)):
                found.setdefault(Path(root).resolve(), None)
                dirs.clear()
            else:
                dirs.sort()
        if len(found) == before and not is_run_dir(path):
            raise UsageError(f"{path} holds no dia-bench run directory (no {RUN_FILE} in it or below it); "
                             "give directories written by `dia-bench sweep`")
    return list(found)


BACKUP_PREFIX = ".backup-v"  # RUN_DIR/.backup-vN/: the files `upgrade` rewrote, as schema N wrote them


@dataclass(frozen=True)
class Upgrade:
    """What `upgrade` did to one run directory."""

    path: Path
    from_version: int
    records: int  # rewritten
    changes: dict[str, int]  # what changed, and in how many records
    backup: Path | None
    unreadable: int

    def line(self, shown: str | None = None) -> str:
        where = shown or str(self.path)
        left = f"; {self.unreadable} unreadable record(s) left as they are" if self.unreadable else ""
        if self.backup is None:
            return f"{where}: already schema {SCHEMA_VERSION}, nothing changed{left}"
        what = "; ".join(f"{c} ({n} record{'s' if n != 1 else ''})" for c, n in self.changes.items())
        return (f"{where}: schema {self.from_version} -> {SCHEMA_VERSION}, run.json and {self.records} record(s) "
                f"rewritten{': ' + what if what else ''}; originals in "
                f"{Path(where) / self.backup.relative_to(self.path)}/{left}")


def upgrade(path: Path) -> Upgrade:
    """Rewrites an older run directory in place to the current schema: run.json and every record.

    Nothing is written until every document has been read and upgraded in memory. The originals of the
    files rewritten go to RUN_DIR/.backup-vN/ first (a file already there is kept: it is the original
    of an upgrade cut short); each file is then replaced atomically, records first and run.json last,
    so run.json's version says whether the whole run is current. A current run is left untouched.
    """
    meta = _read_run_file(path)
    from_version = _version(path, meta)
    records, bad = [], []
    for p in sorted((path / CELLS_DIR).glob("*.json")):
        try:
            rec = read_json(p)
        except (OSError, ValueError):
            bad.append(p)  # `sweep --resume` sets such a file aside and measures its cell again
            continue
        if not isinstance(rec, dict) or not isinstance(rec.get("status"), str):
            bad.append(p)
            continue
        version = rec.get("schema_version")
        if version == SCHEMA_VERSION:
            continue
        if not isinstance(version, int) or not OLDEST_UPGRADABLE <= version < SCHEMA_VERSION:
            raise UsageError(f"{p} holds a record of schema {version!r}, which this dia-bench cannot upgrade "
                             f"(it upgrades {OLDEST_UPGRADABLE} to {SCHEMA_VERSION}); nothing was changed")
        records.append((p, rec, upgrade_document(rec, "record")))
    if from_version == SCHEMA_VERSION and not records:
        return Upgrade(path, from_version, 0, {}, None, len(bad))
    upgrade_document(meta, "run")
    backup = path / f"{BACKUP_PREFIX}{from_version}"
    for p in [path / RUN_FILE, *(p for p, _, _ in records)]:
        kept = backup / p.relative_to(path)
        if not kept.exists():
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, kept)
    changes: dict[str, int] = {}
    for p, rec, changed in records:
        write_json_atomic(p, rec)
        for c in changed:
            changes[c] = changes.get(c, 0) + 1
    write_json_atomic(path / RUN_FILE, meta)
    return Upgrade(path, from_version, len(records), changes, backup, len(bad))
