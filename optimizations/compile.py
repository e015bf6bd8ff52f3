"""torch.compile of the Dia forward, with a static KV cache so decode steps keep one shape."""

from __future__ import annotations

import os
from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin

# The oldest torch whose inductor C++ wrapper has been seen to build and run the static engine's CPU step
# (2.11 and 2.13 have); older ones keep the Python wrapper.
CPP_WRAPPER_SINCE = "2.11"


class Compile(Plugin):
    name = "compile"
    description = ("torch.compile the Dia forward (inductor) with a static cache, or with engine=static its decode "
                   "step; compile time kept apart")
    expectation = Expectation(section="1. torch.compile", speedup=(1.5, 2.0), note="after warmup")
    values = ("default", "reduce-overhead", "max-autotune")
    default = "default"
    order = 90
    warms_per_shape = True  # after quantization and casts, so the compiled graph sees the final model

    def process_env(self, value: str) -> dict[str, str]:
        from dia_bench.harness.caches import compile_cache_env

        return compile_cache_env()

    def transform(self, pipeline, value: str) -> str:
        import torch

        if pipeline.engine is not None:  # engine=static: its one decode step, at the request's fixed shapes
            # On the CPU, the step's host code in C++ rather than Python: a step calls about 250 kernels and
            # operators, and taking turns step by step within each request (tests/bench/step_ab.py --compare
            # inductor --by-step) the int4 step took 0.953-0.976x the time on a 2-core Zen 5 with torch 2.13, in
            # all 8 requests, and 0.956-0.962x with torch 2.11, in all 6.
            on_cpu = torch.device(pipeline.device).type == "cpu"
            cpp_wrapper = on_cpu and torch.__version__ >= CPP_WRAPPER_SINCE
            pipeline.engine.compile(value, **({"cpp_wrapper": True} if cpp_wrapper else {}))
            wrapper = (", C++ wrapper" if cpp_wrapper else
                       f", Python wrapper: the C++ one needs torch >= {CPP_WRAPPER_SINCE}" if on_cpu else "")
            return f"engine=static's decode step compiled (mode={value}{wrapper}); compilation happens in the warmup"
        model = pipeline.model
        model.forward = torch.compile(model.forward, mode=value, dynamic=False)
        pipeline.generate_kwargs["cache_implementation"] = "static"
        pipeline.forward_compiled = True  # fidelity teacher-forces through generate: the graphs it measured
        return f"forward compiled (mode={value}, static cache); compilation happens in the warmup"

    def report(self, pipeline, value: str) -> dict[str, Any]:
        from torch._dynamo.utils import counters

        hits = counters["inductor"].get("fxgraph_cache_hit", 0)
        misses = counters["inductor"].get("fxgraph_cache_miss", 0)
        # Warm: every graph came from the shared inductor cache; cold: every one was compiled here.
        cache = "warm" if hits and not misses else "cold" if misses and not hits else "partial" if hits else "none"
        return {
            "dynamo_frames": dict(counters["frames"]),
            "dynamo_unique_graphs": counters["stats"].get("unique_graphs", 0),
            "graph_breaks": sum(counters["graph_break"].values()),
            "fxgraph_cache_hits": hits,
            "fxgraph_cache_misses": misses,
            "compile_cache": cache,
            "compile_cache_dir": os.environ.get("TORCHINDUCTOR_CACHE_DIR"),
            # reduce-overhead falls back to plain launches, with only a log line, where a graph cannot
            # be captured (a CPU tensor input, a mutated input that moves): the count makes that visible.
            "cudagraph_skips": counters["inductor"].get("cudagraph_skips", 0),
        }


PLUGIN = Compile
