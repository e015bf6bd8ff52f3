"""Statistics over repeats: robust summaries, and intervals that keep their promise at small n.

Repeat times are positive and their noise is multiplicative (a busy machine makes every stage a
few percent slower), so intervals are Student-t intervals on the logarithms: the centre is the
geometric mean, a ratio of two cells is a difference of means of logs (Welch, unequal variances).
The t distribution is what makes 3 repeats honest: its quantile at 2 degrees of freedom is 4.30,
not the 1.96 a bootstrap or a normal interval silently uses. Below `MIN_REPEATS` no interval is
claimed at all. `tests/test_stats.py` simulates cells of known truth and checks the coverage.

Repeats inside one worker process share that process's luck: where its memory landed, which core
it ran on, how warm the machine was. Two processes running the same configuration differ by far more
than repeats inside one do, so an interval from one process's repeats alone is too narrow for any
comparison between processes, which is every comparison a report makes. Each log time is therefore
modelled as configuration + process effect + repeat noise (one-way random effects), and every
interval carries a process term: its variance `ProcessNoise.variance` is estimated from the
configurations a run measured in more than one process (the baseline: start, again, end), moderated
by a prior where those processes are few (as limma moderates a gene's variance), and its degrees of
freedom enter the interval's by Satterthwaite's approximation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

CONFIDENCE = 0.95
# Two repeats give one degree of freedom: an interval 12.7 standard errors wide, which says nothing
# a reader can use; one repeat gives none. Three is the least the suites may rely on.
MIN_REPEATS = 3
METHOD = ("Student-t on log times with a between-process term (geometric mean; Welch-Satterthwaite for ratios)")


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


@dataclass(frozen=True)
class ProcessNoise:
    """The variance of a process's effect on log time, with the degrees of freedom it rests on.

    `variance` is on the natural-log scale: 0.01 means two processes of one configuration typically
    differ by about exp(sqrt(2 x 0.01)) - 1 = 15%. `df` is infinite only for a term known exactly
    (tests); `source` says in words where the figure came from, for the reports.
    """

    variance: float
    df: float
    source: str

    @property
    def sd_pct(self) -> float:
        """One process's typical deviation, in percent."""
        return (math.exp(math.sqrt(self.variance)) - 1) * 100

    def describe(self) -> str:
        """`9.8% a process (4.6 df; <source>)`, as reports and compare name the term."""
        return f"{self.sd_pct:.1f}% a process ({self.df:.1f} df; {self.source})"


# Where neither the run nor the machine's history has several processes of one configuration, this
# is the term assumed, and said so. The committed reference runs (`dia-bench noise reference-results`)
# put dia-1.6b at about 4% a process on a CPU and 11.5% on an H200 (from two processes); 10% is a
# middle, and its few degrees of freedom keep a t quantile wide until a machine has a history.
DEFAULT_PRIOR = ProcessNoise(variance=0.10 ** 2, df=4.0,
                             source="the default prior (10% a process, 4 df): no machine history")
NO_PROCESS_NOISE = ProcessNoise(variance=0.0, df=math.inf, source="within-process repeats only")


@dataclass(frozen=True)
class ProcessAnova:
    """Sums of squares of log times split into between and within processes, poolable across
    configurations (each configuration contributes only its own processes' spread)."""

    ss_between: float = 0.0
    df_between: int = 0
    ss_within: float = 0.0
    df_within: int = 0
    n0_weight: float = 0.0  # sum over configurations of N - sum(n_i^2)/N: E[MSB] = s_w^2 + n0 s_b^2
    processes: int = 0

    def __add__(self, other: ProcessAnova) -> ProcessAnova:
        return ProcessAnova(self.ss_between + other.ss_between, self.df_between + other.df_between,
                            self.ss_within + other.ss_within, self.df_within + other.df_within,
                            self.n0_weight + other.n0_weight, self.processes + other.processes)

    def estimate(self, source: str) -> ProcessNoise | None:
        """The process variance and its Satterthwaite degrees of freedom; None without two processes
        of one configuration. A negative estimate (processes agreeing better than repeats) is 0, with
        the between-process degrees of freedom."""
        if self.df_between < 1 or self.df_within < 1 or self.n0_weight <= 0:
            return None
        msb, msw = self.ss_between / self.df_between, self.ss_within / self.df_within
        n0 = self.n0_weight / self.df_between
        variance = (msb - msw) / n0
        if variance <= 0:
            return ProcessNoise(0.0, float(self.df_between), source)
        df = (msb - msw) ** 2 / (msb ** 2 / self.df_between + msw ** 2 / self.df_within)
        return ProcessNoise(float(variance), float(df), source)


