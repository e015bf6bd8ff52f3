"""Long-form RTF, the fixed cost of a request, and what every tracker measures over which window."""

from __future__ import annotations

from pathlib import Path

import pytest

from dia_bench.harness.analysis import results, scaling
from dia_bench.harness.driver.launcher import run_isolated
from tests.conftest import cli, run_cli, tiny_cell
from tests.test_sweep import TINY_SUITE, write_suite


@pytest.fixture(scope="module")
def lengths_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("lengths")
    text = TINY_SUITE.replace("seconds = [0.2]", "seconds = [0.25, 0.5, 1.0]").replace(
        "warmup = 0", "warmup = 1").split("[plugins]")[0]
    out = tmp / "run"
    result = cli("sweep", str(write_suite(tmp, text)), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def _request(generate_s: float, steps: list[float]):
    import torch

    from dia_bench.harness.runtime.pipeline import PipelineOutput, StageTimes

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


def test_long_form_on_the_real_pipeline_has_its_fields_counts_and_units(tiny_pipeline):
    """The two clocks' inputs as the real tiny pipeline produces them: one decode step a row per audio frame
    plus the delay pattern's, every figure finite and in its unit, and the slope they predict computable.
    How close the two clocks come on this machine is a measurement (`python -m tests.bench.long_form`),
    not a test: a busy core moves a dia-tiny step by tens of percent."""
    import math

    import numpy as np

    from dia_bench.harness.presets import FRAMES_PER_SECOND, frames_for_seconds
    from dia_bench.harness.runtime.pipeline import SamplingParams
    from dia_bench.harness.worker.measure import long_form

    pipe, _ = tiny_pipeline
    texts, lengths = ["[S1] Dia is an open weights text to dialogue model."], (0.25, 0.5, 1.0)
    outs = {s: [pipe.run(texts, frames_for_seconds(s), SamplingParams(), 0) for _ in range(2)] for s in lengths}
    for s in lengths:
        assert all(len(o.times.step_latencies_s) == frames_for_seconds(s) + 15 for o in outs[s])
    lf = long_form(outs[1.0], frames_for_seconds(1.0), 1)
    assert lf["steps_per_request"] == frames_for_seconds(1.0) + 15
    assert len(lf["rtf_repeats"]) == len(lf["fixed_seconds_repeats"]) == len(lf["step_growth_us_per_step_repeats"]) == 2
    # rtf: a mean step (s) x 86.13 frames per audio second; fixed: seconds, of either sign under noise.
    steps = outs[1.0][0].times.step_latencies_s
    assert lf["rtf_repeats"][0] == pytest.approx(np.mean(steps) * FRAMES_PER_SECOND)
    assert all(math.isfinite(v) for v in [*lf["fixed_seconds_repeats"], *lf["step_growth_us_per_step_repeats"]])
    audio = {s: frames_for_seconds(s) / FRAMES_PER_SECOND for s in lengths}
    fit = scaling._ols(np.array([audio[s] for s in lengths]),
                       np.array([np.median([o.times.generate_s for o in outs[s]]) for s in lengths]))
    assert fit["points"] == 3 and all(math.isfinite(fit[k]) for k in ("slope", "intercept", "slope_low"))
    predicted = scaling.slope_from_steps(lf["rtf"], 1, float(np.median(lf["step_growth_us_per_step_repeats"])),
                                         lf["steps_per_request"], [(audio[s], frames_for_seconds(s) + 15, 1)
                                                                   for s in lengths])
    assert math.isfinite(predicted) and predicted > 0


def test_a_scaling_run_is_fitted(lengths_run):
    """A run at three lengths gives one fit, with the per-cell long-form figures it is set beside."""
    import math

    df = results.load(lengths_run)
    fits = [f for f in scaling.fits(df) if f["plugins"] == "baseline"]
    assert len(fits) == 1
    fit = fits[0]
    assert fit["lengths"] == [0.25, 0.5, 1.0] and fit["points"] == 9 and fit["slope_from_steps"] is not None
    assert fit["slope_low"] <= fit["slope"] <= fit["slope_high"] and fit["long_form_at"] == 1.0
    for _, cell in results.ok_cells(df).iterrows():
        assert math.isfinite(cell["long_form_rtf"]) and math.isfinite(cell["fixed_seconds"])
        assert cell["long_form_rtf_low"] <= cell["long_form_rtf"] <= cell["long_form_rtf_high"]


def test_the_fit_recovers_a_known_cost_from_a_runs_records(lengths_run, tmp_path):
    """The run's records with every repeat rewritten to 0.03 s + 0.4 s per audio second (times a spread
    of +-1%): the fit must give that slope and intercept, whatever this machine measured."""
    import json
    import shutil

    copy = tmp_path / "known"
    shutil.copytree(lengths_run, copy)
    for path in (copy / "cells").glob("*.json"):
        rec = json.loads(path.read_text())
        if rec["status"] == "ok":
            cost = 0.03 + 0.4 * rec["audio_seconds"]
            rec["repeats_seconds"] = [cost * k for k in (0.99, 1.0, 1.01)]
            path.write_text(json.dumps(rec))
    fit = next(f for f in scaling.fits(results.load(copy)) if f["plugins"] == "baseline")
    assert fit["slope"] == pytest.approx(0.4, rel=1e-3) and fit["intercept"] == pytest.approx(0.03, rel=2e-2)
    assert fit["slope_low"] < 0.4 < fit["slope_high"]


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
    monkeypatch.setattr(roofline, "_kernels", lambda device, nbytes, kept: one_kernel)
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
    # Here the cached figure is not this CPU's: the machine is measured (its kernels are another test's).
    monkeypatch.setattr(roofline, "_measure", lambda device: {"gbps": 42.0, "method": "measured", "kernels": {}})
    fresh = roofline.measured_bandwidth_gbps(cpu)
    assert fresh["cached"] is False and fresh["gbps"] == 42.0
    assert roofline.measured_bandwidth_gbps(cpu)["cached"] is True  # and kept under this CPU's key
