"""Each plugin proves what it did on the real dia-tiny pipeline, not just that a flag was set."""

from __future__ import annotations

import dataclasses
import importlib
import json
import os
import shutil
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from dia_bench.harness.driver.launcher import run_isolated
from dia_bench.optimizations.registry import CompositionError, all_plugins, get_plugin, resolve
from tests.conftest import requires_cuda, run_cli, tiny_cell

GUIDE_PLUGINS = {"compile", "autocast", "dtype", "sdpa", "tf32", "cudnn-benchmark", "cfg", "int8", "ipex",
                 "channels-last", "threads"}


def run_ok(**kw) -> dict:
    rec = run_isolated(tiny_cell(**kw), timeout_s=600)
    assert rec["status"] == "ok", rec.get("reason")
    return rec


def test_every_guide_technique_is_a_plugin_with_its_contract():
    plugins = all_plugins()
    assert set(plugins) >= GUIDE_PLUGINS
    for p in plugins.values():
        assert p.description and p.expectation.section
        assert p.devices <= {"cpu", "cuda"}


def test_int8_dynamic_replaces_linear_layers_and_stays_close_to_fp32():
    rec = run_ok(plugins=["int8=dynamic"])
    kinds = rec["plugin_reports"]["int8=dynamic"]["linear_kinds"]
    assert not any(k == "torch.nn.modules.linear.Linear" for k in kinds)
    assert kinds["torch.ao.nn.quantized.dynamic.modules.linear.Linear"] > 0
    fid = rec["fidelity"]
    assert fid["compared"] and fid["logits"]["cosine"] > 0.99 and fid["sampled"]["top1_agreement"] > 0.8
    assert fid["logits"]["max_abs_error"] > 0  # int8 really changed the numbers
    assert 0 < fid["sampled"]["total_variation"] < 0.2
    # Fewer bytes per decode step than fp32 weights.
    base = run_ok()
    assert rec["roofline"]["weight_bytes_per_step"] < 0.5 * base["roofline"]["weight_bytes_per_step"]


def test_packed_int8_weights_are_counted_from_their_shapes_exactly(tiny_pipeline):
    """The roofline counts int8 bytes without unpacking fbgemm's layout (seconds on the 1.6B model):
    the count must equal what unpacking every layer finds."""
    import copy

    from dia_bench.harness.worker.roofline import decode_step_weight_bytes
    from dia_bench.optimizations.registry import apply_plan

    pipe, _ = tiny_pipeline
    quantized = copy.copy(pipe)
    quantized.model = copy.deepcopy(pipe.model)
    apply_plan(quantized, resolve(["int8=dynamic"], "cpu"), "cpu")
    dynamic_linear = torch.ao.nn.quantized.dynamic.Linear
    unpacked = 0
    for name, m in quantized.model.model.decoder.named_modules():
        if isinstance(m, dynamic_linear) and not ("cross_attention.k_proj" in name or "cross_attention.v_proj" in name):
            w, b = m._weight_bias()
            unpacked += w.numel() + (b.numel() * 4 if b is not None else 0)
    for name, m in quantized.model.named_modules():
        if isinstance(m, dynamic_linear) and not name.startswith("model."):
            w, b = m._weight_bias()
            unpacked += w.numel() + (b.numel() * 4 if b is not None else 0)
    plain = sum(p.numel() * p.element_size() for n, p in quantized.model.named_parameters()
                if n.startswith("model.decoder.") and "embeddings" not in n)
    assert decode_step_weight_bytes(quantized.model) == unpacked + plain


def test_autocast_runs_the_matmuls_in_the_chosen_dtype(tiny_pipeline):
    from dia_bench.optimizations.registry import apply_plan

    pipe, _ = tiny_pipeline
    seen = []
    layer = pipe.model.model.decoder.layers[0].mlp
    hook = layer.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    saved = list(pipe.generation_contexts)
    try:
        apply_plan(pipe, resolve(["autocast=bf16"], "cpu"), "cpu")
        sampling = importlib.import_module("dia_bench.harness.runtime.pipeline").SamplingParams()
        pipe.run(["[S1] autocast"], 17, sampling, seed=0)
    finally:
        hook.remove()
        pipe.generation_contexts[:] = saved
    assert seen and set(seen) == {torch.bfloat16}
    assert next(pipe.model.parameters()).dtype == torch.float32  # weights untouched


