"""Speech over HTTP on the loopback: the dia-tiny engine behind harness/serving/web.py, loaded through its
client-side target. Needs the `serve` extra (starlette, uvicorn, httpx): without it these tests skip."""

from __future__ import annotations

import asyncio
import json

import numpy as np
import pytest

for _name in ("starlette", "uvicorn", "httpx"):
    pytest.importorskip(_name, reason="the `serve` extra is not installed (pip install -e '.[serve]')")

import httpx  # noqa: E402

from dia_bench.harness.presets import HOP_LENGTH, SAMPLE_RATE, frames_for_seconds  # noqa: E402
from dia_bench.harness.runtime.pipeline import SamplingParams  # noqa: E402
from dia_bench.harness.serving.loadgen import Chunk, Rejected, Request, run_load  # noqa: E402
from dia_bench.harness.serving.targets import EngineTarget, null_target  # noqa: E402
from dia_bench.harness.serving.web import create_app, http_target, serve  # noqa: E402

TEXTS = ["[S1] Over the wire.", "[S2] And back."]
SECONDS = 0.25
FRAMES = frames_for_seconds(SECONDS)


def _client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=None, limits=httpx.Limits(max_connections=None))


def test_the_engine_over_http_streams_the_pipelines_audio_and_records_every_request(tiny_pipeline):
    pipe, _ = tiny_pipeline

    async def main():
        async with EngineTarget(pipe, chunk_frames=8) as engine, serve(create_app(engine)) as base, \
                _client() as client:
            await engine.warmup()
            target = http_target(client, base + "/v1/speech")
            body = b"".join([c.audio async for c in target(Request(0, TEXTS[0], SECONDS, seed=9))])
            health = await client.get(base + "/health")
            bad = await client.post(base + "/v1/speech", content=b"not json")
            run = await run_load(target, TEXTS, rate=8.0, requests=4, seconds=SECONDS, seed=1, timeout_s=120)
        return body, health, bad, run

    body, health, bad, run = asyncio.run(main())
    assert health.status_code == 200
    assert bad.status_code == 400
    whole = pipe.run([TEXTS[0]], FRAMES, SamplingParams(), seed=9).audio[0].numpy()
    assert np.allclose(np.frombuffer(body, dtype="<f4"), whole, atol=1e-6, rtol=1e-5)
    assert [r.status for r in run.records] == ["ok"] * 4
    for r in run.records:
        assert r.audio_s == pytest.approx(FRAMES * HOP_LENGTH / SAMPLE_RATE)
        assert r.sent_s <= r.first_audio_s <= r.done_s
    json.dumps(run.to_dict(), allow_nan=False)


def test_a_client_that_hangs_up_takes_its_request_off_the_engines_queue(tiny_pipeline):
    """A load run's timeout closes the connection before the first chunk: the server must notice, or every
    abandoned request would still be decoded, for nobody, before the next one."""
    pipe, _ = tiny_pipeline

    async def main():
        async with EngineTarget(pipe, chunk_frames=8) as engine, serve(create_app(engine)) as base, \
                _client() as client:
            await engine.warmup()
            before = len(engine.batches)
            run = await run_load(http_target(client, base + "/v1/speech"), TEXTS, rate=2000.0, requests=10,
                                 seconds=1.0, timeout_s=0.05)
            for _ in range(3000):  # the batch running when they hung up stops at its next step
                if not engine.busy and not engine.queued:
                    break
                await asyncio.sleep(0.01)
            return run, len(engine.batches) - before, engine.queued

    run, served, queued = asyncio.run(main())
    assert len(run.records) == 10 and sum(run.summary().counts.values()) == 10
    assert queued == 0
    assert served < 10


def test_a_refused_request_is_a_503_and_a_drop():
    async def refusing(request: Request):
        if "refuse" in request.text:
            raise Rejected("queue full")
        yield Chunk(audio_s=request.seconds)

    async def main():
        async with serve(create_app(refusing)) as base, _client() as client:
            url = base + "/v1/speech"
            refused = await client.post(url, json={"text": "[S1] refuse", "seconds": 0.1})
            accepted = await client.post(url, json={"text": "[S1] accept", "seconds": 0.1})
            run = await run_load(http_target(client, url), ["[S1] refuse this", "[S1] fine"], rate=200.0,
                                 requests=12, seconds=0.1, timeout_s=30)
        return refused, accepted, run

    refused, accepted, run = asyncio.run(main())
    assert refused.status_code == 503 and refused.json() == {"error": "queue full"}
    assert all(r.error == "HTTP 503: queue full" for r in run.records if r.status == "dropped")
    assert accepted.status_code == 200 and len(accepted.content) == round(0.1 * SAMPLE_RATE) * 4
    assert [r.status for r in run.records] == ["dropped" if r.text_index == 0 else "ok" for r in run.records]
    assert {"dropped", "ok"} == {r.status for r in run.records}


def test_the_null_target_over_http_sends_silence_of_its_length():
    async def main():
        async with serve(create_app(null_target)) as base, _client() as client:
            return await run_load(http_target(client, base + "/v1/speech"), TEXTS, rate=100.0, requests=10,
                                  seconds=0.5, timeout_s=30)

    run = asyncio.run(main())
    assert [r.status for r in run.records] == ["ok"] * 10
    assert all(r.audio_s == round(0.5 * SAMPLE_RATE) / SAMPLE_RATE and r.lag_s is not None for r in run.records)
