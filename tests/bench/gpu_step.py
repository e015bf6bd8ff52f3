"""The static engine's compiled decode step, variant by variant, in ONE process: what each change to
the step does to its time and to the kernels it runs. Made for a lent GPU's few minutes (the step took
2.08 ms on an H200 against a 0.62 ms bandwidth floor), where a sweep would reload the
weights and start a worker for every variant.

    python -m tests.bench.gpu_step [--preset dia-1.6b] [--device cuda] [--variant base --variant fused ...]
                                   [--batch 1 --batch 16] [--seconds 2] [--out step.json]

Variants (joined with +): base (q, k and v as three GEMMs, as transformers' modules run them), fused
(one GEMM, the engine's default on CUDA), cdt (inductor's coordinate-descent tuning of its own
kernels, as gpt-fast sets it), autotune (compile=max-autotune instead of reduce-overhead: inductor's
Triton GEMM templates tried against cuBLAS, still one CUDA graph), int8 and int4 (weight-only Linear
layers inside the graph, through the int8=torchao-weight and int4=128 plugins, on a copy of the model;
`weight_bytes` is what a step then reads of them). Each: a fresh engine, dtype bf16,
`compile=reduce-overhead` (one CUDA graph a step; max-autotune with `autotune`), two requests of
warmup, then three timed requests (the pipeline's own step clock: CUDA events) and one under the
profiler, whose kernels are summed per step by name. Batch sizes after the first run with the variant
that was fastest at it, and with the first variant (the reference) where that is another.
Not a unit test: the figures name the machine and the commit.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from dia_bench.harness import env
from dia_bench.harness.cell import Cell
from dia_bench.harness.driver.suite import load_texts, request_texts
from dia_bench.harness.presets import frames_for_seconds
from dia_bench.harness.runtime.pipeline import SamplingParams
from dia_bench.harness.runtime.static_engine import StaticEngine
from dia_bench.harness.worker.measure import load_pipeline
from dia_bench.harness.worker.profiling import device_busy, is_device_work
from dia_bench.harness.worker.roofline import decode_step_weight_bytes
from dia_bench.optimizations.registry import apply_plan, resolve

KNOBS = {"base", "fused", "cdt", "autotune", "int8", "int4"}
# Weight-only quantization inside the compiled step, through the plugins the harness applies (on CUDA
# torchao's Int8WeightOnlyConfig and Int4WeightOnlyConfig; on a CPU rehearsal the same int8 and torch's
# own int4 kernel), each on its own copy of the bf16 model so that the variants after it are unchanged.
QUANT = {"int8": "int8=torchao-weight", "int4": "int4=128"}


def kernel_table(prof, steps: int, top: int = 25) -> dict:
    """Device kernels summed by name, per decode step (the request's encoder and codec included)."""
    work = [e for e in prof.events() if is_device_work(e)]
    by_name: dict[str, list] = {}
    for e in work:
        by_name.setdefault(e.name, []).append(e)
    rows = sorted(((name, sum(e.time_range.elapsed_us() for e in es), len(es)) for name, es in by_name.items()),
                  key=lambda row: row[1], reverse=True)
    busy_us, kernels = device_busy(work)
    return {
        "busy_us_per_step": round(busy_us / steps, 1),
        "kernels_per_step": round(kernels / steps, 1),
        "top": [{"name": name[:120], "us_per_step": round(us / steps, 2), "calls_per_step": round(n / steps, 2)}
                for name, us, n in rows[:top]],
    }


def weight_bytes(model) -> int | None:
    """What one decode step reads of the weights (the roofline's count), to set beside the step's time."""
    try:
        return int(decode_step_weight_bytes(model))
    except Exception:  # a quantized tensor subclass this count does not know
        return None


def quantized(pipe, knobs: set[str], device: str):
    """The pipeline itself, or a copy whose Linear layers a QUANT plugin replaced, with that plugin's note."""
    specs = [QUANT[k] for k in sorted(knobs & set(QUANT))]
    if not specs:
        return pipe, None
    if len(specs) > 1:
        raise ValueError("one of int8 and int4 a variant")
    twin = copy.copy(pipe)
    twin.model = copy.deepcopy(pipe.model)
    twin.engine = None
    notes, _ = apply_plan(twin, resolve(specs, device), device)
    return twin, notes[specs[0]]


def measure(pipe, knobs: set[str], texts: list[str], frames: int, device: str, repeats: int) -> dict:
    torch._dynamo.reset()
    pipe, quant_note = quantized(pipe, knobs, device)
    torch._inductor.config.coordinate_descent_tuning = "cdt" in knobs
    engine = StaticEngine(pipe, fuse_qkv="fused" in knobs)
    engine.compile("max-autotune" if "autotune" in knobs else "reduce-overhead")
    pipe.engine = engine
    sampling = SamplingParams()
    t0 = time.perf_counter()
    for i in range(2):  # the first compiles, the second records the CUDA graph
        pipe.run(texts, frames, sampling, i)
    warmup_s = time.perf_counter() - t0
    outs = [pipe.run(texts, frames, sampling, 10 + i) for i in range(repeats)]
    steps_ms = sorted(s * 1000 for o in outs for s in o.times.step_latencies_s)
    n = len(steps_ms)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.startswith("cuda") else [])
    with profile(activities=activities) as prof:
        out = pipe.run(texts, frames, sampling, 99)
    return {
        "warmup_s": round(warmup_s, 1), "mode": engine.compiled, "engine": engine.describe(),
        "quantization": quant_note, "weight_bytes": weight_bytes(pipe.model),
        "step_ms": {"p10": round(steps_ms[n // 10], 4), "p50": round(statistics.median(steps_ms), 4),
                    "p90": round(steps_ms[n * 9 // 10], 4), "n": n},
        "decode_s": [round(o.times.decode_s, 4) for o in outs],
        "end_to_end_s": [round(o.times.end_to_end_s, 4) for o in outs],
        "codec_s": [round(o.times.codec_decode_s, 4) for o in outs],
        "audio_s_per_request": round(outs[0].audio.shape[-1] / 44100, 3),
        "kernels": kernel_table(prof, len(out.times.step_latencies_s)),
        "compile": {"cudagraph_skips": torch._dynamo.utils.counters["inductor"].get("cudagraph_skips", 0),
                    "graph_breaks": sum(torch._dynamo.utils.counters["graph_break"].values())},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dia-1.6b")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--variant", action="append", help="knobs joined with + (default: base, fused)")
    parser.add_argument("--batch", action="append", type=int, help="batch sizes (default: 1)")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--text", default="medium")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    variants = args.variant or ["base", "fused"]
    for v in variants:
        if not set(v.split("+")) <= KNOBS:
            parser.error(f"variant '{v}': knobs are {', '.join(sorted(KNOBS))}")
    batches = args.batch or [1]

    plan = resolve(["dtype=bf16"], args.device)
    cell = Cell(preset=args.preset, device=args.device, warmup=0, repeats=1)
    t0 = time.perf_counter()
    pipe, weights = load_pipeline(cell, plan.load_dtype() or torch.float32)
    apply_plan(pipe, plan, args.device)
    text = request_texts(args.text, load_texts())
    frames = frames_for_seconds(args.seconds)
    info = env.collect(args.device)
    result = {"preset": args.preset, "weights": weights["source"], "device": args.device,
              "gpu": info["device_name"], "cpu": info["cpu"]["model"],
              "torch": torch.__version__, "seconds": args.seconds, "frames": frames,
              "load_s": round(time.perf_counter() - t0, 1), "runs": []}

    def record(variant: str, batch: int) -> dict:
        print(f"== {variant}, batch {batch}", flush=True)
        try:
            with torch.inference_mode():
                r = measure(pipe, set(variant.split("+")), [text[i % len(text)] for i in range(batch)], frames,
                            args.device, args.repeats)
        except Exception as exc:  # one failing variant must not lose the others' figures
            r = {"error": f"{type(exc).__name__}: {exc}"[:500]}
        r.update(variant=variant, batch=batch)
        result["runs"].append(r)
        if "step_ms" in r:
            k = r["kernels"]
            print(f"   step p50 {r['step_ms']['p50']:.3f} ms (p10 {r['step_ms']['p10']:.3f}), "
                  f"end-to-end {statistics.median(r['end_to_end_s']):.3f} s, warmup {r['warmup_s']} s, "
                  f"{k['kernels_per_step']} kernels and {k['busy_us_per_step']} us busy a step", flush=True)
            for row in k["top"][:8]:
                print(f"     {row['us_per_step']:8.2f} us {row['calls_per_step']:6.2f}x  {row['name'][:90]}")
        else:
            print("   " + r["error"], flush=True)
        if args.out:
            args.out.write_text(json.dumps(result, indent=1))
        return r

    for variant in variants:
        record(variant, batches[0])
    timed = [r for r in result["runs"] if "step_ms" in r]
    best = min(timed, key=lambda r: r["step_ms"]["p50"])["variant"] if timed else variants[-1]
    for batch in batches[1:]:
        for variant in dict.fromkeys([variants[0], best]):
            record(variant, batch)


if __name__ == "__main__":
    main()
