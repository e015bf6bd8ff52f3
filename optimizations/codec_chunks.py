"""The codec decoding a request a stretch of frames at a time, each with its decoder's receptive field of
context on either side (as streaming does), instead of the whole utterance in one pass.

Not in the guide. The DAC decoder upsamples 512 times, and its last layers' activations for a whole long
request outgrow the caches: on a 2-core Zen 5, its compiled bf16 decoder took 0.35 s per audio second for a
10 s request in one pass and 0.30 in chunks of 172 frames (2 s) with 10 frames of context each side,
taking turns in one process; chunks of 86 or 344 frames took 0.33-0.34 (`python -m tests.bench.codec_chunks`).
The audio moves only by rounding.
"""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations._util import positive_int
from dia_bench.optimizations.base import Expectation, Plugin


class CodecChunks(Plugin):
    name = "codec-chunks"
    description = ("the codec decodes N frames at a time (default 172, 2 s), each with its decoder's receptive field "
                   "of context on either side, so a long request's activations stay a chunk's size")
    expectation = Expectation(section="(not in the guide: optimizations/codec_chunks.py)",
                              note="faster codec for long requests; audio equal up to rounding")
    values = ()
    default = "172"
    order = 13  # after codec-dtype and codec-compile: it changes only how the decoder is called

    def parse(self, value: str | None) -> int:
        return positive_int(self.name, value or self.default, "a number of frames a chunk", "frame a chunk")

    def transform(self, pipeline, value: int) -> str:
        from dia_bench.harness.presets import FRAMES_PER_SECOND
        from dia_bench.harness.runtime.codec import decoder_context_frames

        try:
            context = decoder_context_frames(pipeline.codec)
        except TypeError as exc:
            return f"nothing to act on: {exc}"
        pipeline.codec_chunks = (value, context)
        return (f"codec decodes {value} frames ({value / FRAMES_PER_SECOND:.2f} s) at a time, with {context} frames "
                "of context on either side; a request no longer than that in one pass")

    def report(self, pipeline, value: int) -> dict[str, Any]:
        chunk, context = pipeline.codec_chunks or (None, None)
        return {"codec_chunk_frames": chunk, "codec_context_frames": context}


PLUGIN = CodecChunks
