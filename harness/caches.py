"""Caches that outlive a run, each keyed by everything that changes what it holds.

The compile cache is inductor's own (it keys each graph by its code, shapes, config and torch
version); dia-bench puts it in a directory named by the versions around it, so an upgrade of
torch, transformers or dia-bench starts a new one instead of trusting the old.
"""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from dia_bench.harness.paths import cache_dir

COLD_ENV = "DIA_BENCH_COLD_COMPILE"  # set: every compile starts from an empty cache, measured on purpose


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "none"


def versions_key() -> str:
    """torch, transformers and dia-bench versions, as one file-name-safe string (no torch import)."""
    raw = f"torch-{_version('torch')}_transformers-{_version('transformers')}_dia-bench-{_version('dia-bench')}"
    return re.sub(r"[^A-Za-z0-9._-]", "-", raw)


def compile_cache_dir() -> Path:
    return cache_dir() / "inductor" / versions_key()
