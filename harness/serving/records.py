"""What a load run records per request, and its summary per offered rate: quantiles with distribution-free
intervals, throughput, and the requests that did not complete.

Quantiles are order statistics, not interpolations: the estimate of the q-quantile of n values is the
ceil(q n)-th smallest, and its interval runs between two order statistics whose ranks the binomial
distribution Bin(n, q) gives, so that it covers the true quantile with at least the stated confidence
whatever the latencies' distribution (no normality, no independence from a model, only independent
draws). Where n is too small for a bound on one side, that side is unbounded: at 95% confidence an
upper bound of p95 needs 72 values and of p99 needs 368 (`values_for_upper_bound`).

A request that timed out has a latency above the timeout and no value: it counts as +inf (censored at
the top), so that overload raises the quantiles instead of hiding its slowest requests. Errors and
refused requests have no latency at all; they are counted apart.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

CONFIDENCE = 0.95
QUANTILES = (0.50, 0.90, 0.95, 0.99)
STATUSES = ("ok", "timeout", "error", "dropped")


@dataclass
class RequestRecord:
    """One request of a load run. Times are seconds from the run's start (its first possible arrival)."""

    index: int
    text_index: int
    audio_requested_s: float
    scheduled_s: float
    sent_s: float | None = None  # when the client called the target
    first_audio_s: float | None = None  # when its first chunk reached the client
    done_s: float | None = None  # its last chunk, its error, or its timeout
    audio_s: float = 0.0  # audio the client received, timed out requests' partial audio included
    chunks: int = 0
    in_flight: int = 0  # requests sent and not done when this one was sent: the queue the target had
    status: str = "pending"  # then one of STATUSES
    error: str | None = None

    @property
    def lag_s(self) -> float | None:
        """Scheduling lag: the client's own delay in sending, which an open-loop client must keep small."""
        return None if self.sent_s is None else self.sent_s - self.scheduled_s

    @property
    def ttfa_s(self) -> float | None:
        """Time to first audio, from the send."""
        return None if self.first_audio_s is None or self.sent_s is None else self.first_audio_s - self.sent_s

    @property
    def latency_s(self) -> float | None:
        """End to end, from the send to the last chunk; only for a request that completed."""
        return None if self.status != "ok" or self.done_s is None or self.sent_s is None else self.done_s - self.sent_s

    @property
    def rtf(self) -> float | None:
        """This request's real-time factor: its latency over its audio seconds (lower is better)."""
        latency = self.latency_s
        return None if latency is None or self.audio_s <= 0 else latency / self.audio_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "lag_s": self.lag_s, "ttfa_s": self.ttfa_s, "latency_s": self.latency_s,
                "rtf": self.rtf}


def _binomial_cdfs(n: int, q: float) -> list[float]:
    """P(Bin(n, q) <= k) for k = 0..n, summed in log space so that large n does not underflow."""
    if q <= 0 or q >= 1:
        raise ValueError(f"a quantile must lie strictly between 0 and 1 (got {q})")
    logs = [math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1) + k * math.log(q)
            + (n - k) * math.log1p(-q) for k in range(n + 1)]
    cdf, total = [], 0.0
    for log in logs:
        total += math.exp(log)
        cdf.append(min(total, 1.0))
    return cdf


def order_statistic_ranks(n: int, q: float, confidence: float = CONFIDENCE) -> tuple[int | None, int | None]:
    """1-based ranks (lower, upper) of the order statistics bounding the q-quantile of n independent values
    with at least `confidence`, each side taking (1 - confidence) / 2; None for a side that n cannot bound.

    X_(l) <= quantile fails only if at most l - 1 values fall below it, with probability
    P(Bin(n, q) <= l - 1); quantile <= X_(u) fails only if at least u do, with 1 - P(Bin(n, q) <= u - 1)."""
    if n < 1:
        return None, None
    tail = (1 - confidence) / 2
    cdf = _binomial_cdfs(n, q)
    lower = max((k + 1 for k in range(n) if cdf[k] <= tail), default=None)
    upper = next((k + 1 for k in range(n) if cdf[k] >= 1 - tail), None)
    return lower, upper


