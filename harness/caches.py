"""Caches that outlive a run, each keyed by everything that changes what it holds.

The compile cache is inductor's own (it keys each graph by its code, shapes, config and torch
version); dia-bench puts it in a directory named by the versions around it, so an upgrade of
torch, transformers or dia-bench starts a new one instead of trusting the old.
"""

from __future__ import annotations

import os
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


def compile_cache_env() -> dict[str, str]:
    """The environment a worker that compiles needs for inductor's cache: none where it is already set.
    The launcher sets it (kept across runs: a cold compile of the 1.6B decoder takes 100-150 s on 2 cores,
    a warm one seconds); this covers a worker started by hand."""
    if "TORCHINDUCTOR_CACHE_DIR" not in os.environ:
        return {"TORCHINDUCTOR_CACHE_DIR": str(compile_cache_dir())}
    return {}
