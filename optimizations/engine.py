"""Which decode loop runs: transformers' `generate` (hf) or dia-bench's own (static)."""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin


class Engine(Plugin):
    name = "engine"
    description = ("Decode loop: hf is transformers' generate (also what runs without this plugin); static is "
                   "dia-bench's own, with a cache allocated once and sampling on the device")
    expectation = Expectation(section="(not in the guide: dia-bench's decode loop, harness/runtime/static_engine.py)",
                              note="same codes as generate; no figure in the guide")
    values = ("hf", "static")
    default = "static"
    # After every plugin that changes or replaces modules, which the loop calls as they are; before
    # compile, which then compiles the loop's one step instead of the model's forward.
    order = 85

    def transform(self, pipeline, value: str) -> str:
        if value == "hf":
            return "transformers' generate, as without this plugin"
        from dia_bench.harness.runtime.static_engine import StaticEngine

        pipeline.engine = StaticEngine(pipeline)
        return ("dia-bench's decode loop: encoder and cross-attention keys/values once, a self-attention cache "
                "allocated per request, CFG rows in one batch, sampling and forced tokens on the device")

    def report(self, pipeline, value: str) -> dict[str, Any]:
        engine = pipeline.engine
        if engine is None:
            return {"engine": "hf", "compiled_step": None}
        return {"engine": "static", **engine.describe()}


PLUGIN = Engine
