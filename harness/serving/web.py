"""Speech over HTTP: any load-generator target behind a streaming endpoint, and the client side of it as a
target, so that a load run can measure what a network client sees. Needs the `serve` extra (starlette,
uvicorn, httpx), which is not installed by default.

POST /v1/speech takes {"text": ..., "seconds": ..., "seed": ...} and answers 200 with the audio as raw
little-endian float32 samples (headers X-Sample-Rate, X-Sample-Format), each chunk written as the
target yields it, so the time to the first body bytes is the time to first audio. A refused request
(`Rejected`) is 503; a malformed one 400. A failure after the first chunk can only cut the body short,
which the client reads as an error. GET /health answers 200.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import httpx
import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from dia_bench.harness.presets import SAMPLE_RATE
from dia_bench.harness.serving.loadgen import Chunk, Rejected, Request, Target

SAMPLE_FORMAT = "f32le"
BYTES_PER_SAMPLE = 4


def _samples(chunk: Chunk) -> bytes:
    if chunk.audio is None:  # a target that times only (the null target) sends silence of its length
        return bytes(round(chunk.audio_s * SAMPLE_RATE) * BYTES_PER_SAMPLE)
    audio = chunk.audio.numpy() if hasattr(chunk.audio, "numpy") else np.asarray(chunk.audio)
    return np.ascontiguousarray(audio, dtype="<f4").tobytes()


async def _disconnect(http: HttpRequest) -> None:
    """Returns when the client has gone; its body must have been read already."""
    while (await http.receive())["type"] != "http.disconnect":
        pass


def create_app(target: Target, sample_rate: int = SAMPLE_RATE) -> Starlette:
    """An app serving `target`; the target's own lifetime (an `EngineTarget`'s `async with`) is the caller's."""
    counter = 0

    async def speech(http: HttpRequest) -> Response:
        nonlocal counter
        try:
            body = json.loads(await http.body())
            text, seconds = str(body["text"]), float(body.get("seconds", 1.0))
            seed = int(body.get("seed", 0))
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"error": f"a JSON body with text, seconds and seed: {exc}"}, status_code=400)
        counter += 1
        stream = target(Request(counter, text, seconds, seed)).__aiter__()
        # The status line waits for the first chunk, so that a refused request is a 503, not a cut body. Until
        # the response starts nothing else notices a client that hung up (a load run's timeout), and its
        # request would wait in the target's queue and be served for nobody: its disconnect is watched here.
        first_chunk = asyncio.ensure_future(stream.__anext__())
        hung_up = asyncio.ensure_future(_disconnect(http))
        await asyncio.wait({first_chunk, hung_up}, return_when=asyncio.FIRST_COMPLETED)
        hung_up.cancel()
        if not first_chunk.done():
            first_chunk.cancel()  # ends the target's generator, which takes the request off its queue
            with contextlib.suppress(BaseException):
                await first_chunk
            return Response(status_code=499)  # no one reads it
        try:
            first = first_chunk.result()
        except StopAsyncIteration:
            first = None
        except Rejected as exc:
            return JSONResponse({"error": str(exc) or "refused"}, status_code=503)

        async def body_bytes() -> AsyncIterator[bytes]:
            try:
                if first is not None:
                    yield _samples(first)
                async for chunk in stream:
                    yield _samples(chunk)
            finally:
                with contextlib.suppress(Exception):
                    await stream.aclose()

        return StreamingResponse(body_bytes(), media_type="application/octet-stream",
                                 headers={"X-Sample-Rate": str(sample_rate), "X-Sample-Format": SAMPLE_FORMAT})

    async def health(_: HttpRequest) -> Response:
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/v1/speech", speech, methods=["POST"]), Route("/health", health)])


def http_target(client: httpx.AsyncClient, url: str) -> Target:
    """A target that posts each request to `url` (an app from `create_app`) and yields the body as it comes.

    Body reads do not follow the server's chunks (the transport splits and joins them); the first bytes
    still mark the first audio, and the byte count gives the audio seconds. The client's pool must allow as
    many connections as requests in flight (`httpx.Limits(max_connections=None)`) and no timeout of its
    own (`timeout=None`): a request waiting for a pooled connection would be an open loop closed again,
    its wait counted as the server's, and the load run's timeout is the one that counts."""

    async def call(request: Request) -> AsyncIterator[Chunk]:
        payload = {"text": request.text, "seconds": request.seconds, "seed": request.seed}
        async with client.stream("POST", url, json=payload) as response:
            if response.status_code != 200:
                text = (await response.aread()).decode(errors="replace")
                with contextlib.suppress(ValueError, AttributeError):
                    text = str(json.loads(text).get("error", text))
                failure = Rejected if response.status_code == 503 else RuntimeError
                raise failure(f"HTTP {response.status_code}: {text}")
            rate = int(response.headers.get("X-Sample-Rate", SAMPLE_RATE))
            async for data in response.aiter_bytes():
                if data:
                    yield Chunk(audio_s=len(data) / BYTES_PER_SAMPLE / rate, audio=data)

    return call


@contextlib.asynccontextmanager
async def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[str]:
    """Serve `app` with uvicorn in this event loop; yields its base URL. Port 0 takes a free port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()  # raises what stopped it
                raise RuntimeError("the HTTP server stopped before it started")
            await asyncio.sleep(0.01)
        bound_host, bound_port = sock.getsockname()[:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
