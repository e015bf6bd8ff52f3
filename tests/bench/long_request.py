"""A long request through engine=static, its self-attention reading the positions written so far
(`span`, what eager steps do) against reading the whole cache allocated for the request (`whole`, what
a compiled step does, at one shape), `compiled` (that step compiled), and `span-matmul` (eager, attention
through torch's matmuls instead of dia-bench's CPU kernel); each of them with `-bf16` appended keeps
its caches in bf16 (kv-cache=bf16). One loaded model, the variants taking turns.

    python -m tests.bench.long_request [--preset dia-1.6b] [--opt int4=8da4w-128 ...] [--seconds 20] [--rounds 2]
                                       [--variants span,whole,compiled,span-matmul,span-bf16,...] [--text medium]

Prints, per round and variant, the first and last tenth's median step and the mean step, and the
long-form RTF those imply (mean step x 86.13 frames per second). Not a unit test: the figures depend
on the machine.
"""

from __future__ import annotations

import argparse
import statistics

import torch

from dia_bench.harness import env
from dia_bench.harness.cell import Cell
from dia_bench.harness.driver.suite import load_texts, request_texts
from dia_bench.harness.presets import FRAMES_PER_SECOND, frames_for_seconds
from dia_bench.harness.runtime.pipeline import SamplingParams
from dia_bench.harness.runtime.static_engine import StaticEngine
from dia_bench.harness.worker.measure import load_pipeline
from dia_bench.optimizations.registry import apply_plan, resolve

TEXT = ["[S1] Dia is an open weights text to dialogue model."]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dia-1.6b")
    parser.add_argument("--opt", action="append", default=[], help="plugins (engine=static implied)")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--variants", default="span,whole",
                        help="of span, whole, compiled, span-matmul, each optionally with -bf16")
    parser.add_argument("--text", default=None, help="a text of suites/texts.toml (default: one short sentence)")
    args = parser.parse_args()

    plan = resolve([o for o in args.opt if not o.startswith("engine")], "cpu")
    pipe, weights = load_pipeline(Cell(preset=args.preset, device="cpu", warmup=0, repeats=1),
                                  plan.load_dtype() or torch.float32)
    apply_plan(pipe, plan, "cpu")
    variants = args.variants.split(",")
    unknown = {v for v in variants if v.removesuffix("-bf16") not in ("span", "whole", "compiled", "span-matmul")}
    if unknown:
        parser.error(f"--variants: unknown {', '.join(sorted(unknown))}")
    text = TEXT if args.text is None else request_texts(args.text, load_texts())[:1]
    frames = frames_for_seconds(args.seconds)
    engines = {}
    for name in variants:
        base = name.removesuffix("-bf16")
        engine = StaticEngine(pipe, attention_kernel=base != "span-matmul")
        engine.cache_dtype = torch.bfloat16 if name.endswith("-bf16") else None
        if base == "whole":
            engine._span = lambda t: None
        pipe.engine = engine
        pipe.run(text, frames_for_seconds(1.0), SamplingParams(), 0)  # warm up
        if base == "compiled":
            engine.compile("default")
            pipe.run(text, frames, SamplingParams(), 0)  # compiles at this request's shapes
        engines[name] = engine
    print(f"cpu: {env.cpu_info()['model']}  weights: {weights['source']}  preset: {args.preset}  "
          f"plugins: {plan.specs or ['none']}  audio: {args.seconds} s  text: {args.text or 'short'}")
    for rnd in range(args.rounds):
        for name in variants:
            pipe.engine = engines[name]
            steps = pipe.run(text, frames, SamplingParams(), 0).times.step_latencies_s
            tenth = max(1, len(steps) // 10)
            mean = sum(steps) / len(steps)
            print(f"round {rnd} {name:>14}: steps {len(steps)}  first tenth p50 "
                  f"{statistics.median(steps[:tenth]) * 1e3:.1f} ms  last tenth p50 "
                  f"{statistics.median(steps[-tenth:]) * 1e3:.1f} ms  mean {mean * 1e3:.1f} ms  "
                  f"long-form RTF {mean * FRAMES_PER_SECOND:.2f}", flush=True)


if __name__ == "__main__":
    main()
