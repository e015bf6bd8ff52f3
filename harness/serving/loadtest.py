"""A whole load test against one target: the stepped rates, each an open-loop run, the max-rate search over
them, and the document and table that `dia-bench load` writes and prints.

It takes a target built by its caller (the command line applies the plugins, or points at a server), so it
stays within the serving role: it never loads a pipeline itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from dia_bench.harness.errors import UsageError
from dia_bench.harness.serving.loadgen import LoadRun, MaxRate, Target, find_max_rate, run_load

# Labelled transcripts, so that a configuration names its texts instead of carrying them; lengths differ so
# that a run can show how the text's length moves the time to first audio (the encoder's prefill).
TEXTS = {
    "short": "[S1] Hello there.",
    "medium": "[S1] Dia is an open weights text to dialogue model. [S2] You get full control over scripts and voices.",
    "long": ("[S1] Dia is an open weights text to dialogue model. [S2] You get full control over scripts and "
             "voices. [S1] Wow. Amazing. (laughs) [S2] Try it now on GitHub or Hugging Face, and tell us what "
             "you make with it. [S1] It reads both speakers from one transcript, with their pauses."),
}


def parse_rates(text: str) -> list[float]:
    """Comma-separated offered rates in requests per second; raises UsageError naming the fix."""
    rates = []
    for part in (p.strip() for p in text.split(",")):
        try:
            rate = float(part)
        except ValueError:
            raise UsageError(f"--rates {text!r}: {part!r} is not a number; give rates in requests per second, "
                             "such as 0.5,1,2") from None
        if not math.isfinite(rate) or rate <= 0:
            raise UsageError(f"--rates {text!r}: every rate must be a finite number > 0 (got {part}), "
                             "such as 0.5,1,2")
        rates.append(rate)
    return sorted(set(rates))


def parse_texts(text: str) -> list[str]:
    """Comma-separated labels of TEXTS; raises UsageError naming the labels there are."""
    labels = [p.strip() for p in text.split(",") if p.strip()]
    if not labels:
        raise UsageError(f"--texts is empty: give one or more of {', '.join(TEXTS)}, such as short,medium")
    unknown = [label for label in labels if label not in TEXTS]
    if unknown:
        raise UsageError(f"--texts: unknown label {unknown[0]!r}; choose from {', '.join(TEXTS)}")
    return labels


@dataclass
class LoadTest:
    runs: list[LoadRun]
    max_rate: MaxRate


async def run_rates(target: Target, texts: Sequence[str], rates: Sequence[float], *, requests: int | None,
                    duration_s: float | None, seconds: float, seed: int, timeout_s: float,
                    target_ttfa_s: float, criterion: str = "upper-bound", progress: Any = None) -> LoadTest:
    """Every rate once, lowest first, then the max-rate search judged on those same runs.

    Each rate is run whether or not a lower one failed, so that the table shows the whole curve; the search
    reads the runs already made instead of running them again, which would double the time for nothing."""
    runs: dict[float, LoadRun] = {}
    for rate in sorted(set(rates)):
        runs[rate] = await run_load(target, texts, rate, requests=requests, duration_s=duration_s,
                                    seconds=seconds, seed=seed, timeout_s=timeout_s)
        if progress is not None:
            progress(runs[rate])

    async def measured(rate: float) -> LoadRun:
        return runs[rate]

    max_rate = await find_max_rate(measured, list(runs), target_ttfa_s, criterion=criterion)
    return LoadTest(list(runs.values()), max_rate)


def document(test: LoadTest, machine: dict[str, Any], configuration: dict[str, Any],
             includes: dict[str, Any]) -> dict[str, Any]:
    """load.json: strict JSON (no NaN or infinity: an unbounded interval side is null, marked censored)."""
    return {
        "kind": "dia-bench load",
        "machine": machine,
        "configuration": configuration,
        "includes": includes,
        "rates": [run.to_dict() for run in test.runs],
        "max_rate": test.max_rate.to_dict(),
    }


def _ms(estimate: dict[str, Any]) -> str:
    """A quantile as `value [low, high]` in ms; `>timeout` where censored, `?` for an open side."""
    def one(v: float | None, open_side: str) -> str:
        return open_side if v is None else f"{v * 1000:.0f}"

    if estimate["censored"]:
        return ">timeout"
    if estimate["value"] is None:
        return "-"
    return f"{one(estimate['value'], '-')} [{one(estimate['low'], '?')},{one(estimate['high'], '?')}]"


def table(doc: dict[str, Any]) -> str:
    """The readable summary: a row per rate, quantiles in ms with their 95% intervals."""
    header = ["rate/s", "p50 TTFA", "p95 TTFA", "p99 TTFA", "p50 latency", "p95 latency", "p99 latency",
              "audio s/s", "ok", "timeout", "dropped", "error"]
    rows = [header]
    for run in doc["rates"]:
        s = run["summary"]
        q = s["quantiles"]
        rows.append([f"{s['offered_rps']:g}",
                     *(_ms(q["ttfa_s"][p]) for p in ("p50", "p95", "p99")),
                     *(_ms(q["latency_s"][p]) for p in ("p50", "p95", "p99")),
                     f"{s['audio_throughput']:.3g}",
                     *(str(s["counts"][k]) for k in ("ok", "timeout", "dropped", "error"))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    m = doc["max_rate"]
    answer = "none of the rates" if m["max_rps"] is None else f"{m['max_rps']:g} req/s"
    lines += ["times in ms from the send, [95% interval] (? where too few requests bound that side)",
              f"max rate: {answer} (p{m['quantile'] * 100:g} TTFA <= {m['target_ttfa_s']:g} s)",
              f"method: {m['method']}"]
    lines += [f"  {step['summary']['offered_rps']:g} req/s: {'pass' if step['passed'] else 'fail'}, "
              f"{step['reason']}" for step in m["steps"]]
    return "\n".join(lines)
