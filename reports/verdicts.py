"""Measured results set against the guide: each expectation with the figure that tests it."""

from __future__ import annotations

from typing import Any

import pandas as pd

from harness import results, stats
from optimizations.registry import split_spec
from reports.expectations import load as load_expectations

# The guide's figures are about the real 1.6B model: a smaller model's speedups and speeds say nothing of them.
GUIDE_PRESET = "dia-1.6b"


def _verdict(low: float | None, high: float | None, exp_low: float, exp_high: float) -> str:
    """reproduced when the 95% interval meets the guide's range; else below or above it."""
    if low is None or high is None:
        return "not measured"
    if high < exp_low:
        return "below"
    if low > exp_high:
        return "above"
    return "reproduced"


def _names(plugins: str, specs: list[str]) -> bool:
    """A cell of exactly one of `specs`; a spec without a value (`compile`) stands for every value."""
    if "+" in plugins:
        return False
    name, _ = split_spec(plugins)
    return any(plugins == spec or spec == name for spec in specs)


def _device_type(device: str) -> str:
    return str(device).split(":")[0]


def speedup_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """One row per guide expectation and device measured: the measured speedup, CI and verdict."""
    ok = df[df["status"] == "ok"]
    devices = sorted({_device_type(d) for d in df["device"].dropna()}) or ["cpu"]
    rows = []
    for exp in load_expectations()["speedup"]:
        for device in devices:
            base = {"technique": exp["technique"], "expected": f"{exp['low']:g}-{exp['high']:g}x",
                    "exp_low": exp["low"], "exp_high": exp["high"], "device": device, "note": exp["note"],
                    "section": exp["section"], "measured": None, "low": None, "high": None, "cell": None}
            if exp["device"] not in ("any", device):
                rows.append({**base, "verdict": f"not applicable on {device}"})
                continue
            on_device = ok[ok["device"].map(_device_type) == device]
            if exp["plugins"] == ["gpu-vs-cpu"]:
                rows.append({**base, **_gpu_vs_cpu(ok)})
                continue
            if exp["plugins"] == ["*"]:
                candidates = on_device[on_device["plugins"].str.contains(r"\+", regex=True)]
            else:
                candidates = on_device[[_names(c, exp["plugins"]) for c in on_device["plugins"]]]
            candidates = candidates[candidates["speedup"].notna()]
            others = sorted(set(candidates["preset"]) - {GUIDE_PRESET})
            candidates = candidates[candidates["preset"] == GUIDE_PRESET]
            if candidates.empty:
                rows.append({**base, "verdict": f"not measured on {GUIDE_PRESET}" + (
                    f" (only on {', '.join(others)}, which the guide does not speak of)" if others else "")})
                continue
            best = candidates.loc[candidates["speedup"].astype(float).idxmax()]
            rows.append({**base, "measured": float(best["speedup"]), "low": float(best["speedup_low"]),
                         "high": float(best["speedup_high"]), "cell": best["description"],
                         "verdict": _verdict(best["speedup_low"], best["speedup_high"], exp["low"], exp["high"])})
    # "GPU over CPU" is one comparison, not one per device.
    seen, out = set(), []
    for r in rows:
        key = (r["technique"], r["device"] if r["technique"] != "GPU over CPU" else "")
        if key not in seen:
            seen.add(key)
            out.append(r)
    return out


def _gpu_vs_cpu(ok: pd.DataFrame) -> dict[str, Any]:
    ok = ok[ok["preset"] == GUIDE_PRESET]
    gpu = ok[ok["device"].map(_device_type) == "cuda"]
    cpu = ok[ok["device"].map(_device_type) == "cpu"]
    if gpu.empty or cpu.empty:
        return {"verdict": f"not measured (needs {GUIDE_PRESET} runs on both a GPU and a CPU)",
                "device": "cuda vs cpu"}
    g, c = gpu.loc[gpu["rtf"].idxmin()], cpu.loc[cpu["rtf"].idxmin()]
    r = stats.ratio_ci(results.rtf_samples(c), results.rtf_samples(g))
    return {"device": "cuda vs cpu", "measured": r["speedup"], "low": r["low"], "high": r["high"],
            "cell": f"{g['description']} vs {c['description']}", "verdict": _verdict(r["low"], r["high"], 5, 20)}


def hardware_rows(df: pd.DataFrame) -> list[dict[str, Any]]:
    """The guide's RTF range beside the best measured configuration of each machine and device."""
    ok = results.ok_cells(df)
    table = load_expectations()["hardware"]
    rows = []
    keys = ["device_name", ok["device"].map(_device_type), "preset"]
    for (device_name, device, preset), group in ok.groupby(keys):
        best = group.loc[group["rtf"].idxmin()]
        match = next((h for h in table if h["kind"] == ("gpu" if device == "cuda" else "cpu")
                      and any(m.lower() in str(device_name).lower() for m in h["match"])), None)
        row = {"machine": device_name, "device": device, "preset": preset, "best_cell": best["description"],
               "rtf": best["rtf"], "rtf_low": best["rtf_ci_low"], "rtf_high": best["rtf_ci_high"],
               "xrt": best["xrt"], "seconds": best["seconds"], "guide": None, "guide_range": None}
        if preset != GUIDE_PRESET:
            # The guide's tables speak of the real 1.6B model; a smaller model is faster for no merit.
            row["verdict"] = f"not comparable: the guide's tables are for {GUIDE_PRESET}, this is {preset}"
        elif match is None:
            row["verdict"] = "not comparable: other hardware (the guide has no row for it)"
        else:
            row["guide"] = match["name"]
            row["guide_range"] = f"RTF {match['rtf_low']:g}-{match['rtf_high']:g}"
            v = _verdict(best["rtf_ci_low"], best["rtf_ci_high"], match["rtf_low"], match["rtf_high"])
            row["verdict"] = {"below": "faster than the guide says", "above": "slower than the guide says"}.get(v, v)
        rows.append(row)
    return rows
