"""Long-form RTF, the fixed cost of a request, and what every tracker measures over which window."""

from __future__ import annotations

from pathlib import Path

import pytest

from dia_bench.harness.driver import results, scaling
from dia_bench.harness.driver.launcher import run_isolated
from tests.conftest import run_cli, tiny_cell
from tests.test_sweep import TINY_SUITE, write_suite


@pytest.fixture(scope="module")
def lengths_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lengths")
    text = TINY_SUITE.replace("seconds = [0.2]", "seconds = [0.25, 0.5, 1.0]").replace(
        "warmup = 0", "warmup = 1").split("[plugins]")[0]
    out = tmp / "run"
    result = run_cli("sweep", str(write_suite(tmp, text)), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def _request(generate_s: float, steps: list[float]):
    import torch

    from dia_bench.harness.worker.pipeline import PipelineOutput, StageTimes

    empty = torch.zeros(0)
    return PipelineOutput(empty, empty, empty, StageTimes(generate_s=generate_s, step_latencies_s=steps), 2)


def test_the_steps_of_one_length_predict_the_fit_across_lengths_exactly_when_steps_follow_the_model():
    """The arithmetic of the two clocks, with no clock: requests whose step k costs s0 + g k after a
    fixed part. Then one length's steps and the straight line through three lengths must give the same
    slope to rounding; a wrong factor (batch, microseconds, the delay pattern's 16 steps) breaks it."""
    import numpy as np

    from dia_bench.harness.presets import FRAMES_PER_SECOND, frames_for_seconds
    from dia_bench.harness.worker.measure import long_form

    s0, g, fixed, lengths = 0.004, 2e-6, 0.05, (0.25, 0.5, 1.0)
    outs = {}
    for s in lengths:
        steps = [s0 + g * k for k in range(frames_for_seconds(s) + 16)]
        outs[s] = _request(fixed + sum(steps), steps)
    audio = {s: frames_for_seconds(s) / FRAMES_PER_SECOND for s in lengths}
    fit = scaling._ols(np.array([audio[s] for s in lengths]), np.array([outs[s].times.generate_s for s in lengths]))
    lf = long_form([outs[1.0]], frames_for_seconds(1.0), 1)
    assert lf["step_growth_us_per_step_repeats"][0] == pytest.approx(g * 1e6)
    predicted = scaling.slope_from_steps(lf["rtf"], 1, lf["step_growth_us_per_step_repeats"][0],
                                         lf["steps_per_request"],
                                         [(audio[s], len(outs[s].times.step_latencies_s), 1) for s in lengths])
    assert predicted == pytest.approx(fit["slope"], rel=1e-9)
    # The fixed part is what a request costs beyond one mean step per audio frame: more than `fixed`,
    # since the 16 delay steps and the growth are in it.
    assert lf["fixed_seconds"] > fixed


def test_long_form_rtf_and_the_fit_of_cost_against_length_agree_on_the_real_pipeline(tiny_pipeline):
    """Two clocks on the real tiny pipeline, in one process and interleaved. A dia-tiny step is 2-5 ms
    of small ops that a 2-core VM moves by tens of percent, so this checks the two agree in kind (a
    wrong factor is 2x or more off); how close they come is measured by `python -m tests.bench_long_form`
    (README: long-form RTF), not asserted on a timer."""
    import numpy as np

    from dia_bench.harness.presets import FRAMES_PER_SECOND, frames_for_seconds
    from dia_bench.harness.worker.measure import long_form
    from dia_bench.harness.worker.pipeline import SamplingParams

    pipe, _ = tiny_pipeline
    texts, lengths = ["[S1] Dia is an open weights text to dialogue model."], (0.25, 0.5, 1.0)
    pipe.run(texts, 22, SamplingParams(), 0)  # the warmup
    outs: dict[float, list] = {s: [] for s in lengths}
    for _ in range(3):
        for s in lengths:
            outs[s].append(pipe.run(texts, frames_for_seconds(s), SamplingParams(), 0))
    audio = {s: frames_for_seconds(s) / FRAMES_PER_SECOND for s in lengths}
    fit = scaling._ols(np.array([audio[s] for s in lengths]),
                       np.array([np.median([o.times.generate_s for o in outs[s]]) for s in lengths]))
    lf = long_form(outs[1.0], frames_for_seconds(1.0), 1)
    predicted = scaling.slope_from_steps(lf["rtf"], 1, float(np.median(lf["step_growth_us_per_step_repeats"])),
                                         lf["steps_per_request"],
                                         [(audio[s], len(outs[s][0].times.step_latencies_s), 1) for s in lengths])
    assert 0.6 < fit["slope"] / predicted < 1.6
    # The delay pattern's 16 steps, the encoder and the prefill: a request costs something before any audio.
    assert fit["intercept"] > 0 and min(lf["fixed_seconds_repeats"]) > 0


def test_a_scaling_run_is_fitted_and_short_audio_reads_slow(lengths_run):
    df = results.load(lengths_run)
    fits = [f for f in scaling.fits(df) if f["plugins"] == "baseline"]
    assert len(fits) == 1
    fit = fits[0]
    assert fit["lengths"] == [0.25, 0.5, 1.0] and fit["points"] == 9 and fit["slope_from_steps"] is not None
    ok = results.ok_cells(df)
    for _, cell in ok.iterrows():  # within one process: the fixed cost makes every short RTF read slow
        assert cell["rtf"] > cell["long_form_rtf"] and cell["fixed_seconds"] > 0


def test_every_tracker_measures_the_repeats_and_keeps_the_other_phases(tmp_path):
    rec = run_isolated(tiny_cell(plugins=["int8=dynamic"], repeats=3, warmup=1, fidelity=False), timeout_s=600)
    assert rec["status"] == "ok", rec.get("reason")
    phases = rec["memory"]["phases"]
    assert set(phases) == {"load", "transform", "warmup", "repeats"}
    assert rec["peak_rss_mb"] == phases["repeats"]["peak_rss_mb"] and rec["memory"]["window"] == "the measured repeats"
    assert all(p["peak_rss_mb"] > 50 for p in phases.values())
    # Frames are audio frames: the delay pattern's extra steps are not counted as frames.
    assert rec["audio_frames_per_second"] == pytest.approx(rec["frames"] * rec["batch"] / rec["generation_seconds"])
    assert rec["decode_steps_per_second"] > 0 and "decode_frames_per_second" not in rec
    lf = rec["long_form"]
    assert len(lf["rtf_repeats"]) == len(lf["fixed_seconds_repeats"]) == 3


def test_compile_without_warmup_is_refused():
    result = run_cli("run", "--preset", "dia-tiny", "--opt", "compile", "--warmup", "0")
    assert result.returncode == 2 and "time compilation as generation" in result.stderr
    assert "Traceback" not in result.stderr


def test_bandwidth_is_the_best_of_several_read_kernels_and_a_step_beyond_it_is_flagged(tiny_pipeline):
    import torch

    from dia_bench.harness.worker.roofline import roofline

    pipe, _ = tiny_pipeline
    fine = roofline(pipe.model, torch.device("cpu"), 10.0)
    kernels = {k: v for k, v in fine["bandwidth_kernels"].items() if v}
    assert len(kernels) >= 3 and fine["measured_bandwidth_gbps"] == max(kernels.values())
    assert "read kernels" in fine["bandwidth_method"] and fine["problem"] is None
    impossible = roofline(pipe.model, torch.device("cpu"), 1e-9)  # a step faster than memory allows
    assert impossible["fraction_of_bandwidth"] > 1 and "above the measured" in impossible["problem"]


def test_the_cached_bandwidth_is_scaled_by_the_probes_beside_the_repeats(tiny_pipeline, tmp_path, monkeypatch):
    """The VMs' bandwidth wanders: the roofline divides by the cached figure times the probes' mean over
    the probe cached with it, and says when the probes themselves moved over the repeats."""
    import torch

    from dia_bench.harness.jsonio import write_json_atomic
    from dia_bench.harness.worker import roofline

    monkeypatch.setenv("DIA_BENCH_CACHE", str(tmp_path))
    cpu = torch.device("cpu")
    write_json_atomic(tmp_path / "bandwidth.json", {roofline.bandwidth_key(cpu): {
        "gbps": 30.0, "method": "sentinel", "kernels": {}, "probe_gbps": 20.0}})
    pipe, _ = tiny_pipeline
    steady = roofline.roofline(pipe.model, cpu, 0.001, 0, (10.0, 10.4))
    assert steady["bandwidth_drift"] == 0.51 and steady["measured_bandwidth_gbps"] == 15.3
    assert steady["bandwidth_cached_gbps"] == 30.0 and steady["bandwidth_unsteady"] is None
    assert steady["fraction_of_bandwidth"] == pytest.approx(steady["bytes_per_step"] / 0.001 / 15.3e9, abs=1e-4)
    moved = roofline.roofline(pipe.model, cpu, 0.001, 0, (10.0, 12.0))
    assert "moved from 10.0 to 12.0 GB/s" in moved["bandwidth_unsteady"]
    low, high = moved["fraction_range"]  # the fraction had the step seen 12.0 GB/s (x 1.5), or 10.0
    assert low == pytest.approx(moved["bytes_per_step"] / 0.001 / 18e9, abs=1e-4)
    assert high == pytest.approx(moved["bytes_per_step"] / 0.001 / 15e9, abs=1e-4)
    assert low < moved["fraction_of_bandwidth"] < high
    assert 0 < roofline.bandwidth_probe(cpu) < 1e4


def test_the_machines_bandwidth_is_measured_again_while_its_probes_disagree(monkeypatch):
    """A best kernel from one bandwidth episode over a probe from another would scale every later figure
    wrongly: the probes bracket the kernels, and a jump between them repeats the measurement."""
    import torch

    from dia_bench.harness.worker import roofline

    readings = iter([60.0, 30.0, 31.0, 40.0, 40.0, 40.5])  # before and after each try: jump, jump, steady
    monkeypatch.setattr(roofline, "bandwidth_probe", lambda device, iters=5: next(readings))
    x = torch.ones(2**20)
    one_kernel = {"sum fp32": lambda: ((lambda: x.sum()), x.nbytes)}
    monkeypatch.setattr(roofline, "_kernels", lambda device, nbytes: one_kernel)
    measured = roofline._measure(torch.device("cpu"), iters=1)
    assert measured["attempts"] == 3 and measured["probe_steady"] is True
    assert measured["probes_gbps"] == [40.0, 40.5] and measured["probe_gbps"] == 40.25
    readings = iter([60.0, 30.0, 31.0, 40.0])
    unsteady = roofline._measure(torch.device("cpu"), iters=1, tries=2)
    assert unsteady["attempts"] == 2 and unsteady["probe_steady"] is False and unsteady["probes_gbps"] == [31.0, 40.0]


def test_a_suite_that_would_time_compilation_is_refused(tmp_path):
    text = TINY_SUITE.replace('tf32 = [true]', 'compile = ["default"]')
    result = run_cli("sweep", str(write_suite(tmp_path, text)), "--list")
    assert result.returncode == 2 and "warmup = 0 with a compile cell" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_a_bandwidth_cached_on_another_processor_is_not_used(tmp_path, monkeypatch):
    # These VMs keep their host name when they move to another CPU: a figure measured on a Zen 4 must
    # not be the roofline of a Xeon.
    import torch

    from dia_bench.harness import env
    from dia_bench.harness.jsonio import write_json_atomic
    from dia_bench.harness.worker import roofline

    monkeypatch.setenv("DIA_BENCH_CACHE", str(tmp_path))
    cpu = torch.device("cpu")
    here = roofline.bandwidth_key(cpu)
    assert env.cpu_info()["model"] in here
    elsewhere = {**env.cpu_info(), "model": "AMD EPYC 9R14 96-Core Processor"}
    monkeypatch.setattr(env, "cpu_info", lambda: elsewhere)
    there = roofline.bandwidth_key(cpu)
    assert there != here and "EPYC 9R14" in there
    write_json_atomic(tmp_path / "bandwidth.json", {there: {"gbps": 1e6, "method": "sentinel", "kernels": {}}})
    assert roofline.measured_bandwidth_gbps(cpu) == {"gbps": 1e6, "method": "sentinel", "kernels": {}, "cached": True}
    monkeypatch.undo()
    monkeypatch.setenv("DIA_BENCH_CACHE", str(tmp_path))
    fresh = roofline.measured_bandwidth_gbps(cpu)
    assert fresh["cached"] is False and fresh["gbps"] < 1e6
