"""Whether a cell's output is still Dia's: the quality bar recommendations are chosen under.

A configuration is recommended only when the distributions it samples from stay close to the fp32
reference's, judged on the run's shared history (`harness/worker/fidelity.py`): the mean total variation
distance over every token of the audio must not exceed the bar. A faster configuration that fails
it is listed apart with what it trades, never silently preferred.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

# On average at most 5% of the probability mass of each token moves: the same sampling, within the
# drift that casting a well-conditioned model to bf16 usually causes.
DEFAULT_MAX_TOTAL_VARIATION = 0.05
# The codec's audio on the reference's own codes, against the fp32 codec's: a plugin that changes the
# codec (codec-dtype, codec-compile, channels-last, autocast) must stay this close. bf16 rounding alone
# gives about 44 dB; 30 dB is noise about 3% of the signal's amplitude.
MIN_CODEC_SNR_DB = 30.0


def _num(v: Any) -> float | None:
    if v is None or (isinstance(v, float) and v != v):
        return None
    return float(v)


def preserves_numerics(plugins: str) -> bool:
    """Plugins that change no arithmetic (plugin.preserves_numerics): their output is the reference's."""
    from dia_bench.optimizations.registry import get_plugin, split_spec

    if plugins == "baseline":
        return True
    try:
        return all(get_plugin(split_spec(spec)[0]).preserves_numerics for spec in plugins.split("+"))
    except Exception:  # a plugin of another installation: it must show its figures
        return False


def changes_sampling_by_design(plugins: str) -> bool:
    """Plugins that change what is sampled on purpose (a CFG scale other than Dia's): no numeric
    precision makes them the same model."""
    from dia_bench.optimizations.registry import get_plugin, split_spec

    if plugins == "baseline":
        return False
    for spec in plugins.split("+"):
        name, raw = split_spec(spec)
        try:
            plugin = get_plugin(name)
            if plugin.changes_output(plugin.parse(raw)):
                return True
        except Exception:  # a plugin of another installation: judge it on its figures alone
            continue
    return False


def assess(row: pd.Series, max_tv: float = DEFAULT_MAX_TOTAL_VARIATION) -> dict[str, str]:
    """`status`: reference, exact (its plugins change no arithmetic), passes, fails, unjudged (it moves no
    further than the reference's own weights do under a fraction of bf16's rounding, and those move
    past the bar: these weights cannot judge it; on synthetic weights that sensitive, any precision change
    is unjudged) or unmeasured; `why`: one line a reader can check.
    Only the reference, exact and passes are evidence enough to recommend (`eligible`)."""
    if row["plugins"] == "baseline":
        return {"status": "reference", "why": "the unoptimized fp32 reference"}
    tv = _num(row.get("total_variation"))
    if row.get("fidelity_error"):
        return {"status": "fails", "why": f"fidelity could not be measured ({row['fidelity_error']})"}
    if tv is None:
        if changes_sampling_by_design(row["plugins"]):
            return {"status": "fails", "why": "changes what is sampled by design (fidelity not measured)"}
        if preserves_numerics(row["plugins"]):
            return {"status": "exact", "why": "its plugins change no arithmetic: the reference's output"}
        return {"status": "unmeasured", "why": "quality not verified: fidelity was not measured in this run"}
    top1 = _num(row.get("top1_agreement"))
    detail = f"total variation {tv:.3f}" + (f", top-1 agreement {top1:.3f}" if top1 is not None else "")
    snr = _num(row.get("codec_same_codes_snr_db"))
    if snr is not None and row.get("codec_same_codes_identical") is not True:
        if snr < MIN_CODEC_SNR_DB:
            return {"status": "fails", "why": f"{detail}; but the codec's audio on the same codes is {snr:.1f} dB "
                                              f"from fp32's, under the floor of {MIN_CODEC_SNR_DB:g} dB"}
        detail += f", codec SNR {snr:.1f} dB"
    if tv <= max_tv:
        return {"status": "passes", "why": f"{detail} (bar {max_tv:g})"}
    why = f"{detail}, over the bar of {max_tv:g}"
    if changes_sampling_by_design(row["plugins"]):
        return {"status": "fails", "why": why + ": it changes what is sampled"}
    sensitivity = _num(row.get("reference_sensitivity_tv"))
    if sensitivity is not None and sensitivity > max_tv:
        noise = _num(row.get("reference_sensitivity_noise"))
        draws = row.get("reference_sensitivity_draws")
        spread = (f" (the largest of {len(draws)} draws: {min(draws):.3f} to {max(draws):.3f})"
                  if isinstance(draws, list) and len(draws) > 1 else " (one draw of the noise)")
        moved = f"the reference itself moves up to {sensitivity:.3f}{spread} when its layers' outputs change by " \
                f"{noise:g}, a fraction of bf16's rounding"
        if tv <= sensitivity:
            return {"status": "unjudged", "why": f"quality not verified: {detail}; but {moved}, so these weights "
                                                 "cannot judge precision: judge quality on real weights"}
        if row.get("weights_source") == "synthetic":
            # Random weights that noise far below bf16's rounding already moves past the bar say nothing of
            # a change as large as bf16 or int8: moving further than that small probe is expected of any.
            return {"status": "unjudged", "why": f"quality not verified: {detail}; synthetic weights, and {moved}: "
                                                 "they cannot judge a change of precision: judge quality on real "
                                                 "weights"}
        return {"status": "fails", "why": f"{why}, and further than the reference's own sensitivity ({moved})"}
    return {"status": "fails", "why": why}


