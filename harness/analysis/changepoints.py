"""Steps in one configuration's speed across runs: where a series of runs changed level.

A run contributes the logs of its repeats. Two noises sit on top of each other: the repeats within a
run (what each run's own interval shows), and the run-to-run noise of a machine (another boot,
another neighbour, a warmer room), which the repeats of one run cannot see. Pooling every repeat of
a segment into one Welch test would treat that second noise as signal and find steps in a flat
series, so a run's mean log is modelled as

    level of its segment + run noise (variance tau^2, one per series) + repeat noise (s_i^2 / n_i),

with tau^2 estimated from the differences between consecutive runs (a median, so that the step
being looked for, one large difference among many, does not inflate it).

Binary segmentation: in a stretch of runs, the split with the largest t statistic among those whose
effect reaches `min_effect` becomes a step if it is significant at `alpha`, Bonferroni-corrected
for the splits tried; then both halves are searched again. Each step finally gets its ratio and 95%
interval against the segments on either side of it. Runs with fewer than `stats.MIN_REPEATS`
repeats have no interval and take no part. Below `MIN_RUNS` measured runs the run noise cannot be
estimated, and no step is claimed: two runs are for `dia-bench compare`, which says that a
difference is beyond the repeats' noise, not that it will last.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from dia_bench.harness import stats

# A step must be at least this large (5%): drift of a few percent between runs is normal on shared
# machines, and a significant 1% step is not worth a CI alarm.
MIN_EFFECT = 0.05
ALPHA = 0.05
# Four differences between consecutive runs are the fewest a median can estimate a spread from: a
# line with fewer measured runs gets no steps (dia-tiny's speed moves by up to 30% from one worker
# process to the next, and two such runs would otherwise show a "step" of that size).
MIN_RUNS = 5
# The median of |N(0, 1)|: turns a median absolute difference into a standard deviation.
_MEDIAN_ABS_NORMAL = 0.6744897501960817
# The variance of a median-based scale estimate is that of a standard deviation from about 37% as
# many points (its asymptotic efficiency): its degrees of freedom are counted so.
_MEDIAN_EFFICIENCY = 0.37


@dataclass(frozen=True)
class Step:
    """A change of level: `index` is the first run after it (in the series given to `detect`)."""

    index: int
    before: int  # the last run before the step that took part
    ratio: float  # level after / level before (> 1: slower, for times)
    low: float | None
    high: float | None
    runs_before: int
    runs_after: int

    @property
    def change_pct(self) -> float:
        return (self.ratio - 1) * 100


@dataclass(frozen=True)
class _Run:
    index: int
    mean: float  # mean of the logs of the repeats
    var_mean: float  # repeat noise of that mean: s^2 / n
    n: int


def _runs(samples_per_run: Sequence[Sequence[float]]) -> list[_Run]:
    out = []
    for i, samples in enumerate(samples_per_run):
        values = [v for v in samples if v is not None and v > 0 and math.isfinite(v)]
        if len(values) < stats.MIN_REPEATS:
            continue
        logs = np.log(values)
        out.append(_Run(i, float(logs.mean()), float(logs.var(ddof=1)) / len(logs), len(logs)))
    return out


def run_noise(runs: Sequence[_Run]) -> tuple[float, float]:
    """The run-to-run variance tau^2 of a series (at least MIN_RUNS) and its degrees of freedom."""
    diffs = np.abs(np.diff([r.mean for r in runs]))
    # Each difference holds the run noise of two runs and the repeat noise of both means.
    total = (float(np.median(diffs)) / _MEDIAN_ABS_NORMAL) ** 2 / 2
    tau2 = max(0.0, total - float(np.median([r.var_mean for r in runs])))
    return tau2, max(1.0, _MEDIAN_EFFICIENCY * len(diffs))


def _compare(left: Sequence[_Run], right: Sequence[_Run], tau2: float, tau_df: float) -> tuple[float, float, float]:
    """Difference of the segments' mean logs (right - left), its standard error and degrees of freedom.

    Each run weighs the same (a run is the unit that was repeated, not a repeat); Welch-Satterthwaite
    combines each run's repeat noise (n - 1 degrees of freedom) with the run noise.
    """
    diff = float(np.mean([r.mean for r in right]) - np.mean([r.mean for r in left]))
    terms = [(r.var_mean / len(seg) ** 2, r.n - 1) for seg in (left, right) for r in seg]
    if tau2 > 0:
        terms.append((tau2 * (1 / len(left) + 1 / len(right)), tau_df))
    variance = sum(t for t, _ in terms)
    if variance <= 0:
        return diff, 0.0, math.inf
    denominator = sum(t * t / df for t, df in terms if t > 0 and math.isfinite(df))
    df = variance ** 2 / denominator if denominator > 0 else math.inf
    return diff, math.sqrt(variance), df


def _quantile(p: float, df: float) -> float:
    return stats.t_quantile(p, min(df, 1e6))


def _best_split(runs: Sequence[_Run], tau2: float, tau_df: float, min_effect: float,
                alpha: float) -> int | None:
    """The position in `runs` of a significant step, or None."""
    splits = len(runs) - 1
    if splits < 1:
        return None
    best, best_t, best_df = None, 0.0, math.inf
    for k in range(1, len(runs)):
        diff, se, df = _compare(runs[:k], runs[k:], tau2, tau_df)
        if abs(math.expm1(diff)) < min_effect:
            continue
        t = math.inf if se == 0 else abs(diff) / se
        if t > best_t:
            best, best_t, best_df = k, t, df
    if best is None:
        return None
    return best if best_t > _quantile(1 - alpha / (2 * splits), best_df) else None


def measured_runs(samples_per_run: Sequence[Sequence[float]]) -> int:
    """How many runs of a series take part (those with an interval)."""
    return len(_runs(samples_per_run))


def detect(samples_per_run: Sequence[Sequence[float]], min_effect: float = MIN_EFFECT,
           alpha: float = ALPHA) -> list[Step]:
    """The steps in a series of runs, each given as the samples (times, RTFs) of its repeats, in time order."""
    runs = _runs(samples_per_run)
    if len(runs) < MIN_RUNS:
        return []
    tau2, tau_df = run_noise(runs)
    cuts: list[int] = []
    stack = [(0, len(runs))]
    while stack:
        a, b = stack.pop()
        k = _best_split(runs[a:b], tau2, tau_df, min_effect, alpha)
        if k is not None:
            cuts.append(a + k)
            stack += [(a, a + k), (a + k, b)]
    cuts.sort()
    steps = []
    bounds = [0, *cuts, len(runs)]
    for prev, cut, nxt in zip(bounds, bounds[1:], bounds[2:], strict=False):
        left, right = runs[prev:cut], runs[cut:nxt]
        diff, se, df = _compare(left, right, tau2, tau_df)
        half = _quantile(1 - (1 - stats.CONFIDENCE) / 2, df) * se
        steps.append(Step(index=right[0].index, before=left[-1].index, ratio=math.exp(diff),
                          low=math.exp(diff - half), high=math.exp(diff + half),
                          runs_before=len(left), runs_after=len(right)))
    return steps
