"""The guide's expected speedups and hardware tables, and published Dia numbers, from suites/."""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

from dia_bench.suites import DIR as SUITES_DIR


@lru_cache(maxsize=1)
def load() -> dict[str, list[dict[str, Any]]]:
    with open(SUITES_DIR / "expectations.toml", "rb") as fh:
        data = tomllib.load(fh)
    return {"speedup": data.get("speedup", []), "hardware": data.get("hardware", []),
            "published": data.get("published", [])}