def test_autocast_fidelity_is_measured():
    rec = run_ok(plugins=["autocast=bf16"])
    assert rec["fidelity"]["compared"] and rec["fidelity"]["logits"]["max_abs_error"] > 0


def test_dtype_casts_the_weights():
    rec = run_ok(plugins=["dtype=bf16"])
    assert rec["dtype"] == "bfloat16"
    assert rec["plugin_reports"]["dtype=bf16"]["param_dtypes"] == ["torch.bfloat16"]
    base = run_ok()
    assert rec["roofline"]["weight_bytes_per_step"] == base["roofline"]["weight_bytes_per_step"] // 2


def test_sdpa_flash_runs_the_flash_kernel_on_cpu(tmp_path):
    rec = run_ok(plugins=["sdpa=flash"], profile_dir=str(tmp_path))
    assert any("flash_attention" in op for op in rec["profile"]["all_op_names"])


def test_sdpa_math_runs_no_flash_kernel(tmp_path):
    rec = run_ok(plugins=["sdpa=math"], profile_dir=str(tmp_path))
    assert not any("flash_attention" in op for op in rec["profile"]["all_op_names"])
    assert rec["profile"]["wall_ms"] > 0 and rec["profile"]["device_busy_fraction"] is None  # a GPU's figure


def test_a_backend_the_cpu_lacks_is_refused_before_anything_runs():
    """SDPA's efficient and cuDNN backends have no CPU kernel: forcing one alone would leave no backend."""
    result = run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--opt", "sdpa=efficient")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "sdpa=flash or sdpa=math" in result.stderr.strip().splitlines()[-1]


def test_compile_really_compiles_keeps_compile_time_apart_and_its_cache_outlives_the_run(tmp_path):
    # One test, so that its first run is also the one that fills the cache (a cold compile of dia-tiny
    # is about 45 s of CI: --cold is checked where it chooses the directory, not by a third compile).
    from dia_bench.harness.caches import COLD_ENV, versions_key
    from dia_bench.harness.driver.launcher import inductor_cache_dir

    cell = tiny_cell(plugins=["compile"], warmup=1, repeats=2, fidelity=False)
    rec = run_isolated(cell, timeout_s=600)
    assert rec["status"] == "ok", rec.get("reason")
    report = rec["plugin_reports"]["compile=default"]
    assert report["dynamo_unique_graphs"] >= 1
    assert report["dynamo_frames"].get("ok", 0) >= 1
    assert report["compile_cache"] in ("cold", "warm", "partial")
    # The first call carries the compilation; the timed repeats compile nothing.
    assert rec["graphs_compiled_in_repeats"] == 0 and report["fxgraph_cache_misses"] + report["fxgraph_cache_hits"] > 0
    # Again, warm, and with fidelity: its teacher-forced pass runs through generate, on the graphs the
    # repeats ran, so it compiles nothing new and reads the reference's distributions.
    warm_rec = run_isolated(dataclasses.replace(cell, fidelity=True), timeout_s=600)
    assert warm_rec["status"] == "ok", warm_rec.get("reason")
    fid = warm_rec["fidelity"]
    assert fid["teacher_forced_through"] == "generate" and fid["graphs_compiled"] == 0, fid
    assert fid["sampled"]["total_variation"] < 0.01, fid["sampled"]
    warm = warm_rec["plugin_reports"]["compile=default"]
    assert warm["compile_cache"] == "warm" and versions_key() in warm["compile_cache_dir"]
    assert Path(inductor_cache_dir({}, tmp_path)).resolve() == Path(warm["compile_cache_dir"]).resolve()
    cold = Path(inductor_cache_dir({COLD_ENV: "1"}, tmp_path))
    assert cold.is_dir() and not any(cold.iterdir()) and cold.parent == tmp_path and versions_key() not in str(cold)


