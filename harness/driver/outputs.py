"""Output paths checked before any work: a measurement must never be lost to a path that could not work."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dia_bench.harness.errors import UsageError

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")


def _writable_dir(directory: Path, flag: str, shown: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{flag} {shown}: cannot create {directory} ({exc.strerror}); choose a writable place") \
            from None
    if not directory.is_dir():
        raise UsageError(f"{flag} {shown}: {directory} is a file, not a directory")
    try:
        # A real file, not os.access: root passes every access check, yet /proc takes no new files.
        fd, probe = tempfile.mkstemp(prefix=".dia-bench-probe-", dir=directory)
        os.close(fd)
        os.unlink(probe)
    except OSError as exc:
        raise UsageError(f"{flag} {shown}: cannot write in {directory} ({exc.strerror}); choose a writable place") \
            from None


def output_file(path: str | Path, flag: str, suffixes: tuple[str, ...] | None = None) -> Path:
    """A file the command will write: not a directory, a known format, in a directory it can write."""
    p = Path(path)
    if p.is_dir():
        example = p / ("out" + (suffixes[0] if suffixes else ""))
        raise UsageError(f"{flag} {p} is a directory; give a file path such as {example}")
    if suffixes and p.suffix.lower() not in suffixes:
        raise UsageError(f"{flag} {p}: the format is chosen by the extension; use one of {', '.join(suffixes)}")
    _writable_dir(p.parent if str(p.parent) else Path("."), flag, p)
    return p


def output_dir(path: str | Path, flag: str) -> Path:
    """A directory the command will write into."""
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise UsageError(f"{flag} {p} is a file; give a directory")
    _writable_dir(p, flag, p)
    return p