def process_anova(processes: Sequence[Sequence[float]]) -> ProcessAnova:
    """One configuration's processes (each a list of positive repeat times), as sums of squares of logs.
    A process with no repeats is left out; fewer than two processes contribute within-process
    spread only."""
    groups = [_logs(p) for p in processes if len(p)]
    if not groups:
        return ProcessAnova()
    sizes = np.array([g.size for g in groups], dtype=float)
    total = sizes.sum()
    grand = float(np.concatenate(groups).mean())
    ss_b = float(sum(g.size * (g.mean() - grand) ** 2 for g in groups))
    ss_w = float(sum(((g - g.mean()) ** 2).sum() for g in groups))
    k = len(groups)
    return ProcessAnova(ss_b if k > 1 else 0.0, k - 1, ss_w, int(total) - k,
                        float(total - (sizes ** 2).sum() / total) if k > 1 else 0.0, k)


def moderate(measured: ProcessNoise | None, prior: ProcessNoise, max_prior_df: float = 4.0) -> ProcessNoise:
    """The measured process variance shrunk towards the prior, weighted by degrees of freedom.

    The prior counts for at most `max_prior_df` degrees of freedom, so a run that measured many
    processes speaks for itself; without a measurement the prior is the answer, and says so."""
    d0 = min(prior.df, max_prior_df)
    if measured is None or measured.df <= 0:
        return ProcessNoise(prior.variance, d0, prior.source)
    df = d0 + measured.df
    variance = (d0 * prior.variance + measured.df * measured.variance) / df
    return ProcessNoise(variance, df, f"{measured.source}, moderated by {prior.source}")


