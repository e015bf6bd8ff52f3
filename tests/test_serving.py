"""The load generator against real targets: the dia-tiny pipeline served in this process, and the null
target. Records must be complete and consistent, an overload must lose nothing, and the client must
measure its own lag. Measured times are checked for being there and in order, never for their size."""

from __future__ import annotations

import asyncio
import json
import math

import numpy as np

from dia_bench.harness.presets import HOP_LENGTH, SAMPLE_RATE, frames_for_seconds
from dia_bench.harness.runtime.pipeline import SamplingParams
from dia_bench.harness.serving.loadgen import Chunk, Rejected, Request, find_max_rate, run_load
from dia_bench.harness.serving.records import STATUSES
from dia_bench.harness.serving.targets import EngineTarget, null_target

TEXTS = ["[S1] One request.", "[S1] Another, a little longer. [S2] Yes.", "[S2] A third."]
SECONDS = 0.25
FRAMES = frames_for_seconds(SECONDS)
CHUNK = 8


def _complete_and_consistent(run) -> None:
    assert [r.index for r in run.records] == list(range(len(run.records)))
    for r in run.records:
        assert r.status in STATUSES
        assert r.sent_s is not None and math.isfinite(r.lag_s)
        assert r.done_s is not None and r.done_s >= r.sent_s
        if r.status == "ok":
            assert r.error is None
            assert r.sent_s <= r.first_audio_s <= r.done_s
            assert 0 <= r.ttfa_s <= r.latency_s
            assert r.rtf == r.latency_s / r.audio_s
    sends = [r.sent_s for r in run.records]
    assert sends == sorted(sends)  # sent in the order they were scheduled
    json.dumps(run.to_dict(), allow_nan=False)


def test_the_null_target_measures_the_clients_own_lag():
    run = asyncio.run(run_load(null_target, TEXTS, rate=200.0, requests=60, seconds=1.5, seed=4))
    _complete_and_consistent(run)
    assert [r.status for r in run.records] == ["ok"] * 60
    assert all(r.audio_s == 1.5 and r.chunks == 1 for r in run.records)
    summary = run.summary()
    assert summary.counts["ok"] == 60
    lag = summary.quantiles["lag_s"]
    assert lag["p50"].n == 60 and lag["p99"].value is not None and math.isfinite(lag["p99"].value)


def test_arrivals_never_wait_for_completions():
    """A target that answers no request until every request has been sent: a closed loop would never
    send the second one."""
    count, sent = 12, []
    everyone = asyncio.Event()

    async def held(request: Request):
        sent.append(request.index)
        if len(sent) == count:
            everyone.set()
        await everyone.wait()
        yield Chunk(audio_s=request.seconds)

    async def main():
        return await asyncio.wait_for(run_load(held, TEXTS, rate=100.0, requests=count, timeout_s=30), 60)

    run = asyncio.run(main())
    assert sorted(sent) == list(range(count))
    assert [r.status for r in run.records] == ["ok"] * count
    assert max(r.in_flight for r in run.records) == count - 1


def test_a_failing_or_refusing_target_is_recorded_not_raised():
    async def flaky(request: Request):
        if request.index % 3 == 1:
            raise ValueError("no voice for this text")
        if request.index % 3 == 2:
            raise Rejected("busy")
        yield Chunk(audio_s=request.seconds)

    run = asyncio.run(run_load(flaky, TEXTS, rate=500.0, requests=9, seed=2))
    _complete_and_consistent(run)
    assert [r.status for r in run.records] == ["ok", "error", "dropped"] * 3
    assert run.records[1].error == "ValueError: no voice for this text" and run.records[2].error == "busy"
    assert run.summary().counts == {"ok": 3, "timeout": 0, "error": 3, "dropped": 3}


