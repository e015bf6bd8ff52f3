"""Targets for the load generator: the Dia pipeline served in this process, and a null target.

`EngineTarget` runs the pipeline in one worker thread, so the event loop stays free to send requests on
time while the decoder works. Requests wait in arrival order; the worker takes the oldest and, up to
`max_batch`, those behind it asking for the same number of frames (one batch decodes one length),
waiting up to `max_wait_s` for a batch to fill. Each request's chunks reach it as the stream decodes
them (`runtime.streaming`). A request whose client gave up is taken out of the queue, and a batch whose
clients all gave up stops at its next step, so a run past capacity drains instead of working on for
nobody.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from dia_bench.harness.presets import frames_for_seconds
from dia_bench.harness.runtime.pipeline import DiaPipeline, SamplingParams
from dia_bench.harness.runtime.streaming import CHUNK_FRAMES, AudioChunk, StreamCancelled, stream
from dia_bench.harness.serving.loadgen import Chunk, Rejected, Request


async def null_target(request: Request) -> AsyncIterator[Chunk]:
    """All the audio at once, at no cost: a run against it measures the client alone."""
    yield Chunk(audio_s=request.seconds)


_END = object()


def engine_thread() -> ThreadPoolExecutor:
    """One worker thread for everything torch does in a served pipeline: build it there
    (`executor.submit(build).result()`), then hand it to `EngineTarget(..., executor=)`."""
    return ThreadPoolExecutor(1, thread_name_prefix="dia-engine")


@dataclass(eq=False)
class _Job:
    request: Request
    frames: int
    out: asyncio.Queue = field(default_factory=asyncio.Queue)
    abandoned: bool = False  # the client stopped reading (a timeout): read by the worker thread too


class EngineTarget:
    """The pipeline behind an async streaming interface; use as `async with EngineTarget(pipe) as target`."""

    def __init__(self, pipe: DiaPipeline, *, max_batch: int = 1, max_wait_s: float = 0.0,
                 sampling: SamplingParams | None = None, chunk_frames: int = CHUNK_FRAMES,
                 context_frames: int | None = None, max_queue: int | None = None,
                 executor: ThreadPoolExecutor | None = None, first_chunk_frames: int | None = None) -> None:
        if max_batch < 1 or max_wait_s < 0:
            raise ValueError(f"max_batch must be >= 1 and max_wait_s >= 0 (got {max_batch}, {max_wait_s})")
        self.pipe, self.max_batch, self.max_wait_s = pipe, max_batch, max_wait_s
        self.sampling = sampling or SamplingParams()
        self.chunk_frames, self.context_frames, self.max_queue = chunk_frames, context_frames, max_queue
        self.first_chunk_frames = first_chunk_frames
        self.sample_rate = int(pipe.codec.sample_rate)
        self.batches: list[int] = []  # the size of each batch run, in order
        self._waiting: deque[_Job] = deque()
        self._running: list[_Job] = []
        self._cancel = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        # The one thread that decodes. Give the thread that built the pipeline (`engine_thread`): torch's
        # OpenMP keeps a team of threads for each thread that ran parallel work, and once two teams hold
        # more threads than there are cores, libgomp stops spinning between parallel regions, which made
        # a compiled decode step two to three times slower on 2 cores, in every thread.
        self._executor: ThreadPoolExecutor | None = executor
        self._own_executor = executor is None

    async def __aenter__(self) -> EngineTarget:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        if self._own_executor:
            self._executor = engine_thread()
        self._worker = asyncio.ensure_future(self._serve())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._cancel.set()  # a batch still decoding stops at its next step
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._executor is not None and self._own_executor:
            await asyncio.get_running_loop().run_in_executor(None, self._executor.shutdown)

    @property
    def queued(self) -> int:
        """Requests waiting for the worker."""
        return len(self._waiting)

    @property
    def busy(self) -> bool:
        """Whether a batch is decoding."""
        return bool(self._running)

    async def warmup(self, text: str = "[S1] Warm up.", seconds: float = 0.25) -> None:
        """One request, then (with max_batch > 1) a full batch, outside any measurement: the first generate
        pays one-time costs (allocations, kernel choices, compilation) that no later request does, and a
        compiled step builds its graph again for the first batch of another size. After two sizes
        torch.compile makes the batch dimension dynamic, so no size after them compiles again; without
        the batch here, the first rate that formed one measured a compile (38 s on 2 cores)."""
        async def one(index: int) -> None:
            async for _ in self(Request(index, text, seconds, seed=0)):
                pass

        await one(-1)
        if self.max_batch > 1:
            # Queued in one turn of the loop, so the worker takes them as one batch.
            await asyncio.gather(*(one(-2 - i) for i in range(self.max_batch)))

    async def __call__(self, request: Request) -> AsyncIterator[Chunk]:
        if self._wake is None:
            raise RuntimeError("EngineTarget is used as `async with EngineTarget(...) as target`")
        if self.max_queue is not None and len(self._waiting) >= self.max_queue:
            raise Rejected(f"queue full ({self.max_queue} waiting)")
        job = _Job(request, frames_for_seconds(request.seconds))
        self._waiting.append(job)
        self._wake.set()
        try:
            while (item := await job.out.get()) is not _END:
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            self._abandon(job)

    def _abandon(self, job: _Job) -> None:
        job.abandoned = True
        with contextlib.suppress(ValueError):
            self._waiting.remove(job)
        if self._running and all(j.abandoned for j in self._running):
            self._cancel.set()

    def _take_batch(self) -> list[_Job]:
        first = self._waiting[0]
        batch = [j for j in self._waiting if j.frames == first.frames][:self.max_batch]
        for job in batch:
            self._waiting.remove(job)
        return batch

    async def _serve(self) -> None:
        assert self._wake is not None and self._loop is not None
        while True:
            while not self._waiting:
                self._wake.clear()
                await self._wake.wait()
            if self.max_wait_s > 0:
                deadline = self._loop.time() + self.max_wait_s
                while self._loop.time() < deadline and self._waiting and self._same_length() < self.max_batch:
                    self._wake.clear()
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), deadline - self._loop.time())
                if not self._waiting:  # all abandoned while waiting
                    continue
            batch = self._take_batch()
            self._running, self._cancel = batch, threading.Event()
            self.batches.append(len(batch))
            try:
                await self._loop.run_in_executor(self._executor, self._run, batch, self._cancel)
            finally:
                self._running = []

    def _same_length(self) -> int:
        return sum(j.frames == self._waiting[0].frames for j in self._waiting)

    def _run(self, batch: list[_Job], cancel: threading.Event) -> None:
        """In the worker thread: decode one batch, handing each row's chunks to its request's queue."""
        loop = self._loop
        assert loop is not None

        def send(job: _Job, item: Any) -> None:
            if not job.abandoned:
                loop.call_soon_threadsafe(job.out.put_nowait, item)

        def on_chunk(chunk: AudioChunk) -> None:
            audio_s = chunk.audio.shape[-1] / self.sample_rate
            for row, job in enumerate(batch):
                send(job, Chunk(audio_s=audio_s, audio=chunk.audio[row]))

        try:
            stream(self.pipe, [j.request.text for j in batch], batch[0].frames, self.sampling, batch[0].request.seed,
                   on_chunk, self.chunk_frames, self.context_frames, cancel, self.first_chunk_frames)
        except StreamCancelled:  # every client gave up, or the target is closing under one still reading
            for job in batch:
                send(job, RuntimeError("the engine target closed before this request finished"))
            return
        except Exception as exc:  # the requests fail with it; the target serves on
            for job in batch:
                send(job, exc)
            return
        for job in batch:
            send(job, _END)
