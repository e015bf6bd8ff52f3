"""`engine=static` against transformers' `generate`: the same codes, the same logits, the same
distributions, and the other plugins composed with it. The real tiny pipeline; dia-1.6b synthetic
where marked `slow` (`pytest -m slow`, or `nox -s tests-slow`)."""

from __future__ import annotations

import pytest
import torch

from dia_bench.harness.driver.launcher import run_isolated
from dia_bench.harness.runtime.pipeline import SamplingParams, StepClock
from dia_bench.harness.runtime.static_engine import StaticEngine, forced_tokens
from tests.conftest import cli, requires_cuda, run_cli, tiny_cell

TEXTS = ["[S1] Dia is an open weights text to dialogue model.",
         "[S1] Hi. [S2] Hello.",
         "[S1] A third request, longer than the second and shorter than nothing else at all, to pad the batch."]
# Greedy is do_sample=False with Dia's CFG top-k of 45 kept. top_k=1 is not greedy enough: where the
# guided top token is a special one (synthetic dia-1.6b weights do that), EOS suppression and Dia's
# EOS filter mask the only candidate and transformers' own generate fails on NaN probabilities.
GREEDY = SamplingParams()
NO_CFG = SamplingParams(cfg_scale=1.0)  # transformers' "guidance off"


def _both(pipe, texts: list[str], frames: int, sampling: SamplingParams, seed: int = 0, greedy: bool = True,
          engine: StaticEngine | None = None):
    inputs = pipe.tokenize(texts)
    pipe.engine = None
    if greedy:
        pipe.generate_kwargs["do_sample"] = False  # the hook plugins use to change generate's arguments
    try:
        reference = pipe.generate(inputs, frames, sampling, seed)
        pipe.engine = engine or StaticEngine(pipe)
        clock = StepClock()
        ours = pipe.generate(inputs, frames, sampling, seed, clock)
    finally:
        pipe.engine = None
        pipe.generate_kwargs.pop("do_sample", None)
    return reference, ours, clock


CASES = [pytest.param(s, n, id=f"{'cfg' if s.cfg_scale != 1 else 'no-cfg'}-batch{n}")
         for s in (GREEDY, NO_CFG) for n in (1, 3)]


@pytest.mark.parametrize(("sampling", "batch"), CASES)
def test_greedy_codes_equal_generates_on_dia_tiny(tiny_pipeline, sampling, batch):
    pipe, _ = tiny_pipeline
    reference, ours, clock = _both(pipe, TEXTS[:batch], 30, sampling)
    assert ours.shape == reference.shape == (batch, 30 + 16 + 1, 9)
    assert torch.equal(ours, reference)
    # One stamp after the encoder, one per step: the pipeline's step latencies come from them.
    assert len(clock.stamps) == 30 + 16 + 1


@pytest.mark.parametrize("loop", ["generate", "engine"])
def test_a_request_cut_short_runs_the_first_steps_of_the_whole_one(tiny_pipeline, loop):
    """What a short warmup runs (DiaPipeline.warm): the same steps as a whole request, stopped early."""
    pipe, _ = tiny_pipeline
    inputs = pipe.tokenize(TEXTS[:2])
    pipe.engine = StaticEngine(pipe) if loop == "engine" else None
    try:
        whole = pipe.generate(inputs, 10, SamplingParams(), 7)
        clock = StepClock()
        cut = pipe.generate(inputs, 10, SamplingParams(), 7, clock, max_steps=4)
        assert pipe.warm(TEXTS[:2], 4, SamplingParams(), 7) > 0
    finally:
        pipe.engine = None
    assert whole.shape == (2, 10 + 16 + 1, 9) and cut.shape == (2, 4 + 1, 9)
    assert torch.equal(cut, whole[:, :5])
    assert len(clock.stamps) == 4 + 1


