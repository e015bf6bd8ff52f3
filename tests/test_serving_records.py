"""The load generator's arithmetic, without a model: seeded Poisson arrivals, order-statistic quantile
intervals, per-rate summaries, and the max-rate search's rule. No clock is read here."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import statistics

import pytest

from dia_bench.harness.serving.loadgen import LoadRun, draw_texts, find_max_rate, judge, poisson_arrivals
from dia_bench.harness.serving.records import (
    RequestRecord,
    order_statistic_ranks,
    quantile,
    summarize,
    values_for_upper_bound,
)


def test_arrivals_are_seeded_poisson_and_stop_at_a_count_or_a_duration():
    a = poisson_arrivals(20.0, seed=1, requests=4000)
    assert a == poisson_arrivals(20.0, seed=1, requests=4000)
    assert a != poisson_arrivals(20.0, seed=2, requests=4000)
    gaps = [y - x for x, y in itertools.pairwise([0.0, *a])]
    assert all(g > 0 for g in gaps)
    # Exponential gaps: mean and standard deviation both 1/rate (4000 draws: within a few percent).
    assert statistics.mean(gaps) == pytest.approx(1 / 20, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(1 / 20, rel=0.08)
    timed = poisson_arrivals(20.0, seed=1, duration_s=10.0)
    assert timed == [t for t in a if t < 10.0]
    assert poisson_arrivals(20.0, seed=1, requests=5, duration_s=100.0) == a[:5]
    with pytest.raises(ValueError):
        poisson_arrivals(20.0, seed=1)


def test_texts_are_drawn_in_a_seeded_order():
    assert draw_texts(50, 7, seed=3) == draw_texts(50, 7, seed=3)
    assert draw_texts(50, 7, seed=3) != draw_texts(50, 7, seed=4)
    assert set(draw_texts(200, 7, seed=3)) == set(range(7))


def test_order_statistic_ranks_are_the_textbook_ones_and_cover_at_least_the_confidence():
    assert order_statistic_ranks(100, 0.5) == (40, 61)  # the median's classical 95% ranks for n = 100
    for n, q in [(30, 0.5), (200, 0.9), (500, 0.95), (1000, 0.99)]:
        low, high = order_statistic_ranks(n, q)
        coverage = sum(math.comb(n, k) * q ** k * (1 - q) ** (n - k) for k in range(low, high))
        assert coverage >= 0.95
    # Too few values for an upper bound of p95 below 72, of p99 below 368.
    assert values_for_upper_bound(0.95) == 72 and values_for_upper_bound(0.99) == 368
    assert order_statistic_ranks(71, 0.95)[1] is None
    assert order_statistic_ranks(72, 0.95)[1] == 72
    assert order_statistic_ranks(5, 0.5)[0] is None


def test_a_quantile_is_an_order_statistic_and_a_censored_one_is_infinite():
    values = [float(v) for v in range(1, 101)]
    est = quantile(values, 0.5)
    assert (est.value, est.low, est.high) == (50.0, 40.0, 61.0)
    assert quantile(values, 0.95).value == 95.0
    few = quantile([1.0, 2.0, 3.0], 0.95)
    assert few.value == 3.0 and few.low == 2.0 and math.isinf(few.high)  # P(Bin(3, .95) <= 1) < .025
    assert quantile([1.0], 0.5).low is None
    censored = quantile([*values[:90], *[math.inf] * 10], 0.95)
    assert math.isinf(censored.value)
    assert censored.to_dict()["value"] is None and censored.to_dict()["censored"] is True
    json.dumps(censored.to_dict(), allow_nan=False)


def _record(i: int, status: str = "ok", ttfa: float = 0.1, latency: float = 0.5, audio: float = 1.0,
            scheduled: float | None = None) -> RequestRecord:
    scheduled = i * 0.1 if scheduled is None else scheduled
    sent = scheduled + 0.001
    done = sent + latency
    return RequestRecord(index=i, text_index=0, audio_requested_s=1.0, scheduled_s=scheduled, sent_s=sent,
                         first_audio_s=sent + ttfa if ttfa is not None else None, done_s=done,
                         audio_s=audio, chunks=1, status=status)


def test_a_summary_counts_every_request_once_and_reads_timeouts_as_slowest():
    records = [_record(i) for i in range(8)] + [_record(8, "timeout", ttfa=None, audio=0.0),
                                                _record(9, "error", ttfa=None, audio=0.0)]
    s = summarize(records, offered_rps=10.0)
    assert s.counts == {"ok": 8, "timeout": 1, "error": 1, "dropped": 0}
    assert s.requests == 10
    assert s.span_s == pytest.approx(0.9 + 0.001 + 0.5)
    assert s.audio_throughput == pytest.approx(8.0 / s.span_s)
    assert s.achieved_rps == pytest.approx(8 / s.span_s)
    assert s.quantiles["ttfa_s"]["p50"].value == pytest.approx(0.1)
    assert s.quantiles["ttfa_s"]["p50"].n == 9  # the timeout counts; the error has no time
    assert math.isinf(s.quantiles["latency_s"]["p99"].value)
    assert s.quantiles["rtf"]["p50"].value == pytest.approx(0.5)
    assert s.quantiles["lag_s"]["p50"].value == pytest.approx(0.001)
    json.dumps(s.to_dict(), allow_nan=False)
    with pytest.raises(ValueError, match="no final status"):
        summarize([*records, RequestRecord(index=10, text_index=0, audio_requested_s=1.0, scheduled_s=1.0)], 10.0)


def test_a_rate_passes_on_its_ttfa_quantile_and_fails_on_any_lost_request():
    fast = summarize([_record(i, ttfa=0.1) for i in range(100)], 5.0)
    assert judge(fast, 0.2, criterion="upper-bound") == (True, "p95's 95% upper bound TTFA 0.1 s <= 0.2 s")
    assert not judge(fast, 0.05, criterion="estimate")[0]
    few = summarize([_record(i, ttfa=0.1) for i in range(20)], 5.0)
    assert judge(few, 0.2, criterion="estimate")[0]
    passed, reason = judge(few, 0.2, criterion="upper-bound")
    assert not passed and "72 needed" in reason
    lossy = summarize([_record(i) for i in range(99)] + [_record(99, "timeout", ttfa=None)], 5.0)
    assert judge(lossy, 10.0) == (False, "1 of 100 requests did not complete")
    assert judge(lossy, 10.0, criterion="estimate", allowed_failures=0.01)[0]


def test_the_max_rate_is_the_highest_passed_before_the_first_failure():
    """The search's rule on made-up runs whose TTFA grows with the rate: rates are tried lowest first,
    and none above the first failure is run."""
    tried: list[float] = []

    async def run_at(rate: float) -> LoadRun:
        tried.append(rate)
        return LoadRun(rate, 0, 1.0, 10.0, [_record(i, ttfa=rate / 100) for i in range(80)])

    result = asyncio.run(find_max_rate(run_at, [8, 2, 4, 16, 32], target_ttfa_s=0.1))
    assert tried == [2, 4, 8, 16]
    assert result.max_rps == 8
    assert [s.passed for s in result.steps] == [True, True, True, False]
    assert "lowest first" in result.method and "order statistics" in result.method
    json.dumps(result.to_dict(), allow_nan=False)
    assert asyncio.run(find_max_rate(run_at, [50], target_ttfa_s=0.1)).max_rps is None
