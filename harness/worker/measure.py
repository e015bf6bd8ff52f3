"""Measures one cell inside the worker: load, transform, warm up, repeat, then the trackers."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dia_bench.harness import process_noise, stats
from dia_bench.harness.cell import Cell
from dia_bench.harness.presets import FRAMES_PER_SECOND, SAMPLE_RATE, get_preset
from dia_bench.harness.record import now
from dia_bench.harness.runtime.codec import load_codec
from dia_bench.harness.runtime.pipeline import DiaPipeline, PipelineOutput, SamplingParams
from dia_bench.harness.runtime.weights import resolve as resolve_weights
from dia_bench.harness.worker.roofline import attention_cache_bytes, bandwidth_probe, roofline
from dia_bench.harness.worker.trackers import PhaseMemory
from dia_bench.optimizations.registry import Plan, apply_plan

MAX_REPEATS = 200  # a time budget on a tiny model must still end


def sampling_of(cell: Cell) -> SamplingParams:
    return SamplingParams(cfg_scale=cell.cfg_scale, temperature=cell.temperature, top_p=cell.top_p,
                          top_k=cell.top_k)


def load_pipeline(cell: Cell, load_dtype: torch.dtype = torch.float32) -> tuple[DiaPipeline, dict[str, Any]]:
    preset = get_preset(cell.preset)
    model_w = resolve_weights(preset, "model", cell.weights, cell.weights_seed)
    codec_w = resolve_weights(preset, "codec", cell.codec_weights, cell.weights_seed)
    codec = load_codec(cell.codec, codec_w.path, cell.device)
    pipe = DiaPipeline.load(model_w.path, codec, cell.device, dtype=load_dtype)
    pipe.weights_id = model_w.content_hash  # what caches of transformed weights are keyed by
    weights = {
        "source": model_w.source,
        "audio_is_noise": model_w.source == "synthetic" or codec_w.source == "synthetic",
        "model": model_w.to_dict(),
        "codec": codec_w.to_dict(),
    }
    return pipe, weights


def _stage_medians(outputs: list[PipelineOutput]) -> dict[str, Any]:
    names = ("tokenize_s", "encoder_prefill_s", "decode_s", "codec_decode_s", "generate_s")
    stages = {n: stats.median([getattr(o.times, n) for o in outputs]) for n in names}
    stages["end_to_end_s"] = stats.median([o.times.end_to_end_s for o in outputs])
    steps_ms = [s * 1000 for o in outputs for s in o.times.step_latencies_s]
    stages["step_latency_ms"] = stats.summary(steps_ms)
    return stages


def process_term(cell: Cell) -> stats.ProcessNoise:
    return (process_noise.from_dict(cell.process_term)
            or process_noise.default_prior(process_noise.noise_kind(cell.device, cell.preset)))


def interval_pct(times: list[float], process: stats.ProcessNoise | None = None, within: bool = False) -> float | None:
    """Half the width of the 95% interval of the repeats, in percent of their centre: with the
    between-process term `process`, or the repeats-only interval with `within`."""
    ci = stats.location_ci(times, process=process)
    low, high = (ci["within_low"], ci["within_high"]) if within else (ci["low"], ci["high"])
    if low is None:
        return None
    return (high - low) / 2 / ci["center"] * 100


def process_floor_pct(process: stats.ProcessNoise) -> float:
    """The narrowest interval any number of repeats in one process can reach: the process term's own."""
    if process.variance <= 0:
        return 0.0
    half = stats.t_quantile(1 - (1 - stats.CONFIDENCE) / 2, process.df) * math.sqrt(process.variance)
    return (math.exp(half) - math.exp(-half)) / 2 * 100


def _more(cell: Cell, outputs: list[PipelineOutput], elapsed: float) -> bool:
    """After the minimum: one more repeat while the interval (the between-process term included) is
    wider than the target, up to max_repeats, and while more repeats can still narrow it; or while a
    time budget lasts."""
    if cell.target_ci_pct is not None:
        if len(outputs) >= (cell.max_repeats or cell.repeats):
            return False
        term = process_term(cell)
        pct = interval_pct([o.times.generate_s for o in outputs], term)
        return (pct is None or pct > cell.target_ci_pct) and process_floor_pct(term) < cell.target_ci_pct
    return bool(cell.time_budget_s) and elapsed < cell.time_budget_s and len(outputs) < MAX_REPEATS