def test_codec_compile_compiles_the_decoder_once_for_every_length_and_keeps_its_audio():
    """The decoder compiled in the warmup: the repeats compile nothing, and the fidelity check's decode
    of another length reuses the graph (dynamic frames). Dia is untouched; the codec's audio moves only by
    the order of float sums."""
    rec = run_ok(plugins=["codec-compile"], warmup=1, repeats=2)
    assert rec["plugin_notes"]["codec-compile"].startswith("codec decoder compiled")
    assert rec["plugin_reports"]["codec-compile"] == {"codec_decoder_compiled": True}
    assert rec["graphs_compiled_in_repeats"] == 0
    fid = rec["fidelity"]
    assert fid["logits"]["max_abs_error"] == 0 and fid["sampled"]["total_variation"] == 0
    assert fid["codec_same_codes_identical"] or fid["codec_same_codes_snr_db"] > 80, fid


def test_cfg_zero_drops_the_unconditional_rows():
    guided = run_ok()
    unguided = run_ok(plugins=["cfg=0"])
    assert guided["decoder_batch_rows"] == 2
    assert unguided["decoder_batch_rows"] == 1


def test_cfg_scales_transformers_cannot_run_faithfully_are_refused():
    result = run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--opt", "cfg=1.0")
    assert result.returncode == 2 and "treats 1 as 'off'" in result.stderr


def test_threads_changes_the_worker_only():
    rec = run_ok(plugins=["threads=1"])
    assert rec["plugin_reports"]["threads=1"]["torch_threads"] == 1
    assert torch.get_num_threads() != 1 or torch.get_num_threads() == 1 == rec["env"]["torch_threads"]


@pytest.mark.parametrize("specs, device, needle", [
    (["tf32"], "cpu", "does not apply to cpu"),
    (["cudnn-benchmark"], "cpu", "does not apply to cpu"),
    (["ipex"], "cuda", "does not apply to cuda"),
    (["sdpa=flash"], "cuda", "needs fp16 or bf16"),
    (["sdpa=efficient"], "cpu", "CUDA only; on the CPU choose sdpa=flash or sdpa=math"),
    (["sdpa=cudnn", "dtype=bf16"], "cpu", "CUDA only"),
    (["autocast=fp16", "int8=dynamic"], "cpu", "fp16 autocast cannot feed int8"),
    (["int8=dynamic"], "cuda", "CPU kernels only"),
    (["cfg=3", "cfg=0"], "cpu", "given twice"),
    (["int4", "int8"], "cpu", "conflicts"),
    (["int4=128", "dtype=fp16"], "cpu", "bf16"),
    (["int4"], "cuda", "dtype=bf16"),
    (["int4=8da4w-128"], "cuda", "CPU kernel"),
    (["onednn", "int4"], "cpu", "conflicts"),
    (["onednn", "int8"], "cpu", "conflicts"),
    (["onednn", "compile"], "cpu", "conflicts"),
    (["onednn"], "cuda", "does not apply to cuda"),
    (["onednn", "dtype=fp16"], "cpu", "bf16"),
    (["kv-cache=bf16"], "cpu", "needs the 'engine' plugin"),
    (["kv-cache=bf16", "engine=hf"], "cpu", "add engine=static"),
    (["kv-cache=bf16", "engine=static"], "cuda", "does not apply to cuda"),
])
def test_combinations_that_cannot_work_are_refused(specs, device, needle):
    with pytest.raises(CompositionError, match=needle):
        resolve(specs, device)


def test_flash_on_cuda_with_half_precision_is_accepted():
    assert resolve(["sdpa=flash", "dtype=bf16"], "cuda").specs == ["dtype=bf16", "sdpa=flash"]


def test_the_harness_orders_the_steps_not_the_user():
    plan = resolve(["compile", "threads=1", "int8=dynamic"], "cpu")
    assert plan.specs == ["int8=dynamic", "threads=1", "compile=default"]


def test_refused_combination_on_the_command_line_is_a_usage_error():
    result = run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--opt", "tf32")
    assert result.returncode == 2 and "does not apply to cpu" in result.stderr
    assert "Traceback" not in result.stderr


