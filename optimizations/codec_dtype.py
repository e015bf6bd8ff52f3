"""Cast the DAC codec's weights to half precision: the guide's mixed precision, for the stage it leaves out.

The guide (and `dtype`) cast only Dia; the codec then runs in fp32 and, on 2 CPU cores, costs 1-2 s per
second of audio, which alone rules out real time. Its convolutions are compute-bound, so a CPU with bf16
matrix units (AMX, AVX-512 bf16) runs them faster in bf16 (tests/bench/codec.py measures it). The audio
changes: fidelity compares the codec's output on the reference's own codes with the fp32 codec's, and the
quality bar holds it to a floor (harness/analysis/quality.py).
"""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin
from dia_bench.optimizations.dtype import DTYPES


class CodecDtype(Plugin):
    name = "codec-dtype"
    description = "Cast the DAC codec's weights to bf16 or fp16 (Dia's are dtype's business)"
    expectation = Expectation(section="2. Mixed Precision / FP16",
                              note="the guide casts only the model; the codec is dia-bench's addition")
    values = ("bf16", "fp16")
    default = "bf16"
    order = 11

    def transform(self, pipeline, value: str) -> str:
        import torch

        model = getattr(pipeline.codec, "model", None)
        if model is None:
            return f"nothing to act on: the {pipeline.codec.name} codec has no torch module to cast"
        model.to(getattr(torch, DTYPES[value]))
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
        return f"codec weights are {', '.join(dtypes)} (its audio comes back as fp32)"

    def report(self, pipeline, value: str) -> dict[str, Any]:
        model = getattr(pipeline.codec, "model", None)
        return {"codec_param_dtypes": sorted({str(p.dtype) for p in model.parameters()}) if model else []}


PLUGIN = CodecDtype
