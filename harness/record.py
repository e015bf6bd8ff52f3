"""The JSON record of one cell: versioned, one file per cell; its fields are typed and documented in
harness/record_schema.py (docs/record.md is generated from there)."""

from __future__ import annotations

import datetime as dt
import platform
import re
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


# A compiler's own error lines (gcc and clang: `file:line:col: error: ...`, `fatal error: ...`).
_COMPILER_ERROR = re.compile(r"\b(?:fatal )?error: ")
TRACEBACK_CHARS = 4000


def exception_reason(exc: BaseException) -> tuple[str, str]:
    """The exception in one line, and its traceback's last TRACEBACK_CHARS characters. A failed compile's
    message is the compiler's output, where the error sits among thousands of lines of warnings that the
    tail would keep instead: its error lines go into the reason and open the traceback."""
    message = str(exc).strip()
    first = message.splitlines()[0] if message else ""
    full = "".join(traceback.format_exception(exc))
    errors = list(dict.fromkeys(ln.strip() for ln in message.splitlines() if _COMPILER_ERROR.search(ln)))
    reason = f"{type(exc).__name__}: {first}" + (f" ({errors[0]})" if errors else "")
    if not errors:
        return reason[:500], full[-TRACEBACK_CHARS:]
    head = "the compiler's errors:\n" + "\n".join(errors[:10])[:TRACEBACK_CHARS // 2] + "\n\n"
    return reason[:500], head + full[-(TRACEBACK_CHARS - len(head)):]