def long_form(outputs: list[PipelineOutput], frames: int, batch: int) -> dict[str, Any]:
    """The cost of a request split into a fixed part and a part per second of audio, per repeat.

    A request of F frames runs F + 16 decode steps (the delay pattern), after the encoder and a
    prefill: short audio pays those once and reads slow. Long audio costs one decode step per
    frame, so a repeat's mean step time x 86.13 frames/s (over the batch) is its long-form RTF; what
    is left of its generation time beyond F steps is the fixed cost of a request.
    A step also grows slower as the sequence grows (attention over it, caches and masks rebuilt
    each step): the slope of step time against step index says by how much, so a figure at one
    length can be carried to another (`harness/analysis/scaling.py` does, to check the two against each other).
    """
    rtf, fixed, growth = [], [], []
    for o in outputs:
        steps = o.times.step_latencies_s
        if not steps:
            continue
        step_s = sum(steps) / len(steps)
        rtf.append(step_s * FRAMES_PER_SECOND / batch)
        fixed.append(o.times.generate_s - step_s * frames)
        if len(steps) > 2:
            growth.append(float(np.polyfit(np.arange(len(steps)), np.asarray(steps), 1)[0]) * 1e6)
    return {
        "rtf_repeats": rtf,
        "fixed_seconds_repeats": fixed,
        "step_growth_us_per_step_repeats": growth,
        "steps_per_request": len(outputs[-1].times.step_latencies_s) if outputs else None,
        "rtf": stats.location_ci(rtf)["center"] if rtf else None,
        "fixed_seconds": stats.linear_ci(fixed)["center"] if fixed else None,
        "method": "mean decode step x 86.13 frames/s / batch; fixed = generation - frames x mean step",
    }


def _graphs_compiled() -> int | None:
    """torch.compile's count of graphs compiled in this process so far; None where dynamo was never
    imported (importing it to ask would cost a second)."""
    import sys

    if "torch._dynamo" not in sys.modules:
        return None
    from torch._dynamo.utils import counters

    return int(counters["stats"].get("unique_graphs", 0))