def values_for_upper_bound(q: float, confidence: float = CONFIDENCE) -> int:
    """The fewest values whose largest bounds the q-quantile from above: 1 - q^n >= 1 - (1 - confidence) / 2."""
    return math.ceil(math.log((1 - confidence) / 2) / math.log(q))


@dataclass(frozen=True)
class QuantileEstimate:
    q: float
    n: int
    value: float | None  # the ceil(q n)-th smallest; inf where that request timed out; None without values
    low: float | None  # None: too few values for a lower bound
    high: float | None  # inf: too few values for an upper bound, or the bound is a timed-out request
    confidence: float = CONFIDENCE

    def to_dict(self) -> dict[str, Any]:
        """Strict JSON: an infinite value or bound is None, with `censored` saying the value is one."""
        finite = {k: (None if v is not None and math.isinf(v) else v)
                  for k, v in (("value", self.value), ("low", self.low), ("high", self.high))}
        return {"q": self.q, "n": self.n, **finite, "confidence": self.confidence,
                "censored": self.value is not None and math.isinf(self.value)}


def quantile(values: Sequence[float], q: float, confidence: float = CONFIDENCE) -> QuantileEstimate:
    """The q-quantile of `values` (inf for a censored one) with its order-statistic interval."""
    ordered = sorted(values)
    n = len(ordered)
    if n == 0:
        return QuantileEstimate(q, 0, None, None, math.inf, confidence)
    lower, upper = order_statistic_ranks(n, q, confidence)
    return QuantileEstimate(q, n, ordered[max(1, math.ceil(q * n)) - 1],
                            None if lower is None else ordered[lower - 1],
                            math.inf if upper is None else ordered[upper - 1], confidence)


@dataclass
class RateSummary:
    """One offered rate: what completed, how fast, and the quantiles of each per-request measure."""

    offered_rps: float
    requests: int
    counts: dict[str, int]  # per status; every request is in exactly one
    span_s: float  # the run's start to its last request's end
    achieved_rps: float  # completed requests per second of span
    audio_throughput: float  # audio seconds of completed requests per second of span
    quantiles: dict[str, dict[str, QuantileEstimate]] = field(default_factory=dict)  # measure -> "p95" -> estimate

    def to_dict(self) -> dict[str, Any]:
        return {**{k: v for k, v in asdict(self).items() if k != "quantiles"},
                "quantiles": {m: {p: e.to_dict() for p, e in qs.items()} for m, qs in self.quantiles.items()}}


def _label(q: float) -> str:
    return f"p{q * 100:g}"


def summarize(records: Sequence[RequestRecord], offered_rps: float, quantiles: Sequence[float] = QUANTILES,
              confidence: float = CONFIDENCE) -> RateSummary:
    counts = {s: sum(r.status == s for r in records) for s in STATUSES}
    unknown = len(records) - sum(counts.values())
    if unknown:
        raise ValueError(f"{unknown} request(s) have no final status: a load run must account for every request")
    ok = [r for r in records if r.status == "ok"]
    timed_out = [r for r in records if r.status == "timeout"]
    span = max((r.done_s for r in records if r.done_s is not None), default=0.0)
    # A timed-out request's time to first audio is known where its first chunk came; else it is censored.
    measures = {
        "ttfa_s": [r.ttfa_s for r in ok] + [r.ttfa_s if r.ttfa_s is not None else math.inf for r in timed_out],
        "latency_s": [r.latency_s for r in ok] + [math.inf] * len(timed_out),
        "rtf": [r.rtf for r in ok] + [math.inf] * len(timed_out),
        "lag_s": [r.lag_s for r in records if r.lag_s is not None],
    }
    return RateSummary(
        offered_rps=offered_rps, requests=len(records), counts=counts, span_s=span,
        achieved_rps=len(ok) / span if span > 0 else 0.0,
        audio_throughput=sum(r.audio_s for r in ok) / span if span > 0 else 0.0,
        quantiles={m: {_label(q): quantile([v for v in vs if v is not None], q, confidence) for q in quantiles}
                   for m, vs in measures.items()},
    )