def test_ipex_is_skipped_with_its_reason_when_it_cannot_run_here():
    reason = resolve(["ipex"], "cpu").unavailable("cpu")
    if not reason:
        pytest.skip("IPEX can run on this machine")
    rec = run_isolated(tiny_cell(plugins=["ipex"]), timeout_s=300)
    assert rec["status"] == "skipped" and "ipex" in rec["reason"]


def test_torchao_missing_is_skipped_not_failed():
    reasons = resolve(["int8=torchao-weight"], "cpu").unavailable("cpu")
    if not reasons:
        rec = run_ok(plugins=["int8=torchao-weight"])
        assert rec["fidelity"]["compared"]
        return
    rec = run_isolated(tiny_cell(plugins=["int8=torchao-weight"]), timeout_s=300)
    assert rec["status"] == "skipped" and "torchao is not installed" in rec["reason"]


def test_plugins_command_lists_availability_with_reasons():
    result = run_cli("plugins", "--device", "cpu", "--json")
    assert result.returncode == 0, result.stderr
    rows = {r["name"]: r for r in json.loads(result.stdout)["plugins"]}
    assert set(rows) >= GUIDE_PLUGINS
    assert rows["tf32"]["available"] is False and "does not apply to cpu" in rows["tf32"]["reason"]
    assert rows["int8"]["guide_speedup"] == [2.0, 4.0]
    human = run_cli("plugins", "--device", "cpu")
    assert human.returncode == 0 and "threads" in human.stdout


def test_a_third_party_plugin_is_found_through_its_entry_point(tmp_path, monkeypatch):
    (tmp_path / "thirdparty_opt.py").write_text(textwrap.dedent("""
        from dia_bench.optimizations.base import Expectation, Plugin

        class Noop(Plugin):
            name = "thirdparty-noop"
            description = "does nothing, from another package"
            expectation = Expectation(section="none")
    """))
    dist = tmp_path / "thirdparty_opt-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-opt\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[dia_bench.optimizations]\nnoop = thirdparty_opt:Noop\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    all_plugins.cache_clear()
    try:
        assert "thirdparty-noop" in all_plugins()
        assert resolve(["thirdparty-noop"], "cpu").specs == ["thirdparty-noop"]
    finally:
        all_plugins.cache_clear()
        sys.modules.pop("thirdparty_opt", None)


@requires_cuda
def test_tf32_sets_and_restores_the_cuda_flags():
    plugin = all_plugins()["tf32"]
    before = torch.backends.cuda.matmul.allow_tf32
    with plugin.context(None, "cuda"):
        assert torch.backends.cuda.matmul.allow_tf32 is True
        assert torch.get_float32_matmul_precision() == "high"
    assert torch.backends.cuda.matmul.allow_tf32 == before


@requires_cuda
def test_cuda_cell_records_vram_and_flash_runs_in_bf16(tmp_path):
    rec = run_ok(device="cuda", plugins=["dtype=bf16", "sdpa=flash"], profile_dir=str(tmp_path))
    assert rec["peak_vram_mb"] > 0 and rec["nvml_peak_used_mb"] > 0
    prof = rec["profile"]
    assert prof["device_kernels"] > 0 and prof["device_busy_ms"] > 0 and 0 < prof["device_busy_fraction"] <= 1.05



@requires_cuda
def test_a_cuda_cell_for_another_gpu_model_is_skipped_by_the_worker_and_the_sweep():
    from dia_bench.harness.driver.expand import _skip_reason

    cell = tiny_cell(device="cuda", gpu_model="NOSUCHGPU", fidelity=False)
    rec = run_isolated(cell, timeout_s=300)
    assert rec["status"] == "skipped" and "asks for a NOSUCHGPU GPU" in rec["reason"], rec["reason"]
    assert "asks for a NOSUCHGPU GPU" in _skip_reason(cell, this_machine=True)
    assert _skip_reason(cell, this_machine=False) is None  # a Ray node's worker decides

def _cache_without_quantized_weights(tmp_path: Path) -> dict[str, str]:
    """The environment of a cache without quantized weights, so that a first run must quantize: the
    session's cache less its quantized entries (its bandwidth and synthetic weights are not what the
    caller tests)."""
    shutil.copytree(os.environ["DIA_BENCH_CACHE"], tmp_path, dirs_exist_ok=True,
                    ignore=lambda folder, names: [n for n in names if n in ("quantized", "inductor", "ray-runs")])
    return {"DIA_BENCH_CACHE": str(tmp_path)}


