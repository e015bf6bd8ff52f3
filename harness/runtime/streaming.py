"""Audio while the decoder runs: a request's waveform in chunks, each as soon as its frames are known.

With Dia's delay pattern [0, 8, 9, ..., 15] frame f of every channel is known after decode step
f + 16 (`presets.frames_complete`). Each time `chunk_frames` more frames are known, and the codec's
context after them, they are undelayed and decoded with that context on either side, and only the
chunk's own samples are kept. The context is the codec decoder's receptive field
(`codec.decoder_context_frames`), so the chunks, end to end, are the waveform that decoding the whole
utterance gives, up to float rounding (tests/test_streaming.py). The first chunk comes after
chunk_frames + context + 16 steps rather than after every step and the whole codec pass.

Chunks are decoded in the decoding thread, between two steps: a stream's steps are slower by the
codec's share, as they would be in a server that decodes as it goes.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from dia_bench.harness.presets import DELAY_PATTERN, decode_steps, frames_complete
from dia_bench.harness.runtime.codec import decode_window, decoder_context_frames
from dia_bench.harness.runtime.pipeline import BOS, DiaPipeline, SamplingParams, StepClock, undelay_frames

CHUNK_FRAMES = 43  # about half a second of audio


@dataclass(frozen=True)
class AudioChunk:
    audio: torch.Tensor  # (batch, samples) float32 on the CPU
    start_frame: int
    stop_frame: int
    ready_s: float  # from the request's start (before tokenizing) to these samples being on the CPU
    step: int  # the decode steps done when it was ready (of decode_steps(frames))
    final: bool


@dataclass(frozen=True)
class StreamResult:
    delayed: torch.Tensor  # (batch, steps + 1, channels) as `generate` returned them
    chunks: int
    first_chunk_s: float | None  # the time to first audio, from the request's start
    total_s: float  # the request's start to its last step and chunk
    step_stamps: list[float]  # the clock's stamps (perf_counter), as `DiaPipeline.run` reads them


class ChunkDecoder:
    """Delayed rows in, one step at a time; decoded chunks out, each once its frames and right context are
    known. Pure bookkeeping around `decode`, which turns aligned codes (batch, channels, frames) into
    samples (batch, frames x hop)."""

    def __init__(self, decode: Callable[[torch.Tensor], torch.Tensor], batch: int, frames: int,
                 chunk_frames: int, context_frames: int, device: torch.device | str = "cpu",
                 delays: list[int] = DELAY_PATTERN, first_chunk_frames: int | None = None) -> None:
        first = chunk_frames if first_chunk_frames is None else first_chunk_frames
        if chunk_frames < 1 or first < 1 or context_frames < 0:
            raise ValueError(f"chunk_frames and first_chunk_frames must be >= 1 and context_frames >= 0 (got "
                             f"{chunk_frames}, {first}, {context_frames})")
        self.decode, self.frames, self.delays = decode, frames, list(delays)
        # A shorter first chunk is heard sooner (its frames and right context are known after fewer steps);
        # the chunks after it are full, so the codec's overlap is paid once more, not on every chunk.
        self.chunk_frames, self.first_chunk_frames, self.context = chunk_frames, first, context_frames
        # Sized for every step, so that undelaying a window indexes rows that exist.
        self.delayed = torch.full((batch, decode_steps(frames, self.delays) + 1, len(self.delays)), BOS,
                                  dtype=torch.long, device=device)
        self.steps = 0
        self.next_frame = 0  # the first frame no chunk has covered yet

    @property
    def done(self) -> bool:
        return self.next_frame >= self.frames

    def push(self, row: torch.Tensor) -> list[tuple[int, int, torch.Tensor]]:
        """Take one step's codes (batch, channels); return the chunks they complete as (start, stop, samples)."""
        self.steps += 1
        if self.steps < self.delayed.shape[1]:  # the steps past the last frame are EOS and PAD only
            self.delayed[:, self.steps] = row.to(self.delayed.device)
        known = frames_complete(self.steps, self.frames, self.delays)
        out = []
        while not self.done:
            start = self.next_frame
            stop = min(start + (self.first_chunk_frames if start == 0 else self.chunk_frames), self.frames)
            if known < min(stop + self.context, self.frames):
                break
            samples = decode_window(self.decode, lambda lo, hi: undelay_frames(self.delayed, lo, hi, self.delays),
                                    start, stop, self.context, self.frames)
            out.append((start, stop, samples))
            self.next_frame = stop
        return out


