"""Cast the DAC codec's weights to half precision: the guide's mixed precision, for the stage it leaves out.

The guide (and `dtype`) cast only Dia; the codec then runs in fp32 and, on 2 CPU cores, costs 1-2 s per
second of audio, which alone rules out real time. Its convolutions are compute-bound, so a CPU with bf16
matrix units (AMX, AVX-512 bf16) runs them faster in bf16 (tests/bench/codec.py measures it). The audio
changes: fidelity compares the codec's output on the reference's own codes with the fp32 codec's, and the
quality bar holds it to a floor (harness/analysis/quality.py).

A CPU without bf16 instructions (AVX-512 bf16 or AMX) runs bf16 convolutions in a slow emulation: on a 2-core
Zen 3 with AVX2 only, the real-size codec took 28 s in bf16 against 0.4 s in fp32 for a quarter second of
audio. So a bare `codec-dtype` keeps the codec in fp32 there (`fp32`: no cast), and the value it chose is
what the cell and the record carry.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin
from dia_bench.optimizations.dtype import DTYPES


class CodecDtype(Plugin):
    name = "codec-dtype"
    description = "Cast the DAC codec's weights to bf16 or fp16 (Dia's are dtype's business)"
    expectation = Expectation(section="2. Mixed Precision / FP16",
                              note="the guide casts only the model; the codec is dia-bench's addition")
    values = ("bf16", "fp16", "fp32")
    default = "bf16"
    order = 11

    def default_value(self, device: str) -> str:
        """bf16, except on a CPU without bf16 instructions: fp32 there, the codec as it is."""
        return self.default if device.startswith("cuda") or native_bf16() else "fp32"

    def transform(self, pipeline, value: str) -> str:
        import torch

        model = getattr(pipeline.codec, "model", None)
        if model is None:
            return f"nothing to act on: the {pipeline.codec.name} codec has no torch module to cast"
        model.to(getattr(torch, DTYPES.get(value, "float32")))
        dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
        note = f"codec weights are {', '.join(dtypes)} (its audio comes back as fp32)"
        if value != "fp32" and pipeline.device.type == "cpu" and not native_bf16():
            note += "; this CPU has no bf16 instructions, so its half-precision convolutions run emulated"
        return note

    def report(self, pipeline, value: str) -> dict[str, Any]:
        model = getattr(pipeline.codec, "model", None)
        return {"codec_param_dtypes": sorted({str(p.dtype) for p in model.parameters()}) if model else []}


@cache  # a CPU's flags do not change within a process
def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions its convolutions can use (AVX-512 bf16 or AMX)."""
    from dia_bench.harness.env import cpu_info

    features = cpu_info()["features"]
    return bool(features.get("avx512_bf16") or features.get("amx_bf16"))


PLUGIN = CodecDtype