def test_int8_weights_are_quantized_once_and_a_bad_entry_is_rebuilt(tmp_path):
    from dia_bench.optimizations import _int8_cache

    env = _cache_without_quantized_weights(tmp_path)
    cell = tiny_cell(plugins=["int8=dynamic"], fidelity=False)
    first = run_isolated(cell, timeout_s=300, extra_env=env)
    second = run_isolated(cell, timeout_s=300, extra_env=env)
    assert first["plugin_reports"]["int8=dynamic"]["int8_cache"].startswith("miss")
    assert second["plugin_reports"]["int8=dynamic"]["int8_cache"] == "hit"
    # The same int8 weights: the same seed gives the same audio, sample for sample.
    assert first["audio_sha256"] == second["audio_sha256"]
    entries = list((tmp_path / "quantized").rglob("*.safetensors"))
    expected = _int8_cache.entry_path(first["weights"]["model"]["content_hash"]).name
    assert len(entries) == 1 and entries[0].name == expected
    entries[0].write_bytes(entries[0].read_bytes()[:-100])  # cut short, as by a full disk
    third = run_isolated(cell, timeout_s=300, extra_env=env)
    assert third["status"] == "ok" and third["plugin_reports"]["int8=dynamic"]["int8_cache"].startswith("rebuilt")
    assert third["audio_sha256"] == first["audio_sha256"]


def test_8da4w_weights_are_packed_once_and_a_bad_entry_is_rebuilt(tmp_path):
    from dia_bench.optimizations import _w4a8_cache

    env = _cache_without_quantized_weights(tmp_path)
    cell = tiny_cell(plugins=["int4=8da4w-32"], fidelity=False)
    first = run_isolated(cell, timeout_s=300, extra_env=env)
    second = run_isolated(cell, timeout_s=300, extra_env=env)
    assert first["status"] == second["status"] == "ok", (first.get("reason"), second.get("reason"))
    reports = [r["plugin_reports"]["int4=8da4w-32"] for r in (first, second)]
    assert reports[0]["packed_weights_cache"].startswith("miss") and reports[1]["packed_weights_cache"] == "hit"
    assert reports[0]["layers"] == reports[1]["layers"] and reports[1]["layers"]["quantized"] > 0
    # The same codes, scales and lows: the same seed gives the same audio, sample for sample.
    assert first["audio_sha256"] == second["audio_sha256"]
    entries = list((tmp_path / "quantized").rglob("*8da4w*.safetensors"))
    expected = _w4a8_cache.entry_path(first["weights"]["model"]["content_hash"], 32, "float32").name
    assert [e.name for e in entries] == [expected]
    entries[0].write_bytes(entries[0].read_bytes()[:-100])  # cut short, as by a full disk
    third = run_isolated(cell, timeout_s=300, extra_env=env)
    assert third["status"] == "ok"
    assert third["plugin_reports"]["int4=8da4w-32"]["packed_weights_cache"].startswith("rebuilt")
    assert third["audio_sha256"] == first["audio_sha256"]


