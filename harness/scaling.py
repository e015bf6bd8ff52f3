"""Cost against length: a straight line through every repeat of a configuration measured at several
audio lengths. Its slope is the compute per second of audio (the long-form RTF), its intercept the
fixed cost of a request; each cell's own long-form figure should agree with the slope."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from harness import results, stats

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
        rows.append({**dict(zip(GROUP, keys, strict=True)), **fit,
                     "lengths": sorted(float(s) for s in g["seconds"].unique()),
                     "long_form_rtf": longest["long_form_rtf"], "long_form_low": longest["long_form_rtf_low"],
                     "long_form_high": longest["long_form_rtf_high"], "long_form_at": float(longest["seconds"])})
    return rows