def measure_pipeline(cell: Cell, plan: Plan, progress: Callable[..., None],
                     fault_hook: Callable[[], None]) -> dict[str, Any]:
    device = torch.device(cell.device)
    load_dtype = plan.load_dtype() or torch.float32
    memory = PhaseMemory(device)

    progress("loading", preset=cell.preset)
    t0 = time.perf_counter()
    with memory.phase("load"):
        pipe, weights = load_pipeline(cell, load_dtype)
    load_s = time.perf_counter() - t0

    progress("transform", plugins=plan.specs)
    with memory.phase("transform"):
        notes, transform_s = apply_plan(pipe, plan, cell.device)

    texts = cell.request_texts
    sampling = sampling_of(cell)
    fault_hook()

    warmup_s = []
    warmup_steps = cell.warmup_steps(full_length=plan.warms_per_shape())
    with memory.phase("warmup"):
        for i in range(cell.warmup):
            progress("warmup", i=i + 1, n=cell.warmup)
            warmup_s.append(pipe.run(texts, cell.frames, sampling, cell.seed).times.generate_s
                            if warmup_steps is None else pipe.warm(texts, warmup_steps, sampling, cell.seed))

    outputs: list[PipelineOutput] = []
    graphs_before = _graphs_compiled()
    probes = [bandwidth_probe(device)]  # the roofline's bandwidth, as it is now (see bandwidth_probe)
    measured_from = now()
    with memory.phase("repeats", sample_device=True):
        started = time.perf_counter()
        while len(outputs) < cell.repeats or _more(cell, outputs, time.perf_counter() - started):
            progress("repeat", i=len(outputs) + 1, n=cell.max_repeats or cell.repeats)
            outputs.append(pipe.run(texts, cell.frames, sampling, cell.seed))
    measured_until = now()
    graphs_after = _graphs_compiled()
    probes.append(bandwidth_probe(device))

    audio_seconds = cell.frames * cell.batch / FRAMES_PER_SECOND
    gen = [o.times.generate_s for o in outputs]
    e2e = [o.times.end_to_end_s for o in outputs]
    generation_s = stats.median(gen)
    stages = _stage_medians(outputs)
    last = outputs[-1]
    step_p50 = stages["step_latency_ms"].get("p50")
    rec: dict[str, Any] = {
        "weights": weights,
        "dtype": str(load_dtype).removeprefix("torch."),
        "plugin_notes": notes,
        "transform_seconds": transform_s,
        "load_seconds": round(load_s, 4),
        "warmup_seconds": warmup_s,
        "warmup_frames": cell.frames if warmup_steps is None else 0,
        "repeats_seconds": gen,
        # Anything compiled inside the timed window was timed as generation (a warmup too short, a shape
        # seen first in the repeats): 0 is the only honest value; None where nothing was ever compiled.
        "graphs_compiled_in_repeats": None if graphs_after is None else graphs_after - (graphs_before or 0),
        # When the measured repeats ran: speedups compare against the baseline interpolated to here.
        "measured_from": measured_from,
        "measured_until": measured_until,
        "end_to_end_repeats_seconds": e2e,
        "generation_seconds": generation_s,
        "generation_iqr_seconds": stats.iqr(gen),
        "end_to_end_seconds": stats.median(e2e),
        "audio_seconds": audio_seconds,
        "audio_seconds_per_request": cell.frames / FRAMES_PER_SECOND,
        "samples": int(last.audio.shape[-1]),
        "sample_rate": SAMPLE_RATE,
        "rtf": generation_s / audio_seconds,
        "xrt": audio_seconds / generation_s,
        "rtf_end_to_end": stats.median(e2e) / audio_seconds,
        "xrt_end_to_end": audio_seconds / stats.median(e2e),
        "long_form": long_form(outputs, cell.frames, cell.batch),
        "codec_seconds_per_audio_second": (stages["codec_decode_s"] / audio_seconds
                                           if stages["codec_decode_s"] is not None else None),
        "decode_steps_per_second": (len(last.times.step_latencies_s) / stages["decode_s"]
                                    if stages["decode_s"] else None),
        # Audio frames delivered per second of generation, all requests together; the delay
        # pattern's extra steps are not frames.
        "audio_frames_per_second": cell.batch * cell.frames / generation_s,
        "decoder_batch_rows": last.generation_batch_rows,
        "stages": stages,
        "step_latencies_ms": [round(s * 1000, 4) for o in outputs for s in o.times.step_latencies_s],
        **memory.result("repeats"),
        "roofline": roofline(pipe.model, device, step_p50 / 1000 if step_p50 else None,
                             attention_cache_bytes(pipe.model, last.generation_batch_rows, last.text_positions,
                                                   len(last.times.step_latencies_s), last.cache_dtype),
                             (probes[0], probes[1])),
        "codec": cell.codec,
    }
    if cell.target_ci_pct is not None:
        term = process_term(cell)
        achieved, floor = interval_pct(gen, term), process_floor_pct(term)
        rec["adaptive"] = {"target_ci_pct": cell.target_ci_pct, "achieved_ci_pct": achieved,
                           "target_met": achieved is not None and achieved <= cell.target_ci_pct,
                           "repeats_run": len(gen), "min_repeats": cell.repeats, "max_repeats": cell.max_repeats,
                           "within_ci_pct": interval_pct(gen, within=True),
                           "process_term": process_noise.as_dict(term),
                           "unreachable": None if floor < cell.target_ci_pct else (
                               f"the noise between processes alone gives +-{floor:.1f}% ({term.source}); more "
                               "repeats in one process cannot narrow that: measure in more processes "
                               "(a suite's `processes`) or widen the target")}
    if memory.nvml is not None and (joules := memory.nvml.energy_joules()) is not None:
        # Per repeat actually run: a time budget may run more than `cell.repeats`.
        rec["energy_joules_per_audio_second"] = joules / (audio_seconds * len(outputs))
    output_errors: dict[str, str] = {}
    if cell.profile_dir:
        from dia_bench.harness.worker.profiling import profile_once

        progress("profile")
        trace = Path(cell.profile_dir) / f"trace-{cell.cell_id}.json"
        try:
            rec["profile"] = profile_once(lambda: pipe.run(texts, cell.frames, sampling, cell.seed), device, trace)
        except OSError as exc:  # an optional output: the measurement above stands without it
            output_errors["profile"] = f"{type(exc).__name__}: {exc}"
    rec["plugin_reports"] = {s.spec: s.plugin.report(pipe, s.value) for s in plan.steps}
    if cell.fidelity:
        progress("fidelity")
        try:
            rec["fidelity"] = _fidelity(cell, plan, pipe, weights, texts, last)
        except Exception as exc:  # the timings stand; the cell cannot pass the quality bar unjudged
            from dia_bench.harness.record import exception_reason

            reason, tb = exception_reason(exc)
            rec["fidelity"] = {"compared": False, "error": reason, "traceback": tb}
    audio_path = cell.save_audio
    if not audio_path and cell.audio_dir and not weights["audio_is_noise"]:
        audio_path = str(Path(cell.audio_dir) / f"{cell.cell_id}.wav")  # real weights: worth hearing
    if audio_path:
        try:
            import soundfile

            Path(audio_path).parent.mkdir(parents=True, exist_ok=True)
            soundfile.write(audio_path, last.audio[0].numpy(), SAMPLE_RATE)
            rec["audio_path"] = str(audio_path)
        except (OSError, RuntimeError, TypeError, ValueError) as exc:  # soundfile raises several kinds
            output_errors["audio"] = f"{type(exc).__name__}: {exc}"
    if output_errors:
        rec["output_errors"] = output_errors
    rec["audio_sha256"] = _audio_digest(last.audio)
    return rec