def _satterthwaite(terms: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """Sum of variance terms and its effective degrees of freedom; each term is (variance, df)."""
    variance = sum(v for v, _ in terms)
    denominator = sum(v * v / d for v, d in terms if v > 0 and math.isfinite(d))
    return variance, (variance ** 2 / denominator if denominator > 0 else math.inf)


Samples = Sequence[float] | Sequence[Sequence[float]]


def _groups(values: Samples) -> list[np.ndarray]:
    """Log times per process: a flat list is one process, a list of lists one list a process."""
    if len(values) and isinstance(values[0], (list, tuple, np.ndarray)):
        return [g for g in (_logs(v) for v in values) if g.size]
    return [g for g in [_logs(values)] if g.size]  # type: ignore[arg-type]


@dataclass(frozen=True)
class _Estimate:
    """A configuration's log centre (the mean of its processes' means) and the variance of it."""

    log_center: float
    within: float  # repeat noise's share of the centre's variance
    within_df: int
    processes: int
    repeats: int

    @classmethod
    def of(cls, groups: list[np.ndarray]) -> _Estimate:
        k = len(groups)
        total = sum(g.size for g in groups)
        df = total - k
        pooled = sum(((g - g.mean()) ** 2).sum() for g in groups) / df if df > 0 else math.nan
        within = pooled * sum(1 / g.size for g in groups) / k ** 2 if df > 0 else math.nan
        return cls(float(np.mean([g.mean() for g in groups])), float(within), df, k, total)

    def too_few(self) -> str | None:
        """Why no interval: fewer than MIN_REPEATS repeats' worth of within-process spread."""
        return too_few(self.repeats) if self.within_df < MIN_REPEATS - 1 else None


def location_ci(values: Samples, confidence: float = CONFIDENCE,
                process: ProcessNoise | None = None) -> dict[str, Any]:
    """Geometric mean of positive repeats with its t-interval; no interval below MIN_REPEATS.

    `values` is one process's repeats, or a list of processes' repeats (the centre is then the mean
    of their means). With `process` the interval includes that between-process variance (`low`,
    `high`); `within_low` and `within_high` keep the repeats-only interval beside it."""
    groups = _groups(values)
    if not groups:
        return {"center": None, "low": None, "high": None, "n": 0, "reason": "no repeats"}
    est = _Estimate.of(groups)
    out: dict[str, Any] = {"center": float(math.exp(est.log_center)), "low": None, "high": None,
                           "within_low": None, "within_high": None, "n": est.repeats, "processes": est.processes,
                           "reason": est.too_few()}
    if out["reason"]:
        return out
    q = 1 - (1 - confidence) / 2
    half = t_quantile(q, est.within_df) * math.sqrt(est.within)
    out.update(within_low=float(math.exp(est.log_center - half)), within_high=float(math.exp(est.log_center + half)))
    noise = process or NO_PROCESS_NOISE
    variance, df = _satterthwaite([(est.within, est.within_df), (noise.variance / est.processes, noise.df)])
    # Satterthwaite's df can grow with an added term by more than its variance does: never let the
    # process term narrow the interval of the repeats alone.
    half = max(half, t_quantile(q, df) * math.sqrt(variance))
    out.update(low=float(math.exp(est.log_center - half)), high=float(math.exp(est.log_center + half)))
    return out


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


def ratio_ci(base: Samples, new: Samples, confidence: float = CONFIDENCE,
             base_after: Samples | None = None, weight: float = 0.0,
             process: ProcessNoise | None = None, new_process: ProcessNoise | None = None) -> dict[str, Any]:
    """Speedup = geometric mean of `base` / geometric mean of `new`, with a Welch-Satterthwaite
    t-interval on logs.

    With `base_after` the reference is the baseline interpolated in time: (1 - weight) x GM(base) +
    weight x GM(base_after), so a machine that drifted between two baseline measurements is compared
    at the speed it had when `new` ran; its variance enters by the delta method. Each argument is
    one process's repeats or a list of processes' repeats; with `process` every process that enters
    adds its between-process variance, so two processes of one configuration are not "different";
    `new_process` is the term of `new`'s processes where they ran elsewhere (another run), else `process`.
    Every sample that enters needs MIN_REPEATS values, else the point stands alone with the reason.
    `significant` means the interval excludes 1: the difference is beyond the noise (both parts).
    """
    gb, gn = _groups(base), _groups(new)
    ga = _groups(base_after) if base_after is not None else []
    w = float(weight) if ga else 0.0
    if not gb or not gn or (w > 0 and not ga):
        return {"speedup": None, "low": None, "high": None, "significant": None, "reason": "no repeats"}
    eb, en = _Estimate.of(gb), _Estimate.of(gn)
    ea = _Estimate.of(ga) if ga else None
    mb, ma = math.exp(eb.log_center), (math.exp(ea.log_center) if ea else 0.0)
    reference = (1 - w) * mb + w * ma
    # d log(reference) / d (log centre of base) and / d (log centre of base_after): the weights each
    # sample's noise carries into the log of the interpolated reference.
    parts = [(eb, (1 - w) * mb / reference), (ea, w * ma / reference), (en, -1.0)]
    parts = [(e, c) for e, c in parts if e is not None and c != 0]
    log_ratio = math.log(reference) - en.log_center
    out: dict[str, Any] = {"speedup": float(math.exp(log_ratio)), "low": None, "high": None, "significant": None,
                           "within_low": None, "within_high": None, "reason": None}
    for e, _ in parts:
        if reason := e.too_few():
            out["reason"] = reason
            return out
    within = [(c * c * e.within, e.within_df) for e, c in parts]
    noise = process or NO_PROCESS_NOISE
    other = new_process or noise
    between = [(noise.variance * sum(c * c / e.processes for e, c in parts if e is not en), noise.df),
               (other.variance / en.processes, other.df)]
    if other is noise:
        between = [(between[0][0] + between[1][0], noise.df)]
    q = 1 - (1 - confidence) / 2
    for low_key, high_key, terms in (("within_low", "within_high", within), ("low", "high", [*within, *between])):
        variance, df = _satterthwaite(terms)
        if variance == 0:  # identical repeats and no process term: no spread to widen the interval
            low = high = out["speedup"]
        else:
            half = t_quantile(q, df) * math.sqrt(variance)
            low, high = math.exp(log_ratio - half), math.exp(log_ratio + half)
        if low_key == "low":  # never narrower than the repeats alone (see location_ci)
            low, high = min(low, out["within_low"]), max(high, out["within_high"])
        out[low_key], out[high_key] = float(low), float(high)
    out["significant"] = bool(out["low"] > 1 or out["high"] < 1) if out["low"] != out["high"] else out["speedup"] != 1
    return out
