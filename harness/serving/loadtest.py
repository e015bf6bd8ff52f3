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


FORMAT_VERSION = 1


def document(test: LoadTest, machine: dict[str, Any], configuration: dict[str, Any], includes: dict[str, Any],
             started_at: str, process_prior: dict[str, Any]) -> dict[str, Any]:
    """load.json: strict JSON (no NaN or infinity: an unbounded interval side is null, marked censored).

    `process_prior` is the machine's process term when the run was made, kept so that a later `compare`
    judges two load runs by the noise their machine had, not by whatever history it has by then."""
    return {
        "kind": "dia-bench load",
        "format_version": FORMAT_VERSION,
        "started_at": started_at,
        "machine": machine,
        "process_prior": process_prior,
        "configuration": configuration,
        "includes": includes,
        "rates": [run.to_dict() for run in test.runs],
        "max_rate": test.max_rate.to_dict(),
    }
