"""Where dia-bench keeps its caches (synthetic weights, hashes, bandwidth, compile caches)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """`DIA_BENCH_CACHE`, else `$XDG_CACHE_HOME/dia-bench`, else `~/.cache/dia-bench`."""
    explicit = os.environ.get("DIA_BENCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "dia-bench"
