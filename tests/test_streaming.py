"""Streaming audio out of the real dia-tiny pipeline: chunks decoded while the decoder runs are, end to end,
the waveform that decoding the whole utterance gives; and they come before the last step."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dia_bench.harness.presets import DELAY_PATTERN, HOP_LENGTH, decode_steps, frames_complete
from dia_bench.harness.runtime.codec import decoder_context_frames
from dia_bench.harness.runtime.pipeline import SamplingParams, undelay_frames
from dia_bench.harness.runtime.static_engine import StaticEngine
from dia_bench.harness.runtime.streaming import AudioChunk, chunks, stream

TEXTS = ["[S1] Streaming starts before the last step. [S2] Does it?", "[S1] A second row."]
FRAMES = 70
# The chunks' samples come from shorter convolutions than the whole decode's, which may sum in another
# order: float32 rounding, about 1e-8 here against samples of about 3e-2 (DAC's tanh output).
ATOL, RTOL = 1e-6, 1e-5


def test_frames_are_complete_max_delay_steps_after_they_start():
    assert frames_complete(15, 100) == 0
    assert frames_complete(16, 100) == 1  # frame 0 of the channel delayed by 15 comes at step 16
    assert frames_complete(40, 100) == 25
    assert frames_complete(decode_steps(100) - 1, 100) == 100  # the last step is the last channel's EOS


def test_undelaying_a_window_gives_those_frames_of_the_whole_undelay(tiny_pipeline):
    pipe, _ = tiny_pipeline
    out = pipe.run(TEXTS, 40, SamplingParams(), seed=2)
    assert torch.equal(undelay_frames(out.delayed, 0, 40), out.codes)
    assert torch.equal(undelay_frames(out.delayed, 13, 29), out.codes[:, :, 13:29])
    # Frames [0, 10) need rows up to 10 + 15 only: later rows may still be unknown.
    partial = out.delayed.clone()
    partial[:, 10 + max(DELAY_PATTERN) + 1:] = -1
    assert torch.equal(undelay_frames(partial, 0, 10), out.codes[:, :, :10])


def test_the_codecs_context_is_dacs_receptive_field(tiny_pipeline):
    """DAC 44.1 kHz, tiny or real (the same kernels, strides and dilations): its residual units at 8 samples
    a frame reach furthest. Decoding with less context changes samples; with this much it does not."""
    pipe, _ = tiny_pipeline
    context = decoder_context_frames(pipe.codec)
    assert context == 10
    codes = pipe.run(TEXTS[:1], 60, SamplingParams(), seed=3).codes
    whole = pipe.decode_audio(codes).cpu()
    start, stop = 25, 35

    def window(ctx: int) -> torch.Tensor:
        lo, hi = start - ctx, stop + ctx
        return pipe.decode_audio(codes[:, :, lo:hi]).cpu()[:, (start - lo) * HOP_LENGTH:(stop - lo) * HOP_LENGTH]

    part = whole[:, start * HOP_LENGTH:stop * HOP_LENGTH]
    assert np.allclose(window(context).numpy(), part.numpy(), atol=ATOL, rtol=RTOL)
    assert not np.allclose(window(0).numpy(), part.numpy(), atol=ATOL, rtol=RTOL)


def _stream(pipe, chunk_frames: int, context_frames: int | None = None) -> tuple[list[AudioChunk], object]:
    got: list[AudioChunk] = []
    result = stream(pipe, TEXTS, FRAMES, SamplingParams(), seed=5, on_chunk=got.append, chunk_frames=chunk_frames,
                    context_frames=context_frames)
    return got, result


@pytest.mark.parametrize("chunk_frames", [9, 43, FRAMES + 5])
def test_streamed_chunks_are_the_whole_waveform(tiny_pipeline, chunk_frames):
    pipe, _ = tiny_pipeline
    whole = pipe.run(TEXTS, FRAMES, SamplingParams(), seed=5)
    got, result = _stream(pipe, chunk_frames)

    assert torch.equal(result.delayed, whole.delayed)  # the same seed samples the same codes
    assert [c.start_frame for c in got] == list(range(0, FRAMES, chunk_frames))
    assert [c.stop_frame for c in got] == [*list(range(chunk_frames, FRAMES, chunk_frames)), FRAMES]
    assert [c.final for c in got] == [False] * (len(got) - 1) + [True]
    for c in got:
        assert c.audio.shape == (len(TEXTS), (c.stop_frame - c.start_frame) * HOP_LENGTH)
    streamed = torch.cat([c.audio for c in got], dim=1)
    assert streamed.shape == whole.audio.shape
    assert np.allclose(streamed.numpy(), whole.audio.numpy(), atol=ATOL, rtol=RTOL)

    # The time to first audio is recorded, and the first chunk came as soon as its frames and the codec's
    # right context were known: before the last step wherever that is sooner.
    assert result.chunks == len(got)
    assert result.first_chunk_s == got[0].ready_s
    assert 0 < result.first_chunk_s <= got[-1].ready_s <= result.total_s
    needed = min(chunk_frames + decoder_context_frames(pipe.codec), FRAMES)
    assert got[0].step == needed + max(DELAY_PATTERN)
    assert got[-1].step == FRAMES + max(DELAY_PATTERN) < decode_steps(FRAMES)
    assert len(result.step_stamps) == 1 + decode_steps(FRAMES)


def test_a_shorter_first_chunk_comes_sooner_and_the_waveform_is_the_same(tiny_pipeline):
    pipe, _ = tiny_pipeline
    whole = pipe.run(TEXTS, FRAMES, SamplingParams(), seed=5)
    got: list[AudioChunk] = []
    stream(pipe, TEXTS, FRAMES, SamplingParams(), seed=5, on_chunk=got.append, chunk_frames=16, first_chunk_frames=4)
    assert [(c.start_frame, c.stop_frame) for c in got[:3]] == [(0, 4), (4, 20), (20, 36)]
    assert got[0].step == 4 + decoder_context_frames(pipe.codec) + max(DELAY_PATTERN)
    streamed = torch.cat([c.audio for c in got], dim=1)
    assert np.allclose(streamed.numpy(), whole.audio.numpy(), atol=ATOL, rtol=RTOL)


def test_less_context_than_the_codec_needs_changes_the_waveform(tiny_pipeline):
    """So that the test above can fail: without the right context, chunk edges differ."""
    pipe, _ = tiny_pipeline
    whole = pipe.run(TEXTS, FRAMES, SamplingParams(), seed=5).audio
    got, _ = _stream(pipe, 16, context_frames=0)
    assert got[0].step == 16 + max(DELAY_PATTERN)
    assert not np.allclose(torch.cat([c.audio for c in got], dim=1).numpy(), whole.numpy(), atol=ATOL, rtol=RTOL)


def test_the_static_engine_streams_the_same_waveform(tiny_pipeline):
    pipe, _ = tiny_pipeline
    pipe.engine = StaticEngine(pipe, attention_kernel=False)
    try:
        whole = pipe.run(TEXTS, FRAMES, SamplingParams(), seed=5)
        got, result = _stream(pipe, 20)
    finally:
        pipe.engine = None
    assert torch.equal(result.delayed, whole.delayed)
    assert np.allclose(torch.cat([c.audio for c in got], dim=1).numpy(), whole.audio.numpy(), atol=ATOL, rtol=RTOL)


def test_the_iterator_yields_the_same_chunks_and_stops_the_decoder_when_closed(tiny_pipeline):
    pipe, _ = tiny_pipeline
    expected, _ = _stream(pipe, 16)
    it = chunks(pipe, TEXTS, FRAMES, SamplingParams(), seed=5, chunk_frames=16)
    got = list(it)
    assert [(c.start_frame, c.stop_frame) for c in got] == [(c.start_frame, c.stop_frame) for c in expected]
    assert all(torch.equal(a.audio, b.audio) for a, b in zip(got, expected, strict=True))

    it = chunks(pipe, TEXTS, 400, SamplingParams(), seed=5, chunk_frames=16)
    first = next(it)
    it.close()  # returns once the decoding thread has stopped, at its next step, not after 400 frames
    assert first.start_frame == 0
    # The pipeline is free again and gives the same audio as before.
    again, _ = _stream(pipe, 16)
    assert all(torch.equal(a.audio, b.audio) for a, b in zip(again, expected, strict=True))
