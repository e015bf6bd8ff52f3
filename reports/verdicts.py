"""Measured results set against the guide: each expectation with the figure that tests it."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from dia_bench.harness import stats
from dia_bench.harness.analysis import quality, results
from dia_bench.optimizations.registry import split_spec
from dia_bench.reports.expectations import load as load_expectations

# The guide's figures are about the real 1.6B model: a smaller model's speedups and speeds say nothing of them.
GUIDE_PRESET = "dia-1.6b"


def _verdict(low: float | None, high: float | None, exp_low: float, exp_high: float) -> str:
    """From the 95% interval against the guide's range: reproduced only when the whole interval lies
    in the range (a wide interval that merely touches it proves nothing); below or above when it lies
    wholly outside; inconclusive when it straddles a bound; nothing without an interval."""
    if low is None or high is None or low != low or high != high:
        return "too few repeats for a verdict"
    if high < exp_low:
        return "below"
    if low > exp_high:
        return "above"
    if exp_low == exp_high:  # a single figure: an interval holding it is all a measurement can show
        return "reproduced"
    if exp_low <= low and high <= exp_high:
        return "reproduced"
    return f"inconclusive: the interval [{low:.2f}, {high:.2f}] crosses the guide's bound"


def _default_value(spec: str) -> bool:
    from dia_bench.optimizations.registry import get_plugin, split_spec

    name, value = split_spec(spec)
    try:
        plugin = get_plugin(name)
    except Exception:
        return False
    return value is None or value == plugin.default


def pick(candidates: pd.DataFrame, all_combined: bool = False) -> pd.Series:
    """The cell that stands for a technique, chosen without looking at its speed: a single request,
    the longest audio (closest to the guide's long-form figures), the plugin's default value, the
    most repeats, then the tightest interval. Taking the fastest would crown the noisiest.
    For "all combined", the cell that combines the most plugins comes first."""
    c = candidates.copy()
    c["_single"] = c["batch"].fillna(1).astype(int) == 1
    c["_plugins"] = c["plugins"].str.count(r"\+") + 1
    c["_default"] = c["plugins"].map(lambda p: all(_default_value(s) for s in p.split("+")))
    c["_n"] = c["repeats_seconds"].map(len)
    lo, hi, mid = (c[k].astype(float) for k in ("speedup_low", "speedup_high", "speedup"))
    c["_width"] = ((hi - lo) / mid).fillna(float("inf"))
    keys = ["_single", "_plugins", "seconds", "_default", "_n", "_width"] if all_combined else \
        ["_single", "seconds", "_default", "_n", "_width"]
    ascending = [False, False, False, False, False, True] if all_combined else [False, False, False, False, True]
    return candidates.loc[c.sort_values(keys, ascending=ascending, kind="stable").index[0]]


def _names(plugins: str, specs: list[str]) -> bool:
    """A cell of exactly one of `specs`; a spec without a value (`compile`) stands for every value."""
    if "+" in plugins:
        return False
    name, _ = split_spec(plugins)
    return any(plugins == spec or spec == name for spec in specs)


def _float(v) -> float | None:
    return None if v is None or v != v else float(v)


def _shifted(v: Any, by: float) -> float | None:
    v = _float(v)
    return None if v is None else v + by


def _speedup_short(r: pd.Series) -> str:
    if _float(r["speedup_low"]) is None:
        return f"{float(r['speedup']):.2f}x (too few repeats for an interval)"
    return f"{float(r['speedup']):.2f}x [{float(r['speedup_low']):.2f}, {float(r['speedup_high']):.2f}]"


def _device_type(device: str) -> str:
    return str(device).split(":")[0]


def speedup_rows(df: pd.DataFrame, max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> list[dict[str, Any]]:
    """One row per guide expectation and device measured: the measured speedup, CI and verdict.

    These are verdicts on speed alone; whether the technique keeps Dia's output is the quality
    column of the same report."""
    ok = df[df["status"] == "ok"]
    devices = sorted({_device_type(d) for d in df["device"].dropna()}) or ["cpu"]
    rows = []
    for exp in load_expectations()["speedup"]:
        for device in devices:
            base = {"technique": exp["technique"], "expected": f"{exp['low']:g}-{exp['high']:g}x",
                    "exp_low": exp["low"], "exp_high": exp["high"], "device": device, "note": exp["note"],
                    "section": exp["section"], "measured": None, "low": None, "high": None, "cell": None,
                    "also_measured": [], "other_presets": []}
            if exp["plugins"] == ["gpu-vs-cpu"]:  # one comparison across devices, not one per device
                rows.append({**base, **_gpu_vs_cpu(ok, max_tv)})
                break
            if exp["device"] not in ("any", device):
                rows.append({**base, "verdict": f"not applicable on {device}"})
                continue
            on_device = ok[ok["device"].map(_device_type) == device]
            if exp["plugins"] == ["*"]:
                candidates = on_device[on_device["plugins"].str.contains(r"\+", regex=True)]
            else:
                # .loc: an empty list in [] would select no columns, not no rows
                candidates = on_device.loc[[_names(c, exp["plugins"]) for c in on_device["plugins"]]]
            candidates = candidates[candidates["speedup"].notna()]
            others = sorted(set(candidates["preset"]) - {GUIDE_PRESET})
            candidates = candidates[candidates["preset"] == GUIDE_PRESET]
            if candidates.empty:
                rows.append({**base, "other_presets": others, "verdict": f"not measured on {GUIDE_PRESET}" + (
                    f" (only on {', '.join(others)}, which the guide does not speak of)" if others else "")})
                continue
            chosen = pick(candidates, all_combined=exp["plugins"] == ["*"])
            others = [f"{r['description']}: {_speedup_short(r)}" for _, r in candidates.iterrows()
                      if r.name != chosen.name]
            rows.append({**base, "measured": float(chosen["speedup"]), "low": _float(chosen["speedup_low"]),
                         "high": _float(chosen["speedup_high"]), "cell": chosen["description"],
                         "also_measured": others,
                         "verdict": _verdict(_float(chosen["speedup_low"]), _float(chosen["speedup_high"]),
                                             exp["low"], exp["high"])})
    return rows


def _samples(row: pd.Series, column: str) -> list[float] | list[list[float]]:
    if column == "long_form_rtf":
        return [float(v) for v in (row.get("long_form_rtf_repeats") or [])]
    # A configuration measured in several processes is weighed on all of them.
    processes = row.get("processes")
    return processes if isinstance(processes, list) and processes else results.rtf_samples(row)


def _true(v: Any) -> bool:
    """True, whether pandas kept it as Python's bool or numpy's (a missing value is not)."""
    return isinstance(v, (bool, np.bool_)) and bool(v)


def _plugin_count(row: pd.Series) -> int:
    return 0 if row["plugins"] == "baseline" else str(row["plugins"]).count("+") + 1


def _same(a: Any, b: Any) -> bool:
    return a == b or (a != a and b != b) or (a is None and b is None)


def _baseline_of(cell: pd.Series, base: pd.Series) -> bool:
    """Whether `base` is the baseline `cell`'s speedup is measured against: its run's first baseline of the
    same preset, device, length, batch and text."""
    return (base.get("plugins") == "baseline" and base.get("role") == "baseline-start"
            and all(_same(cell.get(k), base.get(k)) for k in results.BASELINE_KEYS))


def _judged_against(cell: pd.Series, base: pd.Series) -> bool:
    """Whether `cell` has a speedup measured against `base`: then that speedup, drift-corrected between the
    baseline's repeats, is the comparison (the report's and the gate's)."""
    return (cell.get("role") == "cell" and cell.get("significant") in (True, False)
            and _float(cell.get("speedup")) is not None and _baseline_of(cell, base))


def beats(fast: pd.Series, slow: pd.Series, column: str = "rtf") -> bool:
    """Whether `fast` is faster than `slow` beyond the noise of their repeats and processes (the
    interval of their ratio excludes 1); without enough repeats on either side it is not. A cell against
    its own baseline is judged by its speedup, so a recommendation never contradicts the table."""
    if column == "rtf" and _judged_against(fast, slow):
        return _true(fast["significant"]) and float(fast["speedup"]) > 1
    if column == "rtf" and _judged_against(slow, fast):
        return _true(slow["significant"]) and float(slow["speedup"]) < 1
    r = stats.ratio_ci(_samples(slow, column), _samples(fast, column), process=results.process_term(slow),
                       new_process=results.process_term(fast))
    return r.get("significant") is True and r["speedup"] > 1


def tied_with(group: pd.DataFrame, best: pd.Series, max_tv: float, column: str = "rtf") -> pd.DataFrame:
    """The eligible cells `best` does not beat beyond noise: the same answer, as far as the run can tell."""
    ok = group[quality.eligible(group, max_tv)] if not group.empty else group
    ok = ok[ok[column].notna() & (ok.index != best.name)]
    return ok[[not beats(best, r, column) for _, r in ok.iterrows()]] if not ok.empty else ok


def best_eligible(group: pd.DataFrame, max_tv: float, column: str = "rtf") -> pd.Series | None:
    """The fastest cell that clears the quality bar, by `column`, declared only where it won: the plain
    baseline where the fastest is not faster than it beyond noise (a plugin earns its place by a
    significant speedup, not by the luck of a lower point estimate), and where the fastest does not beat
    the runner-up beyond noise either, the simplest of those tied with it (fewest plugins)."""
    ok = group[quality.eligible(group, max_tv)] if not group.empty else group
    ok = ok[ok[column].notna()]
    if ok.empty:
        return None
    best = ok.loc[ok[column].astype(float).idxmin()]
    if best["plugins"] != "baseline" and not _true(best.get("significant")):
        same = [_baseline_of(best, r) for _, r in ok.iterrows()]
        if any(same):
            return ok[same].iloc[0]
    tied = tied_with(ok, best, max_tv, column)
    if tied.empty:
        return best
    contenders = pd.concat([ok.loc[[best.name]], tied])
    order = contenders.assign(_n=contenders.apply(_plugin_count, axis=1), _v=contenders[column].astype(float))
    return contenders.loc[order.sort_values(["_n", "_v"], kind="stable").index[0]]


def tie_note(group: pd.DataFrame, chosen: pd.Series, max_tv: float, column: str = "rtf") -> str | None:
    """Where the chosen cell is not the fastest: the faster ones it is tied with, and why it was chosen."""
    tied = tied_with(group, chosen, max_tv, column)
    faster = tied[tied[column].astype(float) < float(chosen[column])] if not tied.empty else tied
    if faster.empty or chosen["plugins"] == "baseline":
        return None
    names = ", ".join(str(p) for p in faster.sort_values(column)["plugins"])
    return (f"tied with {names}: faster point estimates, not faster beyond noise, so the configuration with "
            "fewer plugins is recommended")


def not_beaten_note(group: pd.DataFrame, chosen: pd.Series, max_tv: float, column: str = "rtf") -> str | None:
    """When the baseline is chosen although a plugin's point estimate was lower: say which, and by how much."""
    if chosen["plugins"] != "baseline":
        return None
    ok = group[quality.eligible(group, max_tv)]
    ok = ok[ok[column].notna() & (ok["plugins"] != "baseline")]
    if ok.empty:
        return None
    fastest = ok.loc[ok[column].astype(float).idxmin()]
    if float(fastest[column]) >= float(chosen[column]):
        return None
    low, high = _float(fastest["speedup_low"]), _float(fastest["speedup_high"])
    interval = f"[{low:.2f}, {high:.2f}]" if low is not None else "(too few repeats for an interval)"
    return (f"no plugin beat the baseline beyond noise: the fastest, {fastest['plugins']}, measured "
            f"{float(fastest['speedup']):.2f}x {interval}")


def _gpu_vs_cpu(ok: pd.DataFrame, max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> dict[str, Any]:
    # One request at a time on both sides: a batch's aggregate speed is another question (throughput).
    ok = ok[(ok["preset"] == GUIDE_PRESET) & ~ok["role"].isin(results.REPEATED_BASELINE_ROLES)
            & (ok["batch"].fillna(1).astype(int) == 1)]
    g = best_eligible(ok[ok["device"].map(_device_type) == "cuda"], max_tv)
    c = best_eligible(ok[ok["device"].map(_device_type) == "cpu"], max_tv)
    if g is None or c is None:
        return {"verdict": f"not measured (needs {GUIDE_PRESET} runs on both a GPU and a CPU)",
                "device": "cuda vs cpu"}
    r = stats.ratio_ci(results.rtf_samples(c), results.rtf_samples(g), process=results.process_term(c),
                       new_process=results.process_term(g))
    return {"device": "cuda vs cpu", "measured": r["speedup"], "low": r["low"], "high": r["high"],
            "cell": f"{g['description']} vs {c['description']} "
                    "(each the fastest at batch 1 that clears the quality bar)",
            "verdict": _verdict(r["low"], r["high"], 5, 20)}


def hardware_rows(df: pd.DataFrame, max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> list[dict[str, Any]]:
    """The guide's RTF range beside each machine's best configuration that clears the quality bar.

    The guide's tables speak of long audio, one request at a time, so the verdict uses the batch-1
    long-form RTF (the decode step cost per second of audio, without the fixed cost of a request) with
    the codec's cost per second of audio added, since speech needs both; the short-length RTF is shown
    beside it.
    """
    ok = results.ok_cells(df)
    # The guide's RTF tables are per request: a batch's aggregate speed answers another question.
    ok = ok[ok["batch"].fillna(1).astype(int) == 1]
    table = load_expectations()["hardware"]
    rows = []
    keys = ["device_name", ok["device"].map(_device_type), "preset"]
    for (device_name, device, preset), group in ok.groupby(keys):
        column = "long_form_rtf" if group["long_form_rtf"].notna().any() else "rtf"
        best = best_eligible(group, max_tv, column)
        if best is None:
            continue
        # Speech needs the codec too: its cost per audio second joins the long-form figure (a fixed
        # shift of the interval, the codec being timed apart from the decode repeats).
        codec = _float(best.get("codec_decode_s"))
        audio = _float(best.get("audio_seconds"))
        codec_per_s = codec / audio if codec is not None and audio else None
        match = next((h for h in table if h["kind"] == ("gpu" if device == "cuda" else "cpu")
                      and any(m.lower() in str(device_name).lower() for m in h["match"])), None)
        long_form = column == "long_form_rtf"
        row = {"machine": device_name, "device": device, "preset": preset, "best_cell": best["description"],
               "rtf": best["rtf"], "rtf_low": best["rtf_ci_low"], "rtf_high": best["rtf_ci_high"],
               "long_form_rtf": best["long_form_rtf"], "long_form_low": best["long_form_rtf_low"],
               "long_form_high": best["long_form_rtf_high"], "fixed_seconds": best["fixed_seconds"],
               "basis": "long-form RTF" if long_form else "RTF at the measured length (no long-form figure)",
               "xrt": 1 / float(best[column]) if best[column] else None, "seconds": best["seconds"],
               "codec_rtf": codec_per_s, "end_to_end_long_form_rtf": None, "end_to_end_low": None,
               "end_to_end_high": None, "guide": None, "guide_range": None}
        if long_form and codec_per_s is not None:
            row.update(end_to_end_long_form_rtf=float(best["long_form_rtf"]) + codec_per_s,
                       end_to_end_low=_shifted(best["long_form_rtf_low"], codec_per_s),
                       end_to_end_high=_shifted(best["long_form_rtf_high"], codec_per_s),
                       basis="long-form RTF with the codec")
        if preset != GUIDE_PRESET:
            # The guide's tables speak of the real 1.6B model; a smaller model is faster for no merit.
            row["verdict"] = f"not comparable: the guide's tables are for {GUIDE_PRESET}, this is {preset}"
        elif match is None:
            row["verdict"] = "not comparable: other hardware (the guide has no row for it)"
        else:
            row["guide"] = match["name"]
            row["guide_range"] = f"RTF {match['rtf_low']:g}-{match['rtf_high']:g}"
            if row["end_to_end_long_form_rtf"] is not None:
                low, high = row["end_to_end_low"], row["end_to_end_high"]
            elif long_form:
                low, high = best["long_form_rtf_low"], best["long_form_rtf_high"]
            else:
                low, high = best["rtf_ci_low"], best["rtf_ci_high"]
            v = _verdict(_float(low), _float(high), match["rtf_low"], match["rtf_high"])
            v = {"below": "faster than the guide says", "above": "slower than the guide says"}.get(v, v)
            row["verdict"] = f"{v} ({row['basis']})"
        rows.append(row)
    return rows
