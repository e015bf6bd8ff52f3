"""engine=static's self- and cross-attention caches in bf16 on the CPU: half the bytes a step's attention reads."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin


class KvCache(Plugin):
    name = "kv-cache"
    description = ("With engine=static on the CPU: keep the attention caches (keys and values of the text and of "
                   "every step so far) in bf16; dia-bench's attention kernel widens them to fp32 as it reads")
    expectation = Expectation(section="(not in the guide: harness/kernels/decode_attention.c)",
                              note="a step's attention reads the caches whole: 106 MB of text keys and values in "
                                   "fp32 for the medium text, 256 MB more at 20 s of audio")
    devices = frozenset({"cpu"})
    values = ("bf16",)
    default = "bf16"
    requires = frozenset({"engine=static"})  # the caches are dia-bench's decode loop's
    order = 86  # after engine (85) builds the loop

    def transform(self, pipeline, value: str) -> str:
        import torch

        if pipeline.model.dtype == torch.bfloat16:
            return "nothing to act on: the activations, and so the caches, are bf16 already"
        pipeline.engine.cache_dtype = torch.bfloat16
        how = pipeline.engine.attention()
        return (f"attention caches in bf16, read by the {how} attention"
                + ("" if how == "cpu-kernel" else " after widening them to the activations' dtype each step"))

    def report(self, pipeline, value: str) -> dict[str, Any]:
        how = pipeline.engine.attention()
        return {"cache_dtype": "bfloat16", "attention": how, "widened_each_step": how != "cpu-kernel"}


PLUGIN = KvCache
