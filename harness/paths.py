"""Where dia-bench keeps its caches (synthetic weights, hashes, bandwidth, compile caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`DIA_BENCH_CACHE`, else `$XDG_CACHE_HOME/dia-bench`, else `~/.cache/dia-bench`."""
    explicit = os.environ.get("DIA_BENCH_CACHE")
    if explicit:
        # Absolute, so a worker, a compile subprocess or a Ray task with another working directory
        # finds the same cache (nox passes a relative one).
        return Path(explicit).expanduser().absolute()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dia-bench"
