"""An open-loop load generator: requests at Poisson arrival times against a target that streams audio.

Open loop: every arrival time is drawn before the run from a seeded generator, and a request is sent at
its time whether or not earlier ones have finished, as independent users would send them. A closed loop
(send when the previous one returns) lets a slow server slow its own load down and hides its queue.
The client's own delay in sending is recorded per request as its scheduling lag, and a null target
(`targets.null_target`) measures what that lag is when the target costs nothing.

A target is a callable taking a `Request` and returning an async iterator of `Chunk`s: the first chunk
gives the time to first audio, the last the end-to-end latency. Each request waits at most `timeout_s`,
so a run past capacity ends too, and every request ends with a status (records.STATUSES).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from dia_bench.harness.serving.records import (
    CONFIDENCE,
    RateSummary,
    RequestRecord,
    summarize,
    values_for_upper_bound,
)


@dataclass(frozen=True)
class Request:
    index: int
    text: str
    seconds: float  # the audio asked for
    seed: int


@dataclass(frozen=True)
class Chunk:
    audio_s: float  # seconds of audio in this chunk
    audio: Any = None  # the samples, where the target hands them over


Target = Callable[[Request], AsyncIterator[Chunk]]


class Rejected(Exception):
    """A target raises it to refuse a request (a full queue): the request is recorded as dropped."""


def poisson_arrivals(rate: float, seed: int, requests: int | None = None,
                     duration_s: float | None = None) -> list[float]:
    """Arrival times (seconds from the start) of a Poisson process at `rate` per second: exponential gaps
    from a generator seeded by `seed` alone, up to `requests` arrivals or until `duration_s`, whichever
    comes first."""
    if rate <= 0:
        raise ValueError(f"the rate must be positive (got {rate})")
    if requests is None and duration_s is None:
        raise ValueError("give a request count, a duration, or both")
    rng = random.Random(f"arrivals:{seed}")
    times: list[float] = []
    t = 0.0
    while requests is None or len(times) < requests:
        t += rng.expovariate(rate)
        if duration_s is not None and t >= duration_s:
            break
        times.append(t)
    return times


def draw_texts(count: int, texts: int, seed: int) -> list[int]:
    """Which text each request reads: `count` draws with replacement from `texts`, in a seeded order."""
    rng = random.Random(f"texts:{seed}")
    return [rng.randrange(texts) for _ in range(count)]


@dataclass
class LoadRun:
    offered_rps: float
    seed: int
    audio_seconds: float
    timeout_s: float
    records: list[RequestRecord] = field(default_factory=list)

    def summary(self, confidence: float = CONFIDENCE) -> RateSummary:
        return summarize(self.records, self.offered_rps, confidence=confidence)

    def to_dict(self) -> dict[str, Any]:
        return {"offered_rps": self.offered_rps, "seed": self.seed, "audio_seconds": self.audio_seconds,
                "timeout_s": self.timeout_s, "summary": self.summary().to_dict(),
                "records": [r.to_dict() for r in self.records]}


async def run_load(target: Target, texts: Sequence[str], rate: float, *, requests: int | None = None,
                   duration_s: float | None = None, seconds: float = 1.0, seed: int = 0,
                   timeout_s: float = 60.0) -> LoadRun:
    """Send requests at Poisson arrivals of `rate` per second, each for `seconds` of audio of a seeded
    choice of `texts`, and wait until every one has ended (completed, timed out, failed or refused)."""
    arrivals = poisson_arrivals(rate, seed, requests, duration_s)
    which = draw_texts(len(arrivals), len(texts), seed)
    run = LoadRun(offered_rps=rate, seed=seed, audio_seconds=seconds, timeout_s=timeout_s,
                  records=[RequestRecord(index=i, text_index=w, audio_requested_s=seconds, scheduled_s=t)
                           for i, (t, w) in enumerate(zip(arrivals, which, strict=True))])
    in_flight = 0
    start = time.perf_counter()

    def now() -> float:
        return time.perf_counter() - start

    async def consume(request: Request, rec: RequestRecord) -> None:
        async with contextlib.aclosing(target(request)) as stream:
            async for chunk in stream:
                if rec.first_audio_s is None:
                    rec.first_audio_s = now()
                rec.audio_s += chunk.audio_s
                rec.chunks += 1

    async def one(rec: RequestRecord) -> None:
        nonlocal in_flight
        request = Request(rec.index, texts[rec.text_index], seconds, seed=seed * 1_000_003 + rec.index)
        rec.in_flight = in_flight
        in_flight += 1
        rec.sent_s = now()
        try:
            await asyncio.wait_for(consume(request, rec), timeout_s)
            rec.status = "ok"
        except asyncio.TimeoutError:
            rec.status = "timeout"
        except Rejected as exc:
            rec.status, rec.error = "dropped", str(exc) or "refused"
        except Exception as exc:  # a target's failure is a result of the run, not the end of it
            rec.status, rec.error = "error", f"{type(exc).__name__}: {exc}"
        finally:
            rec.done_s = now()
            in_flight -= 1

    tasks = []
    for rec in run.records:
        wait = rec.scheduled_s - now()
        if wait > 0:
            await asyncio.sleep(wait)
        # Sent without awaiting: a slow target never delays the next arrival.
        tasks.append(asyncio.ensure_future(one(rec)))
    await asyncio.gather(*tasks)
    return run


@dataclass
class RateStep:
    summary: RateSummary
    passed: bool
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return {"summary": self.summary.to_dict(), "passed": self.passed, "reason": self.reason}


@dataclass
class MaxRate:
    """The highest offered rate that met the target, with every rate tried and why it passed or failed."""

    max_rps: float | None
    target_ttfa_s: float
    quantile: float
    criterion: str
    method: str
    steps: list[RateStep] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"max_rps": self.max_rps, "target_ttfa_s": self.target_ttfa_s, "quantile": self.quantile,
                "criterion": self.criterion, "method": self.method, "steps": [s.to_dict() for s in self.steps]}


CRITERIA = ("estimate", "upper-bound")


def judge(summary: RateSummary, target_ttfa_s: float, quantile: float = 0.95, criterion: str = "upper-bound",
          allowed_failures: float = 0.0) -> tuple[bool, str]:
    """Whether one rate meets the target: its failures (timeouts, errors, drops) are at most
    `allowed_failures` of its requests, and its TTFA quantile (the estimate, or its interval's upper
    bound) is at most the target."""
    if criterion not in CRITERIA:
        raise ValueError(f"unknown criterion {criterion!r}: choose one of {', '.join(CRITERIA)}")
    failed = summary.requests - summary.counts["ok"]
    if failed > allowed_failures * summary.requests:
        return False, f"{failed} of {summary.requests} requests did not complete"
    label = f"p{quantile * 100:g}"
    estimate = summary.quantiles["ttfa_s"].get(label)
    if estimate is None:
        raise ValueError(f"the summary has no {label} of the time to first audio")
    value = estimate.value if criterion == "estimate" else estimate.high
    if value is None or math.isinf(value):
        need = values_for_upper_bound(quantile, estimate.confidence)
        if criterion == "upper-bound" and estimate.n < need:
            return False, f"too few requests ({estimate.n}) to bound {label} from above: {need} needed"
        return False, f"{label} TTFA is above the timeout"
    what = label if criterion == "estimate" else f"{label}'s {estimate.confidence:.0%} upper bound"
    if value <= target_ttfa_s:
        return True, f"{what} TTFA {value:.4g} s <= {target_ttfa_s:g} s"
    return False, f"{what} TTFA {value:.4g} s > {target_ttfa_s:g} s"


async def find_max_rate(run_at: Callable[[float], Awaitable[LoadRun]], rates: Sequence[float],
                        target_ttfa_s: float, quantile: float = 0.95, criterion: str = "upper-bound",
                        allowed_failures: float = 0.0) -> MaxRate:
    """Step through `rates` from the lowest, one open-loop run each (`run_at(rate)`), and stop at the first
    that fails `judge`: the answer is the highest rate passed below it (None if the lowest failed).

    Latency against offered load is taken to rise with the rate, so rates above a failure are not tried:
    the answer is a rate measured to pass, never one interpolated between steps."""
    ordered = sorted(set(rates))
    bound = "the estimate" if criterion == "estimate" else f"the upper bound of its {CONFIDENCE:.0%} interval"
    method = (f"stepped rates {', '.join(f'{r:g}' for r in ordered)} req/s, lowest first, each an open-loop "
              f"Poisson run; a rate passes when at most {allowed_failures:.0%} of its requests fail and "
              f"{bound} (order statistics, distribution-free) of p{quantile * 100:g} time to first audio is at "
              f"most {target_ttfa_s:g} s; the answer is the highest rate passed before the first failure")
    result = MaxRate(None, target_ttfa_s, quantile, criterion, method)
    for rate in ordered:
        summary = (await run_at(rate)).summary()
        passed, reason = judge(summary, target_ttfa_s, quantile, criterion, allowed_failures)
        result.steps.append(RateStep(summary, passed, reason))
        if not passed:
            break
        result.max_rps = rate
    return result