class StreamCancelled(Exception):
    """Raised inside `generate`, at the step after a stream's `cancel` is set: it ends the decode loop."""


def stream(pipe: DiaPipeline, texts: list[str], frames: int, sampling: SamplingParams, seed: int,
           on_chunk: Callable[[AudioChunk], None], chunk_frames: int = CHUNK_FRAMES,
           context_frames: int | None = None, cancel: threading.Event | None = None,
           first_chunk_frames: int | None = None) -> StreamResult:
    """Generate `frames` audio frames for `texts`, calling `on_chunk` in this thread with each chunk as it is
    ready; the codes are those `pipe.run` gives for the same seed. `context_frames` defaults to the
    codec's receptive field: fewer lowers the time to first audio and changes samples near chunk edges.
    Setting `cancel` stops the decoder at its next step with `StreamCancelled`. `first_chunk_frames`
    (default `chunk_frames`) sizes the first chunk alone: fewer frames there lower the time to first audio."""
    t0 = time.perf_counter()
    inputs = pipe.tokenize(texts)
    context = decoder_context_frames(pipe.codec) if context_frames is None else context_frames

    def decode(codes: torch.Tensor) -> torch.Tensor:
        # Called inside `generate`, so under the same contexts (autocast, ...) as a whole decode.
        return pipe.codec.decode(codes.to(pipe.device)).float()

    chunker = ChunkDecoder(decode, len(texts), frames, chunk_frames, context, pipe.device,
                           first_chunk_frames=first_chunk_frames)
    ready: list[float] = []

    def on_row(row: torch.Tensor) -> None:
        if cancel is not None and cancel.is_set():
            raise StreamCancelled
        for start, stop, samples in chunker.push(row):
            audio = samples.cpu()
            ready.append(time.perf_counter() - t0)
            on_chunk(AudioChunk(audio, start, stop, ready[-1], chunker.steps, stop == frames))

    clock = StepClock(on_row)
    delayed = pipe.generate(inputs, frames, sampling, seed, streamer=clock)
    if not chunker.done:  # every frame is known a step before the last: a chunk left over is a bug here
        raise RuntimeError(f"stream ended at frame {chunker.next_frame} of {frames}")
    return StreamResult(delayed=delayed.cpu(), chunks=len(ready), first_chunk_s=ready[0] if ready else None,
                        total_s=time.perf_counter() - t0, step_stamps=clock.stamps)


def chunks(pipe: DiaPipeline, texts: list[str], frames: int, sampling: SamplingParams, seed: int,
           chunk_frames: int = CHUNK_FRAMES, context_frames: int | None = None,
           first_chunk_frames: int | None = None) -> Iterator[AudioChunk]:
    """`stream` as an iterator: the decoder runs in a thread of its own while the caller reads chunks.
    Closing the iterator early stops the decoder at its next step."""
    out: queue.Queue = queue.Queue()
    cancel = threading.Event()
    end = object()

    def work() -> None:
        try:
            stream(pipe, texts, frames, sampling, seed, out.put, chunk_frames, context_frames, cancel,
                   first_chunk_frames)
            out.put(end)
        except StreamCancelled:
            pass
        except BaseException as exc:  # handed to the reader, who raises it in its own thread
            out.put(exc)

    thread = threading.Thread(target=work, name="dia-stream", daemon=True)
    thread.start()
    try:
        while (item := out.get()) is not end:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        cancel.set()
        thread.join()