RECOMMENDABLE = ("reference", "exact", "passes")
UNVERIFIED = ("unmeasured", "unjudged")  # shown apart as "fastest, quality not verified", never recommended


def statuses(df: pd.DataFrame, max_tv: float = DEFAULT_MAX_TOTAL_VARIATION) -> pd.Series:
    """Each cell's `assess` status, on the frame's index."""
    return df.apply(lambda r: assess(r, max_tv)["status"], axis=1) if not df.empty else \
        pd.Series(dtype=object, index=df.index)


def eligible(df: pd.DataFrame, max_tv: float = DEFAULT_MAX_TOTAL_VARIATION) -> pd.Series:
    """True for cells that may be recommended: those whose quality is evidence, not absence of it."""
    return statuses(df, max_tv).isin(RECOMMENDABLE)


def unverified(df: pd.DataFrame, max_tv: float = DEFAULT_MAX_TOTAL_VARIATION) -> pd.Series:
    """True for cells whose quality was neither measured nor judgeable: fast, perhaps, but unproven."""
    return statuses(df, max_tv).isin(UNVERIFIED)


def fidelity_text(row: pd.Series) -> str:
    """What was compared, in words: sampled distributions, then the codec on identical codes."""
    if row["plugins"] == "baseline":
        return "reference"
    tv = _num(row.get("total_variation"))
    if tv is None:
        return "-"
    parts = [f"sampled: TV {tv:.3f}"]
    if (top1 := _num(row.get("top1_agreement"))) is not None:
        parts.append(f"top-1 {top1:.3f}")
    if (all9 := _num(row.get("all_channels_top1_agreement"))) is not None:
        parts.append(f"all 9 {all9:.3f}")
    text = ", ".join(parts)
    if row.get("codec_same_codes_identical") is True:
        text += "; codec on the same codes: identical"
    elif (snr := _num(row.get("codec_same_codes_snr_db"))) is not None:
        text += f"; codec on the same codes: SNR {snr:.1f} dB"
    if (free := _num(row.get("free_running_audio_snr_db"))) is not None:
        text += f"; free-running audio SNR {free:.1f} dB"
    return text


def unmeasured_note(df: pd.DataFrame, max_tv: float = DEFAULT_MAX_TOTAL_VARIATION) -> str | None:
    """A line for a report's first screen where some cells' quality was never measured (a suite with
    `fidelity = false`): their speed can be read, but nothing says they still sound like Dia."""
    ok = df[(df["status"] == "ok") & (df["plugins"] != "baseline")] if not df.empty else df
    if ok.empty:
        return None
    unmeasured = ok[statuses(ok, max_tv) == "unmeasured"]
    if unmeasured.empty:
        return None
    suites = ", ".join(sorted({str(s) for s in unmeasured["suite"].dropna()})) or "unknown"
    return (f"Quality not measured for {len(unmeasured)} of {len(ok)} configurations (suite {suites} ran without "
            "fidelity): their speed stands, but none of them is recommended until a run with fidelity judges it.")
