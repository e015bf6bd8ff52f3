"""torch.compile of the DAC codec's decoder: the guide's compile, for the stage it leaves out.

The guide compiles Dia; the codec then runs eager, and on a CPU its convolutions and Snake activations
cost a sizeable share of a request once the decode step is fast. Inductor fuses each activation into one
loop. The decoder is compiled for any number of frames (dynamic shapes), so a request of another length,
a streamed chunk or the fidelity check's decode reuse one graph: a graph per length measured no faster.
"""

from __future__ import annotations

from typing import Any

from dia_bench.harness.runtime.codec import torch_decoder
from dia_bench.optimizations.base import Expectation, Plugin


class CodecCompile(Plugin):
    name = "codec-compile"
    description = ("torch.compile the DAC codec's decoder (inductor, any number of frames); compilation happens "
                   "in the warmup")
    expectation = Expectation(section="1. torch.compile",
                              note="the guide compiles the model; the codec is dia-bench's addition")
    order = 12  # after codec-dtype, so the graph is built for the weights' final dtype
    warms_per_shape = True

    def process_env(self, value: Any) -> dict[str, str]:
        from dia_bench.harness.caches import compile_cache_env

        return compile_cache_env()

    def transform(self, pipeline, value: Any) -> str:
        decoder = torch_decoder(pipeline.codec)
        if decoder is None:
            return f"nothing to act on: the {pipeline.codec.name} codec has no torch decoder to compile"
        decoder.compile(dynamic=True)
        return "codec decoder compiled (inductor, dynamic frames); compilation happens in the warmup"

    def report(self, pipeline, value: Any) -> dict[str, Any]:
        decoder = torch_decoder(pipeline.codec)
        return {"codec_decoder_compiled": decoder is not None and getattr(decoder, "_compiled_call_impl", None)
                is not None}


PLUGIN = CodecCompile
