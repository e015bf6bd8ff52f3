"""Cost against length: a straight line through every repeat of a configuration measured at several
audio lengths. Its slope is the compute per second of audio (the long-form RTF), its intercept the
fixed cost of a request.

The same slope is predicted from one cell alone, from its decode step times: their mean, and how
much a step slows as the sequence grows. The two come from different clocks (the end-to-end time of
requests of several lengths against the steps of one), so their agreement checks both."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from dia_bench.harness import stats
from dia_bench.harness.analysis import results

GROUP = ["run", "preset", "device", "plugins", "batch", "text_label"]


def _ols(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    """Least squares y = a + b x with t-intervals (n - 2 degrees of freedom)."""
    n = x.size
    xm, ym = x.mean(), y.mean()
    sxx = float(((x - xm) ** 2).sum())
    b = float(((x - xm) * (y - ym)).sum() / sxx)
    a = float(ym - b * xm)
    out = {"slope": b, "intercept": a, "slope_low": None, "slope_high": None, "intercept_low": None,
           "intercept_high": None, "points": n}
    if n < 3:
        return out
    resid = y - (a + b * x)
    s2 = float((resid ** 2).sum() / (n - 2))
    t = stats.t_quantile(1 - (1 - stats.CONFIDENCE) / 2, n - 2)
    se_b = math.sqrt(s2 / sxx)
    se_a = math.sqrt(s2 * (1 / n + xm * xm / sxx))
    out.update(slope_low=b - t * se_b, slope_high=b + t * se_b, intercept_low=a - t * se_a,
               intercept_high=a + t * se_a)
    return out


def slope_from_steps(long_form_rtf: float, batch: int, growth_us: float, steps: int,
                     lengths: list[tuple[float, int, int]]) -> float:
    """The fit's slope as one cell's decode steps predict it: step k costs s0 + growth x k, so a
    request of n steps costs s0 n + growth n (n - 1) / 2 beyond its fixed part; the same least
    squares over `lengths` (audio seconds, steps per request, repeats) then gives the slope."""
    from dia_bench.harness.presets import FRAMES_PER_SECOND

    g = growth_us / 1e6
    s0 = long_form_rtf * batch / FRAMES_PER_SECOND - g * (steps - 1) / 2
    x = [audio for audio, _, repeats in lengths for _ in range(repeats)]
    y = [s0 * n + g * n * (n - 1) / 2 for _, n, repeats in lengths for _ in range(repeats)]
    return _ols(np.asarray(x, dtype=float), np.asarray(y, dtype=float))["slope"]


def _slope_from_cells(cells: pd.DataFrame, reference: pd.Series) -> float | None:
    values = [reference[k] for k in ("long_form_rtf", "step_growth_us", "steps_per_request")]
    if any(v is None or v != v for v in values) or not all(cells["steps_per_request"].notna()):
        return None
    lengths = [(r["audio_seconds"], int(r["steps_per_request"]), len(r["repeats_seconds"]))
               for _, r in cells.iterrows()]
    return slope_from_steps(float(values[0]), int(reference["batch"]), float(values[1]), int(values[2]), lengths)


def fits(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One fit per configuration measured at two or more lengths, beside its longest cell's
    long-form RTF."""
    ok = results.ok_cells(df)
    rows = []
    for keys, g in ok.groupby(GROUP, dropna=False):
        if g["seconds"].nunique() < 2:
            continue
        x, y = [], []
        for _, r in g.iterrows():
            for t in r["repeats_seconds"]:
                x.append(r["audio_seconds"])
                y.append(t)
        fit = _ols(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
        longest = g.sort_values("seconds").iloc[-1]
        rows.append({**dict(zip(GROUP, keys, strict=True)), **fit, "slope_from_steps": _slope_from_cells(g, longest),
                     "lengths": sorted(float(s) for s in g["seconds"].unique()),
                     "long_form_rtf": longest["long_form_rtf"], "long_form_low": longest["long_form_rtf_low"],
                     "long_form_high": longest["long_form_rtf_high"], "long_form_at": float(longest["seconds"])})
    return rows
