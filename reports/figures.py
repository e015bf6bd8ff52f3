"""How every report writes a figure and its 95% interval, so that the terminal, Markdown, HTML, compare,
history and recommend all say it the same way."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from dia_bench.harness.stats import MIN_REPEATS

NO_INTERVAL = f"(fewer than {MIN_REPEATS} repeats: no interval)"


def absent(v: Any) -> bool:
    """None or NaN: pandas gives either for a figure a record lacks."""
    return v is None or v != v


def number(v: Any, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if absent(v) else f"{format(float(v), spec)}{suffix}"


def interval(point: Any, low: Any, high: Any, spec: str = ".3f", suffix: str = "") -> str:
    """`0.512 [0.498, 0.527]`; the point alone, said so, where there is no interval."""
    if absent(point):
        return "-"
    if absent(low):
        return f"{number(point, spec, suffix)} {NO_INTERVAL}"
    return f"{number(point, spec, suffix)} [{format(float(low), spec)}, {format(float(high), spec)}]"


def speedup(row: Any) -> str:
    """`1.52x [1.40, 1.65]*`, the star where the interval excludes 1 (a row of a results table or a dict)."""
    if row.get("baseline_ref") == "baseline-start" and row.get("role") == "baseline-start":
        return "1.00x (the reference)"
    sig = row.get("significant")
    star = "*" if not absent(sig) and bool(sig) and not absent(row.get("speedup_low")) else ""
    return interval(row.get("speedup"), row.get("speedup_low"), row.get("speedup_high"), ".2f", "x") + star


def roofline(row: Any) -> str:
    """`70%`: the step's bytes (weights and attention caches) over the bandwidth it had; records from
    before the caches were counted give the weights alone, said so; `?` marks a bandwidth that moved
    over the repeats; `!` a step that read faster than that bandwidth (the record's roofline problem)."""
    both, weights = row.get("fraction_of_bandwidth"), row.get("weights_fraction_of_bandwidth")
    if not absent(both):
        marks = (" ?" if row.get("bandwidth_unsteady") else "") + (" !" if row.get("roofline_problem") else "")
        return f"{float(both):.0%}{marks}"
    return "-" if absent(weights) else f"{float(weights):.0%} (weights only)"


def kernel_rates(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The read kernels a record's roofline took the machine's bandwidth from, in GB/s, each with its share
    of the best: a step reads its weights no faster than the library kernel it calls (fp32 through MKL on
    an AMD CPU read at a fifth of the memory's rate), which a roofline over the memory alone hides."""
    # Here, not at the top: a run's terminal summary imports this module and has no use for pandas.
    from dia_bench.harness.analysis.results import read_kernels

    roof = rec.get("roofline") or {}
    best, kernels = read_kernels(roof)
    if not kernels or not best:
        return None
    return {"best": best, "method": roof.get("bandwidth_method") or "",
            "text": ", ".join(f"{name} {gbps:.1f} ({gbps / best:.0%})" for name, gbps in kernels.items())}


def memory_lines(records: Iterable[dict[str, Any]]) -> list[str]:
    """For the Markdown pages, one line a machine and device: kernel_rates as a sentence."""
    machines: dict[tuple, dict[str, Any]] = {}
    for rec in records:
        env = rec.get("env") or {}
        if (rates := kernel_rates(rec)) is not None:
            machines.setdefault((env.get("hostname"), env.get("device_name")), rates)
    return [f"- memory of {host} ({device_name}): {rates['best']} GB/s, the best of its read kernels in GB/s and as "
            f"a share of it: {rates['text']}; a step reads its weights no faster than the kernel its layers call"
            for (host, device_name), rates in machines.items()]


def ms_text(estimate: dict[str, Any]) -> str:
    """A quantile as `value [low, high]` in ms; `>timeout` where censored, `?` for an open side."""
    def one(v: float | None, open_side: str) -> str:
        return open_side if v is None else f"{v * 1000:.0f}"

    if estimate["censored"]:
        return ">timeout"
    if estimate["value"] is None:
        return "-"
    return f"{one(estimate['value'], '-')} [{one(estimate['low'], '?')}, {one(estimate['high'], '?')}]"