def history_meta(cell: Cell, weights: dict[str, Any]) -> dict[str, Any]:
    """Everything that decides what the reference generates: one history per distinct value."""
    import transformers

    return {
        "preset": cell.preset, "device_type": torch.device(cell.device).type,
        "model_weights": weights["model"]["content_hash"], "codec_weights": weights["codec"]["content_hash"],
        "codec": cell.codec, "text": cell.text, "seed": cell.seed, "frames": cell.frames,
        "sampling": {"cfg_scale": cell.cfg_scale, "temperature": cell.temperature, "top_p": cell.top_p,
                     "top_k": cell.top_k},
        "torch": torch.__version__, "transformers": transformers.__version__,
    }


def _fidelity(cell: Cell, plan: Plan, pipe: DiaPipeline, weights: dict[str, Any], texts: list[str],
              out: PipelineOutput) -> dict[str, Any]:
    from dia_bench.harness.paths import cache_dir
    from dia_bench.harness.worker import fidelity

    directory = Path(cell.fidelity_dir) if cell.fidelity_dir else cache_dir() / "fidelity"
    inputs = pipe.tokenize(texts[:1])
    sampling = sampling_of(cell)

    def create(history_id: str) -> fidelity.History:
        if not plan.steps:  # this cell is the reference: its own pipeline generates the history
            return fidelity.make_history(pipe, inputs, cell.frames, sampling, cell.seed, history_id,
                                         history_meta(cell, weights))
        reference, _ = load_pipeline(Cell(**{**cell.__dict__, "plugins": []}), torch.float32)
        try:
            return fidelity.make_history(reference, reference.tokenize(texts[:1]), cell.frames, sampling, cell.seed,
                                         history_id, history_meta(cell, weights))
        finally:
            del reference

    history, source = fidelity.load_or_create(directory, history_meta(cell, weights), create,
                                              shared=cache_dir() / "fidelity" if cell.fidelity_dir else None)
    made = {"created_by_this_cell": source == "created", "source": source}
    if not plan.steps:
        return {"compared": False, "reason": "this cell is the unoptimized fp32 reference",
                "history": {**history.describe(), **made}}
    result = fidelity.judge(pipe, pipe.generation_kwargs(cell.frames, sampling), inputs, history,
                            out.audio[0], real_weights=not weights["audio_is_noise"])
    result["history"].update(made)
    return result


def _audio_digest(audio: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(audio.contiguous().numpy().tobytes()).hexdigest()