def test_q_k_and_v_joined_in_one_gemm_give_generates_codes_and_hold_the_weights_once(tiny_pipeline):
    """The CUDA default, run here on the CPU: dia-tiny's codes do not move when q, k and v become one GEMM."""
    pipe, _ = tiny_pipeline
    engine = StaticEngine(pipe, fuse_qkv=True)
    reference, ours, _ = _both(pipe, TEXTS, 30, GREEDY, engine=engine)
    assert torch.equal(ours, reference)
    sa = pipe.model.model.decoder.layers[0].self_attention
    assert engine.qkv[0].shape[0] == sa.q_proj.out_features + sa.k_proj.out_features + sa.v_proj.out_features
    assert sa.v_proj.weight.untyped_storage().data_ptr() == engine.qkv[0].untyped_storage().data_ptr()
    assert StaticEngine(pipe).qkv is None  # not on a CPU unless asked


def test_the_step_attends_through_the_cpu_kernel_unless_a_backend_is_forced(tiny_pipeline):
    """On the CPU the step's attention is dia-bench's kernel where it builds; a backend the sdpa plugin
    forces is honoured, and the step then attends through SDPA."""
    from dia_bench.harness.kernels import decode_attention

    pipe, _ = tiny_pipeline
    engine = StaticEngine(pipe)
    built = decode_attention.unavailable() is None
    assert engine.describe()["attention"] == ("cpu-kernel" if built else "cpu-matmul")
    assert StaticEngine(pipe, attention_kernel=False).attention() == "cpu-matmul"
    pipe.sdpa_backend = "math"
    try:
        assert engine.attention() == "sdpa"
    finally:
        pipe.sdpa_backend = None


