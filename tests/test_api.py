"""The guide's API on a transformers Dia model: one call to a fast generate function."""

from __future__ import annotations

import torch

from dia_bench.harness.api import check_cpu_features, create_cpu_generate, create_fast_generate, optimize_for_cpu


def _fresh_models():
    from transformers import DacModel, DiaForConditionalGeneration

    from dia_bench.harness.presets import get_preset

    preset = get_preset("dia-tiny")
    torch.manual_seed(0)
    return DiaForConditionalGeneration(preset.dia_config()), DacModel(preset.dac_config())


def test_check_cpu_features_reports_what_the_cpu_techniques_need():
    features = check_cpu_features()
    assert features["physical_cores"] >= 1
    assert {"avx2", "avx512_bf16", "avx512_vnni", "amx_int8", "mkldnn_available"} <= set(features)


def test_optimize_for_cpu_sets_threads_and_the_environment():
    import os

    before = torch.get_num_threads()
    try:
        assert optimize_for_cpu(1) == 1
        assert torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    finally:
        torch.set_num_threads(before)
        os.environ.pop("OMP_NUM_THREADS", None)
        os.environ.pop("MKL_NUM_THREADS", None)


def test_create_cpu_generate_quantizes_and_returns_audio():
    model, codec = _fresh_models()
    generate = create_cpu_generate(model, codec, quantize=True, use_compile=False, seed=0)
    assert generate.plugins == ["int8=dynamic", "engine=static"]  # in the order they are applied
    assert generate.pipeline.engine is not None
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    audio = generate("[S1] Hello world!", seconds=0.2)
    assert audio.shape == (round(0.2 * 44100 / 512) * 512,) and audio.dtype == "float32"


def test_create_fast_generate_takes_any_plugin_list():
    model, codec = _fresh_models()
    generate = create_fast_generate(model, codec, plugins=["dtype=bf16", "cfg=0"], device="cpu", seed=1)
    assert next(model.parameters()).dtype == torch.bfloat16
    a = generate(["[S1] one", "[S2] two"], seconds=0.1)
    assert a.shape[0] == 2
    assert generate.pipeline.decoder_rows == 2  # cfg=0: one row per request, not two
    assert generate.pipeline.engine is None  # a list given is taken as it is


def test_create_cpu_generate_can_keep_transformers_generate():
    model, codec = _fresh_models()
    generate = create_cpu_generate(model, codec, quantize=False, use_compile=False, seed=0, engine="hf")
    assert generate.plugins == ["engine=hf"] and generate.pipeline.engine is None
