"""The JSON record of one cell: versioned, one file per cell; its fields are typed and documented in
harness/record_schema.py (docs/record.md is generated from there)."""

from __future__ import annotations

import datetime as dt
import platform
import socket
import traceback
from typing import Any

from dia_bench import harness
from dia_bench.harness.cell import Cell
from dia_bench.harness.record_schema import SCHEMA_VERSION

STATUSES = ("ok", "failed", "skipped")
# Starts each progress line the worker writes to stderr (JSON after it); the parent's display reads them.
PROGRESS_PREFIX = "@dia-bench "


def now() -> str:
    # Milliseconds: cells of a tiny model start and end within the same second, and order matters.
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")


def base_record(cell: Cell) -> dict[str, Any]:
    """The fields every record has, whatever its status."""
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "dia-bench", "version": harness.__version__},
        "cell_id": cell.cell_id,
        "status": "running",
        "reason": None,
        "cell": cell.to_dict(),
        "preset": cell.preset,
        "device": cell.device,
        "plugins": list(cell.plugins),
        "frames": cell.frames,
        "batch": cell.batch,
        "started_at": now(),
        "finished_at": None,
        "rtf": None,
        "xrt": None,
        "audio_seconds": None,
        "generation_seconds": None,
        "repeats_seconds": [],
        "stages": {},
        "peak_rss_mb": None,
        "peak_vram_mb": None,
        "weights": None,
        "env": {"hostname": socket.gethostname(), "platform": platform.platform()},
    }


def not_ok(cell: Cell, status: str, reason: str, **extra: Any) -> dict[str, Any]:
    """A failed or skipped record: the reason in one line, nothing pretended."""
    assert status in ("failed", "skipped")
    rec = base_record(cell)
    rec.update(status=status, reason=reason, finished_at=now(), **extra)
    return rec


def exception_reason(exc: BaseException) -> tuple[str, str]:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"[:500], "".join(traceback.format_exception(exc))[-4000:]
