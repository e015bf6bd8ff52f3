"""Plain statistics over repeats: robust centre, spread and percentiles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def iqr(values: Sequence[float]) -> float | None:
    if not len(values):
        return None
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


def summary(values: Sequence[float]) -> dict[str, float | int | None]:
    """Count, min, median, mean, IQR, p90, p99 and max of a sample."""
    if not len(values):
        return {"count": 0}
    arr = np.asarray(values, dtype=float)
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "count": int(arr.size),
        "min": float(arr.min()),
        "p50": float(p50),
        "mean": float(arr.mean()),
        "iqr": iqr(arr),
        "p90": float(p90),
        "p99": float(p99),
        "max": float(arr.max()),
    }
