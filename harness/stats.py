"""Statistics over repeats: robust summaries, and intervals that keep their promise at small n.

Repeat times are positive and their noise is multiplicative (a busy machine makes every stage a
few percent slower), so intervals are Student-t intervals on the logarithms: the centre is the
geometric mean, a ratio of two cells is a difference of means of logs (Welch, unequal variances).
The t distribution is what makes 3 repeats honest: its quantile at 2 degrees of freedom is 4.30,
not the 1.96 a bootstrap or a normal interval silently uses. Below `MIN_REPEATS` no interval is
claimed at all. `tests/test_stats.py` simulates cells of known truth and checks the coverage.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np

CONFIDENCE = 0.95
# Two repeats give one degree of freedom: an interval 12.7 standard errors wide, which says nothing
# a reader can use; one repeat gives none. Three is the least the suites may rely on.
MIN_REPEATS = 3
METHOD = "Student-t on log times (geometric mean; Welch for ratios)"


def median(values: Sequence[float]) -> float | None:
    return float(np.median(values)) if len(values) else None


def iqr(values: Sequence[float]) -> float | None:
    if not len(values):
        return None
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1)


# Repeats of one cell on a quiet machine differ by percents; one twice as slow as another means
# something else ran meanwhile, and the interval, though honest, is then mostly that disturbance.
DISTURBED_RATIO = 2.0


def disturbance(values: Sequence[float]) -> str | None:
    """A warning when the slowest repeat took at least DISTURBED_RATIO times the fastest."""
    if len(values) < 2 or min(values) <= 0:
        return None
    ratio = max(values) / min(values)
    if ratio < DISTURBED_RATIO:
        return None
    return f"repeats disagree: the slowest took {ratio:.1f}x the fastest (was the machine busy?); measure again"


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


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        even = m * (b - m) * x / ((a + m2 - 1) * (a + m2))
        odd = -(a + m) * (a + b + m) * x / ((a + m2) * (a + m2 + 1))
        for num in (even, odd):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-14:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    if x <= 0:
        return 0.0
    if x >= 1:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1) / (a + b + 2):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with `df` (possibly fractional) degrees of freedom."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1 - tail if t > 0 else tail


@lru_cache(maxsize=4096)
def _t_quantile_cached(p: float, df: float) -> float:
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(80):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return hi


def t_quantile(p: float, df: float) -> float:
    """The p-quantile of Student's t, p >= 0.5. Welch's fractional df is rounded down to 0.01, which
    only ever widens an interval."""
    if not 0.5 <= p < 1 or df <= 0:
        raise ValueError(f"t_quantile needs 0.5 <= p < 1 and df > 0 (got p={p}, df={df})")
    return _t_quantile_cached(p, math.floor(df * 100) / 100 if df < 1e6 else 1e6)


def too_few(n: int) -> str:
    return f"too few repeats for an interval (n={n}; a 95% interval needs {MIN_REPEATS})"


def _logs(values: Sequence[float]) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.size and (arr <= 0).any():
        raise ValueError("times must be positive")
    return np.log(arr)


def location_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Geometric mean of positive repeats with its t-interval; no interval below MIN_REPEATS."""
    logs = _logs(values)
    n = int(logs.size)
    if n == 0:
        return {"center": None, "low": None, "high": None, "n": 0, "reason": "no repeats"}
    center = float(math.exp(logs.mean()))
    if n < MIN_REPEATS:
        return {"center": center, "low": None, "high": None, "n": n, "reason": too_few(n)}
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * logs.std(ddof=1) / math.sqrt(n)
    return {"center": center, "low": float(math.exp(logs.mean() - half)),
            "high": float(math.exp(logs.mean() + half)), "n": n, "reason": None}


def linear_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> dict[str, Any]:
    """Arithmetic mean with its t-interval, for quantities that may be near zero or negative."""
    arr = np.asarray(values, dtype=float)
    n = int(arr.size)
    if n == 0:
        return {"center": None, "low": None, "high": None, "n": 0, "reason": "no repeats"}
    center = float(arr.mean())
    if n < MIN_REPEATS:
        return {"center": center, "low": None, "high": None, "n": n, "reason": too_few(n)}
    half = t_quantile(1 - (1 - confidence) / 2, n - 1) * arr.std(ddof=1) / math.sqrt(n)
    return {"center": center, "low": center - half, "high": center + half, "n": n, "reason": None}


def ratio_ci(base: Sequence[float], new: Sequence[float], confidence: float = CONFIDENCE,
             base_after: Sequence[float] | None = None, weight: float = 0.0) -> dict[str, Any]:
    """Speedup = geometric mean of `base` / geometric mean of `new`, with a Welch t-interval on logs.

    With `base_after` the reference is the baseline interpolated in time: (1 - weight) x GM(base) +
    weight x GM(base_after), so a machine that drifted between two baseline measurements is compared
    at the speed it had when `new` ran; its variance enters by the delta method. Every sample that
    enters needs MIN_REPEATS values, else the point stands alone with the reason.
    `significant` means the interval excludes 1: the difference is beyond the repeats' noise.
    """
    lb, ln = _logs(base), _logs(new)
    la = _logs(base_after) if base_after is not None else np.array([])
    w = float(weight) if la.size else 0.0
    if lb.size == 0 or ln.size == 0 or (w > 0 and la.size == 0):
        return {"speedup": None, "low": None, "high": None, "significant": None, "reason": "no repeats"}
    gb, ga = math.exp(lb.mean()), (math.exp(la.mean()) if la.size else 0.0)
    reference = (1 - w) * gb + w * ga
    # d log(reference) / d mean(log base) and / d mean(log base_after): the weights each sample's
    # noise carries into the log of the interpolated reference.
    parts = [(lb, (1 - w) * gb / reference), (la, w * ga / reference), (ln, -1.0)]
    parts = [(x, c) for x, c in parts if c != 0]
    log_ratio = math.log(reference) - ln.mean()
    out: dict[str, Any] = {"speedup": float(math.exp(log_ratio)), "low": None, "high": None, "significant": None,
                           "reason": None}
    smallest = min(x.size for x, _ in parts)
    if smallest < MIN_REPEATS:
        out["reason"] = too_few(smallest)
        return out
    terms = [c * c * x.var(ddof=1) / x.size for x, c in parts]
    variance = sum(terms)
    if variance == 0:  # identical repeats: no spread to widen the interval
        out.update(low=out["speedup"], high=out["speedup"], significant=out["speedup"] != 1)
        return out
    df = variance ** 2 / sum(t * t / (x.size - 1) for t, (x, _) in zip(terms, parts, strict=True) if t > 0)
    half = t_quantile(1 - (1 - confidence) / 2, df) * math.sqrt(variance)
    low, high = math.exp(log_ratio - half), math.exp(log_ratio + half)
    out.update(low=float(low), high=float(high), significant=bool(low > 1 or high < 1))
    return out