def test_an_8da4w_entry_of_another_layout_is_refused_before_the_kernel_reads_it(tmp_path):
    """A buffer of the wrong size would be read past its end by the kernel: the entry is stale instead."""
    from dia_bench.optimizations import _w4a8_cache

    path = tmp_path / "entry.safetensors"
    codes, scales, lows = torch.zeros(64 * 256 // 2, dtype=torch.uint8), *torch.zeros(2, 1, 8, 64).half()
    _w4a8_cache.save({"a": (256, 64, codes, scales, lows, None)}, path)
    assert set(_w4a8_cache.load(path, {"a": (256, 64, False)}, 32)) == {"a"}
    with pytest.raises(_w4a8_cache.StaleEntry, match="layout"):
        _w4a8_cache.load(path, {"a": (256, 64, False)}, 64)  # 4 groups a row, not 8
    with pytest.raises(_w4a8_cache.StaleEntry, match="do not match"):
        _w4a8_cache.load(path, {"a": (256, 128, False)}, 32)


def test_a_bare_int4_runs_the_fastest_variant_this_machine_runs():
    """dia-bench's 8da4w kernel where it builds here, torch's weight-only int4 otherwise; torchao's on CUDA.
    A value given is kept as given."""
    int4 = get_plugin("int4")
    builds = int4.availability("8da4w-128", "cpu") is None
    assert resolve(["int4"], "cpu").specs == ["int4=8da4w-128" if builds else "int4=128"]
    assert resolve(["int4", "dtype=bf16"], "cuda").specs == ["dtype=bf16", "int4=128"]
    assert resolve(["int4=64"], "cpu").specs == ["int4=64"]
    assert int4.parse(None) == "128"  # no device named: the class default
    assert get_plugin("dtype").value_on(None, "cpu") == get_plugin("dtype").default


def test_codec_chunks_decode_a_request_a_chunk_at_a_time_to_the_same_audio_up_to_rounding(tiny_pipeline):
    """Each chunk carries the decoder's receptive field as context, so the chunks end to end are the whole
    decode's waveform; a chunk no shorter than the request decodes it in one pass."""
    from dia_bench.harness.runtime.codec import decode_in_chunks, decoder_context_frames

    pipe, _ = tiny_pipeline
    torch.manual_seed(0)
    codes = torch.randint(0, 1024, (2, 9, 50))
    whole = pipe.decode_audio(codes)
    calls = []

    def decode(c: torch.Tensor) -> torch.Tensor:
        calls.append(c.shape[-1])
        return pipe.codec.decode(c)

    context = decoder_context_frames(pipe.codec)
    with torch.inference_mode():
        chunked = decode_in_chunks(decode, codes, 16, context).float()
        assert decode_in_chunks(decode, codes, 50, context).shape == whole.shape and calls[-1] == 50
    # 50 frames = 16 + 16 + 16 + 2, each with context on either side where there are frames to take it from
    assert calls[:4] == [16 + context, 16 + 2 * context, 50 - (32 - context), 2 + context]
    assert chunked.shape == whole.shape
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
    # With too little context the chunks' edges drift further: the receptive field is what makes them agree.
    with torch.inference_mode():
        short = decode_in_chunks(pipe.codec.decode, codes, 16, 1).float()
    assert (short - whole).abs().max() > (chunked - whole).abs().max()


def test_the_codec_chunks_plugin_decodes_in_chunks_and_keeps_the_codecs_audio():
    rec = run_ok(plugins=["codec-chunks=8"])
    assert rec["plugin_reports"]["codec-chunks=8"] == {"codec_chunk_frames": 8, "codec_context_frames": 10}
    assert rec["plugin_notes"]["codec-chunks=8"].startswith("codec decodes 8 frames")
    fid = rec["fidelity"]
    assert fid["codec_same_codes_identical"] or fid["codec_same_codes_snr_db"] > 80, fid
    with pytest.raises(ValueError, match="at least 1 frame"):
        get_plugin("codec-chunks").parse("0")


def test_a_bare_codec_dtype_keeps_the_codec_in_fp32_on_a_cpu_without_bf16_instructions(tiny_pipeline):
    """Emulated bf16 convolutions are far slower than fp32 (70x on an AVX2-only Zen 3): a bare codec-dtype
    casts to bf16 only where the CPU has AVX-512 bf16 or AMX, and on CUDA; its fp32 casts nothing."""
    from dia_bench.harness.env import cpu_info

    features = cpu_info()["features"]
    native = features["avx512_bf16"] or features["amx_bf16"]
    assert resolve(["codec-dtype"], "cpu").specs == ["codec-dtype=bf16" if native else "codec-dtype=fp32"]
    assert resolve(["codec-dtype"], "cuda").specs == ["codec-dtype=bf16"]
    assert resolve(["codec-dtype=bf16"], "cpu").specs == ["codec-dtype=bf16"]  # a value given is kept
    pipe, _ = tiny_pipeline
    note = get_plugin("codec-dtype").transform(pipe, "fp32")
    assert {p.dtype for p in pipe.codec.model.parameters()} == {torch.float32} and "float32" in note
