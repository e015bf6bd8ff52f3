"""The guide's API, for people's own code: one call from a transformers Dia model to a fast generate.

    from transformers import DacModel, DiaForConditionalGeneration
    from dia_bench.harness.api import create_cpu_generate, optimize_for_cpu

    optimize_for_cpu()                      # threads = physical cores
    model = DiaForConditionalGeneration.from_pretrained("nari-labs/Dia-1.6B-0626")
    codec = DacModel.from_pretrained("descript/dac_44khz")
    generate = create_cpu_generate(model, codec, quantize=True, use_compile=True)
    audio = generate("[S1] Hello world!", seconds=2.0)   # float32 numpy array at 44.1 kHz
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from dia_bench.optimizations.registry import apply_plan, resolve

# engine=static by default: the same codes as transformers' generate (tests/test_static_engine.py) and
# the faster loop wherever dia-bench measured both (docs/static-engine.md; suites/engine-cpu.toml).
GPU_DEFAULT = ["dtype=bf16", "sdpa=flash", "engine=static", "compile"]


def check_cpu_features() -> dict[str, Any]:
    """What this CPU offers the guide's CPU techniques (bf16, VNNI, AMX, oneDNN)."""
    import torch

    from dia_bench.harness.env import cpu_info

    info = cpu_info()
    return {
        "model": info["model"],
        "physical_cores": info["physical_cores"],
        "logical_cores": info["logical_cores"],
        **info["features"],
        "mkldnn_available": torch.backends.mkldnn.is_available(),
        "mkldnn_enabled": bool(torch.backends.mkldnn.enabled),
        "torch_threads": torch.get_num_threads(),
    }


def optimize_for_cpu(num_threads: int | None = None) -> int:
    """The guide's thread set-up: physical cores (or `num_threads`) for torch, OMP and MKL."""
    from dia_bench.optimizations.threads import PLUGIN as Threads

    plugin = Threads()
    n = plugin.parse(str(num_threads) if num_threads else None)
    os.environ.update(plugin.process_env(n))
    plugin.configure_torch(n)
    return n


def create_fast_generate(model, codec=None, plugins: list[str] | None = None, device: str | None = None,
                         seed: int | None = None) -> Callable[..., Any]:
    """A generate function over a transformers `DiaForConditionalGeneration` with plugins applied.

    `codec` is a transformers `DacModel` (without one the function returns codes, not audio).
    The plugin list defaults to bf16 + flash attention + dia-bench's decode loop + compile on CUDA.
    """
    import torch
    from transformers import DiaFeatureExtractor, DiaProcessor, DiaTokenizer

    from dia_bench.harness.presets import frames_for_seconds
    from dia_bench.harness.runtime.codec import TransformersDac
    from dia_bench.harness.runtime.pipeline import DiaPipeline, SamplingParams

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    plan = resolve(plugins if plugins is not None else GPU_DEFAULT, device)
    reasons = plan.unavailable(device)
    if reasons:
        raise RuntimeError("cannot apply these optimizations here: " + "; ".join(reasons))
    dtype = plan.load_dtype()
    model = model.eval().to(device)
    if dtype is not None:
        model = model.to(dtype)
    codec_adapter = TransformersDac(codec.to(device)) if codec is not None else None
    processor = DiaProcessor(DiaFeatureExtractor(sampling_rate=44100, hop_length=512), DiaTokenizer(), None)
    pipe = DiaPipeline(model, processor, codec_adapter, device)
    apply_plan(pipe, plan, device)

    def generate(text: str | list[str], seconds: float = 5.0, sampling: SamplingParams | None = None):
        texts = [text] if isinstance(text, str) else list(text)
        frames = frames_for_seconds(seconds)
        if codec_adapter is None:
            return pipe.undelay(pipe.generate(pipe.tokenize(texts), frames, sampling or SamplingParams(),
                                              seed if seed is not None else int(time.time())))
        out = pipe.run(texts, frames, sampling or SamplingParams(), seed if seed is not None else int(time.time()))
        audio = out.audio.numpy()
        return audio[0] if isinstance(text, str) else audio

    generate.pipeline = pipe  # type: ignore[attr-defined]
    generate.plugins = plan.specs  # type: ignore[attr-defined]
    return generate


def create_cpu_generate(model, codec=None, quantize: bool = True, use_compile: bool = True,
                        plugins: list[str] | None = None, seed: int | None = None,
                        engine: str = "static") -> Callable[..., Any]:
    """The guide's CPU recipe: int8 dynamic quantization and torch.compile, plus any extra plugins,
    through dia-bench's decode loop (`engine="hf"` for transformers' generate)."""
    chosen = list(plugins or [])
    if not any(p.partition("=")[0].strip() == "engine" for p in chosen):
        chosen.append(f"engine={engine}")
    if quantize:
        chosen.append("int8=dynamic")
    if use_compile:
        chosen.append("compile")
    return create_fast_generate(model, codec, plugins=chosen, device="cpu", seed=seed)
