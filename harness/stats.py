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


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, n_resamples: int = 4000,
                 seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of the median. With few repeats it is wide, as it should be."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return None
    if arr.size == 1:
        return float(arr[0]), float(arr[0])
    rng = np.random.default_rng(seed)
    medians = np.median(rng.choice(arr, size=(n_resamples, arr.size), replace=True), axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(medians, [alpha, 1 - alpha])
    return float(lo), float(hi)


def ratio_ci(base: Sequence[float], new: Sequence[float], confidence: float = 0.95, n_resamples: int = 4000,
             seed: int = 0, base_after: Sequence[float] | None = None,
             weight: float = 0.0) -> dict[str, float | bool | None]:
    """Speedup = median(base) / median(new), with a bootstrap interval resampling both sides.

    With `base_after` the reference is the baseline interpolated in time: (1 - weight) x median(base)
    + weight x median(base_after), each median resampled, so a machine that drifted between two
    baseline measurements is compared at the speed it had when `new` ran.
    `significant` means the interval excludes 1: the difference is beyond the repeats' noise.
    """
    b, n = np.asarray(base, dtype=float), np.asarray(new, dtype=float)
    a = np.asarray(base_after if base_after is not None else [], dtype=float)
    if b.size == 0 or n.size == 0:
        return {"speedup": None, "low": None, "high": None, "significant": None}
    w = float(weight) if a.size else 0.0
    reference = (1 - w) * np.median(b) + (w * np.median(a) if a.size else 0.0)
    point = float(reference / np.median(n))
    rng = np.random.default_rng(seed)
    rb = np.median(rng.choice(b, size=(n_resamples, b.size), replace=True), axis=1)
    if a.size:
        rb = (1 - w) * rb + w * np.median(rng.choice(a, size=(n_resamples, a.size), replace=True), axis=1)
    rn = np.median(rng.choice(n, size=(n_resamples, n.size), replace=True), axis=1)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(rb / rn, [alpha, 1 - alpha])
    return {"speedup": point, "low": float(lo), "high": float(hi), "significant": bool(lo > 1 or hi < 1)}