def test_engine_records_are_complete_and_its_chunks_are_the_pipelines_audio(tiny_pipeline):
    pipe, _ = tiny_pipeline

    async def main():
        async with EngineTarget(pipe, chunk_frames=CHUNK) as target:
            await target.warmup()
            request = Request(0, TEXTS[1], SECONDS, seed=11)
            chunks = [c async for c in target(request)]
            run = await run_load(target, TEXTS, rate=8.0, requests=6, seconds=SECONDS, seed=1, timeout_s=60)
        return chunks, run, target

    chunks, run, target = asyncio.run(main())
    whole = pipe.run([TEXTS[1]], FRAMES, SamplingParams(), seed=11).audio[0]
    streamed = np.concatenate([c.audio.numpy() for c in chunks])
    assert np.allclose(streamed, whole.numpy(), atol=1e-6, rtol=1e-5)

    _complete_and_consistent(run)
    assert [r.status for r in run.records] == ["ok"] * 6
    for r in run.records:
        assert r.chunks == -(-FRAMES // CHUNK)
        assert r.audio_s == FRAMES * HOP_LENGTH / SAMPLE_RATE
    assert target.batches == [1] * 8  # warmup, the direct request, then the run's six, one at a time
    summary = run.summary()
    assert summary.counts == {"ok": 6, "timeout": 0, "error": 0, "dropped": 0}
    assert summary.audio_throughput > 0
    assert summary.quantiles["ttfa_s"]["p95"].n == 6


def test_past_capacity_latency_grows_and_every_request_is_accounted_for(tiny_pipeline):
    """Sixteen requests arrive within milliseconds at a server that takes one at a time. The timeout is
    five times the slowest of three lone requests' latencies, so the queue's tail must time out and its
    head must not, even where another process takes the other core part of the time; the run still ends,
    with every request in the records."""
    pipe, _ = tiny_pipeline

    async def main():
        async with EngineTarget(pipe, chunk_frames=CHUNK) as target:
            await target.warmup()
            singles = [await run_load(target, TEXTS, rate=1.0, requests=1, seconds=SECONDS, seed=seed)
                       for seed in (2, 4, 6)]
            timeout = 5 * max(s.records[0].latency_s for s in singles)
            run = await run_load(target, TEXTS, rate=2000.0, requests=16, seconds=SECONDS, seed=3, timeout_s=timeout)
        return run

    run = asyncio.run(main())
    _complete_and_consistent(run)
    summary = run.summary()
    assert summary.requests == 16 and sum(summary.counts.values()) == 16
    assert summary.counts["timeout"] >= 1
    timed_out = [r for r in run.records if r.status == "timeout"]
    assert all(r.error is None and r.latency_s is None for r in timed_out)
    assert math.isinf(summary.quantiles["latency_s"]["p99"].value)  # the timeouts count as the slowest
    ok = [r for r in run.records if r.status == "ok"]
    assert len(ok) >= 2
    # One server in arrival order: each completed request waited for every one before it.
    assert ok[-1].latency_s > ok[0].latency_s
    assert max(r.in_flight for r in run.records) >= 8


def test_a_full_queue_drops_requests_and_loses_none(tiny_pipeline):
    pipe, _ = tiny_pipeline

    async def main():
        async with EngineTarget(pipe, chunk_frames=CHUNK, max_queue=2) as target:
            await target.warmup()
            return await run_load(target, TEXTS, rate=2000.0, requests=10, seconds=SECONDS, seed=7, timeout_s=120)

    run = asyncio.run(main())
    _complete_and_consistent(run)
    counts = run.summary().counts
    assert counts["ok"] + counts["dropped"] == 10 and counts["ok"] >= 1 and counts["dropped"] >= 1
    assert all(r.error == "queue full (2 waiting)" for r in run.records if r.status == "dropped")


def test_the_engine_batches_requests_of_one_length(tiny_pipeline):
    pipe, _ = tiny_pipeline

    async def main():
        async with EngineTarget(pipe, chunk_frames=CHUNK, max_batch=4, max_wait_s=0.05) as target:
            run = await run_load(target, TEXTS, rate=1000.0, requests=8, seconds=SECONDS, seed=5, timeout_s=120)
        return run, target

    run, target = asyncio.run(main())
    _complete_and_consistent(run)
    assert [r.status for r in run.records] == ["ok"] * 8
    assert sum(target.batches) == 8 and max(target.batches) > 1 and max(target.batches) <= 4
    assert all(r.audio_s == FRAMES * HOP_LENGTH / SAMPLE_RATE for r in run.records)


def test_the_warmup_runs_one_request_and_then_a_full_batch(tiny_pipeline):
    """A compiled step compiles again for a new batch size: the warmup meets both sizes before any rate."""
    pipe, _ = tiny_pipeline

    async def main():
        async with EngineTarget(pipe, chunk_frames=CHUNK, max_batch=3, max_wait_s=0.0) as target:
            await target.warmup()
            return list(target.batches)

    assert asyncio.run(main()) == [1, 3]


def test_the_max_rate_search_runs_against_the_engine(tiny_pipeline):
    """Which rate passes depends on the machine; that the search ran each step and said how is checked."""
    pipe, _ = tiny_pipeline

    async def main():
        async with EngineTarget(pipe, chunk_frames=CHUNK) as target:
            await target.warmup()
            return await find_max_rate(
                lambda rate: run_load(target, TEXTS, rate, requests=5, seconds=SECONDS, seed=6, timeout_s=60),
                [50.0, 5.0], target_ttfa_s=60.0, criterion="estimate")

    result = asyncio.run(main())
    assert result.steps[0].summary.offered_rps == 5.0
    assert result.max_rps in (None, 5.0, 50.0)
    assert len(result.steps) == (2 if result.steps[0].passed else 1)
    assert all(s.summary.requests == 5 for s in result.steps)
    json.dumps(result.to_dict(), allow_nan=False)