def test_a_bf16_cache_is_read_by_the_kernel_and_moves_the_logits_by_its_rounding_only(tiny_pipeline):
    """kv-cache=bf16: both caches are held in bf16, the CPU kernel reads them itself (no widened copy), and
    the teacher-forced logits stay within bf16's rounding of the fp32 cache's; the matmul path, and SDPA
    where the sdpa plugin forces a backend, widen them (the mask stays in the activations' dtype)."""
    pipe, _ = tiny_pipeline
    inputs = pipe.tokenize(TEXTS[:1])
    kwargs = pipe.generation_kwargs(12, GREEDY)
    reference, _, _ = _both(pipe, TEXTS[:1], 12, GREEDY)
    results = {}
    for name, dtype, kernel, backend in (("fp32", None, True, None), ("bf16", torch.bfloat16, True, None),
                                         ("bf16-matmul", torch.bfloat16, False, None),
                                         ("bf16-sdpa", torch.bfloat16, True, "math")):
        engine = StaticEngine(pipe, attention_kernel=kernel)
        engine.cache_dtype = dtype
        pipe.sdpa_backend = backend
        try:
            with torch.inference_mode():
                results[name] = engine.teacher_forced_logits(inputs, reference[:1], kwargs)
                req = engine.prepare(inputs, 4, 1, cfg=True)
        finally:
            pipe.sdpa_backend = None
        assert req.cross_mask.dtype == torch.float32
        if dtype is not None:
            assert req.keys[0].dtype == req.cross_keys[0].dtype == torch.bfloat16
            assert engine.describe()["cache_dtype"] == "bfloat16"
    assert not torch.equal(results["bf16"], results["fp32"])  # the cache really is rounded
    torch.testing.assert_close(results["bf16"], results["fp32"], rtol=0.05, atol=0.05)
    torch.testing.assert_close(results["bf16-matmul"], results["bf16"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(results["bf16-sdpa"], results["bf16"], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("cache_dtype", [None, torch.bfloat16], ids=["fp32-cache", "bf16-cache"])
def test_the_roofline_counts_the_attention_caches_the_engine_allocated(tiny_pipeline, cache_dtype):
    """The floor's cache bytes, from the config, equal what the engine's own caches hold: all the
    cross-attention keys and values, and the self-attention positions each timed step attends to."""
    from dia_bench.harness.worker.roofline import attention_cache_bytes, roofline

    pipe, _ = tiny_pipeline
    engine = StaticEngine(pipe)
    engine.cache_dtype = cache_dtype
    pipe.engine = engine
    try:
        out = pipe.run(TEXTS[:2], 10, GREEDY, 0)
    finally:
        pipe.engine = None
    buffers = engine._buffers
    layers = len(pipe.model.model.decoder.layers)
    cross = sum(buffers[(name, i)].nbytes for name in ("cross_k", "cross_v") for i in range(layers))
    self_cache = [buffers[(name, i)] for name in ("k", "v") for i in range(layers)]
    allocated = self_cache[0].shape[2]  # positions: one per step
    timed = out.times.step_latencies_s
    assert len(timed) == allocated - 1 and out.cache_dtype == self_cache[0].dtype
    attended = sum(j + 1 for j in range(1, allocated)) / len(timed)
    expected = cross + sum(t.nbytes for t in self_cache) / allocated * attended
    counted = attention_cache_bytes(pipe.model, out.generation_batch_rows, out.text_positions, len(timed),
                                    out.cache_dtype)
    assert counted == pytest.approx(expected, abs=1)
    roof = roofline(pipe.model, torch.device("cpu"), 0.01, counted)
    assert roof["bytes_per_step"] == roof["weight_bytes_per_step"] + counted
    assert roof["fraction_of_bandwidth"] > roof["weights_fraction_of_bandwidth"]


@pytest.mark.slow
@pytest.mark.parametrize(("sampling", "batch"), CASES)
def test_greedy_codes_equal_generates_on_dia_1_6b(sampling, batch):
    pipe, weights = _big_pipeline()
    reference, ours, _ = _both(pipe, TEXTS[:batch], 30 - 16, sampling)  # 30 decode steps
    assert weights["source"] in ("synthetic", "local") and torch.equal(ours, reference)


_BIG: list = []


def _big_pipeline():
    from dia_bench.harness.worker.measure import load_pipeline

    if not _BIG:
        _BIG.append(load_pipeline(tiny_cell(preset="dia-1.6b")))
    return _BIG[0]


def test_sampled_codes_equal_generates_too(tiny_pipeline):
    """Not asked of it, and worth knowing: with Dia's own sampling (top-k 45, top-p 0.9, temperature
    1.8) the device-side draw consumes the generator exactly as `generate`'s multinomial does."""
    pipe, _ = tiny_pipeline
    reference, ours, _ = _both(pipe, TEXTS[:2], 20, SamplingParams(), seed=7, greedy=False)
    assert torch.equal(ours, reference)


def test_the_forced_tokens_are_the_delay_pattern():
    table = forced_tokens(4, [0, 2], torch.device("cpu"))
    # Channel 0: 4 samples, EOS, PAD; channel 1 (delay 2): 2 BOS, 4 samples, EOS at step 7.
    assert table.T.tolist() == [[-1, -1, -1, -1, 1024, 1025, 1025], [1026, 1026, -1, -1, -1, -1, 1024]]


def test_teacher_forced_step_logits_equal_one_forward_pass(tiny_pipeline):
    from dia_bench.harness.worker.fidelity import teacher_forced_logits

    pipe, _ = tiny_pipeline
    inputs = pipe.tokenize(TEXTS[:1])
    delayed, _, _ = _both(pipe, TEXTS[:1], 20, SamplingParams(), greedy=False)
    with torch.inference_mode():
        expected = teacher_forced_logits(pipe.model, inputs, delayed, cfg=True)
        ours = StaticEngine(pipe).teacher_forced_logits(inputs, delayed, pipe.generation_kwargs(20, SamplingParams()))
    assert ours.shape == expected.shape
    torch.testing.assert_close(ours, expected, rtol=1e-5, atol=1e-5)


def test_a_compiled_engine_skipping_guards_after_each_first_step_keeps_requests_of_other_lengths_apart():
    """After a request's first step the compiled loop runs only the guards that tell compiled steps apart.
    Requests of two lengths taking turns (two compiled steps, cache shapes apart) must each get their own:
    a length's codes are the same whenever it comes, and equal those of an engine that only ever
    compiled that length (a step compiled for the other cache would attend to the wrong positions)."""
    from dia_bench.harness.worker.measure import load_pipeline

    pipe, _ = load_pipeline(tiny_cell())
    inputs = pipe.tokenize(TEXTS[:1])

    def generate(engine: StaticEngine, frames: int) -> torch.Tensor:
        pipe.engine = engine
        try:
            with torch.inference_mode():
                return engine.generate(inputs, frames, {**pipe.generation_kwargs(frames, GREEDY), "do_sample": False})
        finally:
            pipe.engine = None

    taking_turns, alone = StaticEngine(pipe), StaticEngine(pipe)
    taking_turns.compile("default")
    alone.compile("default")
    runs = [generate(taking_turns, frames) for frames in (6, 14, 6, 14)]
    assert runs[0].shape[1] != runs[1].shape[1]
    assert torch.equal(runs[0], runs[2]) and torch.equal(runs[1], runs[3])
    assert torch.equal(generate(alone, 14), runs[1])


def test_the_engines_processors_equal_transformers_at_every_step(tiny_pipeline):
    """The distribution each token is drawn from, through the engine's chain and through the processors
    `generate` builds (fidelity's own reading of them), teacher-forced on one history."""
    from dia_bench.harness.worker.fidelity import engine_distributions, sampled_distributions, teacher_forced_logits

    pipe, _ = tiny_pipeline
    inputs = pipe.tokenize(TEXTS[:1])
    sampling = SamplingParams()
    kwargs = pipe.generation_kwargs(20, sampling)
    delayed, _, _ = _both(pipe, TEXTS[:1], 20, sampling, greedy=False)
    with torch.inference_mode():
        logits = teacher_forced_logits(pipe.model, inputs, delayed, cfg=True)
        theirs = sampled_distributions(pipe.model, kwargs, inputs, delayed, logits)
        ours = engine_distributions(kwargs, logits, 9)
    real = (delayed[0, 1:, :] < 1024).T  # the forced tail is the loop's, not the processors'
    torch.testing.assert_close(ours[real], theirs[real], rtol=0, atol=1e-6)


def test_the_eos_channel_filter_equals_transformers_where_eos_leads_and_where_it_does_not():
    """The engine's EOS channel filter (one mask, which inductor compiles on every torch dia-bench meets)
    against transformers' processor (writes into slices): the same values, -inf included, on rows where EOS
    is channel 0's top logit, rows where it is not, and rows already partly -inf."""
    from transformers.generation.logits_process import DiaEOSChannelFilterLogitsProcessor

    from dia_bench.harness.runtime.static_engine import _eos_channel_filter

    theirs = DiaEOSChannelFilterLogitsProcessor(num_channels=9, eos_token_id=1024)
    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(4 * 9, 1028, generator=generator)
    scores[::2, 1024] += 6  # EOS on top in half the rows, every channel
    scores[3, :512] = float("-inf")
    expected = theirs(None, scores.clone())
    assert expected[0, 1024] > float("-inf") and expected[9, 1024] == float("-inf")  # both kinds of row occur
    assert torch.equal(_eos_channel_filter(scores, channels=9), expected)


def test_the_engines_sampling_compiles_to_the_same_tokens_as_eager():
    """CFG with Dia's guided top-k, temperature, the EOS filter, top-k and top-p, greedy: compiled with
    inductor as the engine compiles its step, the tokens eager draws."""
    from dia_bench.harness.runtime.static_engine import Sampling

    sampling = Sampling(guidance_scale=3.0, temperature=1.8, top_k=45, top_p=0.9, do_sample=False,
                        suppress_eos=True)

    def tokens(logits: torch.Tensor) -> torch.Tensor:
        return StaticEngine.draw(StaticEngine.scores(logits, sampling), sampling)

    logits = torch.randn(2, 9, 1028, generator=torch.Generator().manual_seed(0))
    logits[0, 0, 1024] += 8  # one row ends: EOS leads channel 0
    torch._dynamo.reset()
    assert torch.equal(torch.compile(tokens, dynamic=False)(logits), tokens(logits))


def test_a_static_cell_is_identical_to_the_reference(tmp_path):
    fid = str(tmp_path / "fidelity")
    ref = run_isolated(tiny_cell(fidelity_dir=fid, repeats=1), timeout_s=600)
    rec = run_isolated(tiny_cell(plugins=["engine=static"], fidelity_dir=fid, repeats=2), timeout_s=600)
    assert ref["status"] == rec["status"] == "ok", rec.get("reason")
    assert rec["fidelity"]["sampled"]["total_variation_max"] < 1e-5
    assert rec["fidelity"]["sampled"]["top1_agreement"] == 1.0
    assert rec["audio_sha256"] == ref["audio_sha256"]  # the same seed draws the same codes
    assert rec["plugin_reports"]["engine=static"]["engine"] == "static"
    assert rec["decoder_batch_rows"] == 2 and len(rec["step_latencies_ms"]) == 2 * (rec["frames"] + 15)


def test_compile_compiles_the_engines_step_and_fidelity_judges_that_step(tmp_path):
    rec = run_isolated(tiny_cell(plugins=["engine=static", "compile"], warmup=1, repeats=1), timeout_s=900)
    assert rec["status"] == "ok", rec.get("reason")
    assert "decode step compiled" in rec["plugin_notes"]["compile=default"]
    assert rec["plugin_reports"]["engine=static"]["compiled_step"] == "default"
    assert rec["plugin_defaults"] == {"compile": "compile=default"}  # the record says what a bare spec ran
    assert rec["plugin_reports"]["compile=default"]["dynamo_unique_graphs"] >= 1
    # The teacher-forced pass feeds the reference's history (read from disk) to the step the repeats ran:
    # nothing compiled again, and fp32 keeps the reference's distributions.
    fid = rec["fidelity"]
    assert fid["teacher_forced_through"] == "engine" and fid["graphs_compiled"] == 0, fid
    assert fid["sampled"]["total_variation"] < 0.01, fid["sampled"]


def test_engine_values_are_checked():
    result = run_cli("run", "--preset", "dia-tiny", "--opt", "engine=fast")
    assert result.returncode == 2 and "choose one of hf, static" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_batch_of_mixed_lengths_sweeps_and_the_report_gives_throughput_per_batch_size(tmp_path):
    from dia_bench.harness import rundir
    from dia_bench.harness.analysis import results
    from tests.test_sweep import write_suite

    suite = write_suite(tmp_path, """
[suite]
description = "mixed-length batches through the static engine"
presets = ["dia-tiny"]
devices = ["cpu"]
texts = ["mixed"]
seconds = [0.2]
batch = [3]
warmup = 0
repeats = 2
fidelity = false
design = "explicit"
# The baseline at batch 3 only (first and last), the engine at 1 and 3: four workers, not six.
cells = [{ plugins = ["engine=static"], batch = [1, 3] }]
""")
    out = tmp_path / "run"
    result = cli("sweep", str(suite), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    ok = results.ok_cells(results.load(out))
    assert sorted(ok[ok["plugins"] == "engine=static"]["batch"]) == [1, 3]
    three = [r for r in rundir.records(out) if r["cell"]["batch"] == 3 and r["cell"]["plugins"]]
    assert three[0]["decoder_batch_rows"] == 6 and len(set(three[0]["cell"]["batch_texts"])) == 3
    html = tmp_path / "report.html"
    assert cli("report", str(out), "-o", str(html)).returncode == 0
    page = html.read_text().replace("<wbr>", "")  # configuration names carry line-break opportunities
    assert "Throughput by batch size" in page and "dia-tiny/cpu/engine=static" in page and "b3: " in page


# One of each way a plugin reaches the loop: fewer rows, the attention function, the dtype, a context,
# and modules replaced by torch.ao's, by int4's (both kernels) and by oneDNN's.
COMPOSED = [["cfg=0"], ["sdpa=math"], ["dtype=bf16"], ["autocast=bf16"], ["int8=dynamic"], ["int4"],
            ["int4=8da4w-32"], ["onednn"]]


@pytest.mark.parametrize("plugins", COMPOSED, ids=["+".join(p) for p in COMPOSED])
def test_the_static_engine_composes_with_each_plugin(plugins):
    """Each plugin applied once, both loops on the transformed model. Where the plugin keeps fp32
    arithmetic, greedy codes are equal. Where it does not, free-running codes part at the first near
    tie (the loops attend over caches of different lengths, and rounding differs), so the two are
    teacher-forced on one history instead: their most likely tokens must agree at 95% of positions."""
    from dia_bench.harness.api import create_fast_generate
    from dia_bench.harness.worker.fidelity import teacher_forced_logits, valid_positions
    from tests.test_api import _fresh_models

    model, _ = _fresh_models()
    pipe = create_fast_generate(model, None, plugins=[*plugins, "engine=static"], device="cpu", seed=0).pipeline
    engine = pipe.engine
    assert engine is not None
    reference, ours, _ = _both(pipe, TEXTS[:2], 16, SamplingParams(), engine=engine)
    assert ours.shape == reference.shape
    if not any(p.startswith(("dtype", "autocast", "int4", "onednn")) for p in plugins):
        assert torch.equal(ours, reference)
        return
    one = pipe.tokenize(TEXTS[:1])
    kwargs = pipe.generation_kwargs(16, SamplingParams())  # with the cfg plugin's guidance scale
    assert (kwargs.get("guidance_scale") in (None, 1)) == ("cfg=0" in plugins)
    with torch.inference_mode(), pipe.generation_context():
        expected = teacher_forced_logits(pipe.model, one, reference[:1], "cfg=0" not in plugins)[:9]
        got = engine.teacher_forced_logits(one, reference[:1], kwargs)[:9]
    valid = valid_positions(reference[:1])
    agree = float((expected.argmax(-1) == got.argmax(-1))[valid].float().mean())
    assert agree >= 0.95, agree


def test_8da4w_q_k_and_v_run_as_one_joined_layer_and_give_the_three_layers_codes():
    """int4=8da4w on a dia-tiny whose k and v fill whole kernel tiles: the engine joins q, k and v into
    one call, and its greedy codes, eager and compiled, are those of the three separate calls."""
    from transformers import DacModel, DiaForConditionalGeneration

    from dia_bench.harness.api import create_fast_generate
    from dia_bench.harness.kernels.w4a8 import W4A8Linear
    from dia_bench.harness.presets import get_preset

    preset = get_preset("dia-tiny")
    config = preset.dia_config()
    config.decoder_config.num_key_value_heads = 4  # 4 x 16 = 64 outputs: one whole tile
    torch.manual_seed(0)
    model = DiaForConditionalGeneration(config)
    pipe = create_fast_generate(model, DacModel(preset.dac_config()), plugins=["int4=8da4w-32", "engine=static"],
                                device="cpu", seed=0).pipeline
    engine = pipe.engine
    sa = pipe.model.model.decoder.layers[0].self_attention
    assert isinstance(engine.qkv[0], W4A8Linear) and engine.qkv[0].out_features == 64 * 3
    assert sa.k_proj.codes.untyped_storage().data_ptr() == engine.qkv[0].codes.untyped_storage().data_ptr()
    assert engine.qkv[0] not in set(pipe.model.modules())  # counted once, through its views
    inputs = pipe.tokenize(TEXTS[:2])
    kwargs = {**pipe.generation_kwargs(12, GREEDY), "do_sample": False}
    codes = {}
    with torch.inference_mode():
        for compiled in (False, True):
            if compiled:
                engine.compile("default")
            for name, qkv in (("joined", engine.qkv), ("separate", None)):
                engine.qkv, kept = qkv, engine.qkv
                codes[compiled, name] = engine.generate(inputs, 12, kwargs)
                engine.qkv = kept
    # Compiled steps round their fused norms differently from eager ones: compare within each.
    assert torch.equal(codes[False, "joined"], codes[False, "separate"])
    assert torch.equal(codes[True, "joined"], codes[True, "separate"])


@requires_cuda
@pytest.mark.parametrize(("sampling", "batch"), CASES)
def test_on_cuda_greedy_codes_equal_generates(sampling, batch):
    from dia_bench.harness.worker.measure import load_pipeline

    if not _CUDA:
        _CUDA.append(load_pipeline(tiny_cell(device="cuda"))[0])
    reference, ours, clock = _both(_CUDA[0], TEXTS[:batch], 30, sampling)
    assert ours.device.type == "cuda" and torch.equal(ours, reference)
    assert len(clock.stamps) == 30 + 16 + 1 and clock.stamps == sorted(clock.stamps)


_CUDA: list = []


@requires_cuda
def test_on_cuda_reduce_overhead_replays_the_whole_step_as_a_cuda_graph(tmp_path):
    fid = str(tmp_path / "fidelity")
    ref = run_isolated(tiny_cell(device="cuda", fidelity_dir=fid, repeats=1), timeout_s=600)
    plugins = ["engine=static", "compile=reduce-overhead"]
    rec = run_isolated(tiny_cell(device="cuda", plugins=plugins, fidelity_dir=fid, warmup=1, repeats=2), timeout_s=900)
    assert ref["status"] == rec["status"] == "ok", rec.get("reason")
    compiled = rec["plugin_reports"]["compile=reduce-overhead"]
    assert rec["plugin_reports"]["engine=static"]["compiled_step"] == "reduce-overhead"
    assert compiled["dynamo_unique_graphs"] >= 1 and compiled["graph_breaks"] == 0
    assert compiled["cudagraph_skips"] == 0, "the decode step ran outside a CUDA graph (see the worker's log)"
    # Inductor's fp32 kernels round differently from eager's, so near ties may part; most must not.
    assert rec["fidelity"]["sampled"]["top1_agreement"] >= 0.9, rec["fidelity"]


def test_int8_layers_run_torch_aos_kernel_through_one_operator_that_compile_traces():
    import torch.ao.nn.quantized.dynamic as qd

    from dia_bench.harness.api import create_fast_generate
    from tests.test_api import _fresh_models

    model, _ = _fresh_models()
    pipe = create_fast_generate(model, None, plugins=["int8=dynamic"], device="cpu", seed=0).pipeline
    layers = [m for m in pipe.model.modules() if isinstance(m, qd.Linear)]
    assert layers and all("int8_dynamic_linear" in repr(m.forward) for m in layers)
    x = torch.randn(2, 3, layers[0].in_features)
    assert torch.equal(layers[0](x), qd.Linear.forward(layers[0], x))  # torch.ao's own forward, bit for bit
    # Compiled, the decode step is one graph: torch.ao's packed weights used to break it.
    rec = run_isolated(tiny_cell(plugins=["engine=static", "int8=dynamic", "compile"], warmup=1, repeats=1,
                                 fidelity=False), timeout_s=900)
    assert rec["status"] == "ok", rec.get("reason")
    assert "int8_dynamic_linear" in rec["plugin_notes"]["int8=dynamic"]
    compiled = rec["plugin_reports"]["compile=default"]
    assert compiled["dynamo_unique_graphs"] >= 1 and compiled["graph_breaks"] == 0, compiled
