"""Measures one cell inside the worker: load, transform, warm up, repeat, then the trackers."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from harness import stats
from harness.cell import Cell
from harness.codec import load_codec
from harness.pipeline import DiaPipeline, PipelineOutput, SamplingParams
from harness.presets import SAMPLE_RATE, get_preset
from harness.record import now
from harness.roofline import roofline
from harness.trackers import MemoryTracker, rss_mb
from harness.weights import resolve as resolve_weights
from optimizations.api import apply_plan
from optimizations.registry import Plan

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


def measure_pipeline(cell: Cell, plan: Plan, progress: Callable[..., None],
                     fault_hook: Callable[[], None]) -> dict[str, Any]:
    device = torch.device(cell.device)
    load_dtype = plan.load_dtype() or torch.float32

    progress("loading", preset=cell.preset)
    t0 = time.perf_counter()
    pipe, weights = load_pipeline(cell, load_dtype)
    load_s = time.perf_counter() - t0
    rss_after_load = rss_mb()

    progress("transform", plugins=plan.specs)
    notes, transform_s = apply_plan(pipe, plan, cell.device)

    texts = [cell.text] * cell.batch
    sampling = sampling_of(cell)
    fault_hook()

    warmup_s = []
    for i in range(cell.warmup):
        progress("warmup", i=i + 1, n=cell.warmup)
        warmup_s.append(pipe.run(texts, cell.frames, sampling, cell.seed).times.generate_s)

    outputs: list[PipelineOutput] = []
    measured_from = now()
    with MemoryTracker(device) as mem:
        started = time.perf_counter()
        while len(outputs) < cell.repeats or (
                cell.time_budget_s and time.perf_counter() - started < cell.time_budget_s
                and len(outputs) < MAX_REPEATS):
            progress("repeat", i=len(outputs) + 1, n=cell.repeats)
            outputs.append(pipe.run(texts, cell.frames, sampling, cell.seed))
    measured_until = now()

    audio_seconds = cell.frames * cell.batch / (SAMPLE_RATE / 512)
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
        "repeats_seconds": gen,
        # When the measured repeats ran: speedups compare against the baseline interpolated to here.
        "measured_from": measured_from,
        "measured_until": measured_until,
        "end_to_end_repeats_seconds": e2e,
        "generation_seconds": generation_s,
        "generation_iqr_seconds": stats.iqr(gen),
        "end_to_end_seconds": stats.median(e2e),
        "audio_seconds": audio_seconds,
        "audio_seconds_per_request": cell.frames / (SAMPLE_RATE / 512),
        "samples": int(last.audio.shape[-1]),
        "sample_rate": SAMPLE_RATE,
        "rtf": generation_s / audio_seconds,
        "xrt": audio_seconds / generation_s,
        "rtf_end_to_end": stats.median(e2e) / audio_seconds,
        "xrt_end_to_end": audio_seconds / stats.median(e2e),
        "decode_steps_per_second": (len(last.times.step_latencies_s) / stages["decode_s"]
                                    if stages["decode_s"] else None),
        "decode_frames_per_second": (cell.batch * len(last.times.step_latencies_s) / stages["decode_s"]
                                     if stages["decode_s"] else None),
        "decoder_batch_rows": last.generation_batch_rows,
        "stages": stages,
        "step_latencies_ms": [round(s * 1000, 4) for o in outputs for s in o.times.step_latencies_s],
        "rss_after_load_mb": round(rss_after_load, 1),
        **mem.result(),
        "roofline": roofline(pipe.model, device, step_p50 / 1000 if step_p50 else None),
        "codec": cell.codec,
    }
    if mem.nvml is not None and (joules := mem.nvml.energy_joules()) is not None:
        rec["energy_joules_per_audio_second"] = joules / (audio_seconds * cell.repeats)
    if cell.profile_dir:
        from harness.profiling import profile_once

        progress("profile")
        trace = Path(cell.profile_dir) / f"trace-{cell.cell_id}.json"
        rec["profile"] = profile_once(lambda: pipe.run(texts, cell.frames, sampling, cell.seed), device, trace)
    rec["plugin_reports"] = {s.spec: s.plugin.report(pipe, s.value) for s in plan.steps}
    if cell.fidelity:
        progress("fidelity")
        rec["fidelity"] = _fidelity(cell, plan, pipe, weights, texts, last)
    audio_path = cell.save_audio
    if not audio_path and cell.audio_dir and not weights["audio_is_noise"]:
        audio_path = str(Path(cell.audio_dir) / f"{cell.cell_id}.wav")  # real weights: worth hearing
    if audio_path:
        import soundfile

        Path(audio_path).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(audio_path, last.audio[0].numpy(), SAMPLE_RATE)
        rec["audio_path"] = str(audio_path)
    rec["audio_sha256"] = _audio_digest(last.audio)
    return rec


def _fidelity(cell: Cell, plan: Plan, pipe: DiaPipeline, weights: dict[str, Any], texts: list[str],
              out: PipelineOutput) -> dict[str, Any]:
    if not plan.steps:
        return {"compared": False, "reason": "this cell is the unoptimized fp32 reference"}
    from transformers import DiaForConditionalGeneration

    from harness import fidelity

    reference = DiaForConditionalGeneration.from_pretrained(weights["model"]["path"], dtype=torch.float32)
    reference = reference.eval().to(pipe.device)
    result = fidelity.measure(pipe, reference, pipe.codec, pipe.tokenize(texts[:1]), out.delayed, out.codes)
    del reference
    return {"compared": True, "reference": "fp32, no plugins, same weights", **result}


def _audio_digest(audio: torch.Tensor) -> str:
    import hashlib

    return hashlib.sha256(audio.contiguous().numpy().tobytes()).hexdigest()
