"""Long-form RTF, the fixed cost of a request, and what every tracker measures over which window."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import results, scaling
from harness.launcher import run_isolated
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


def test_long_form_rtf_agrees_with_the_fit_of_cost_against_length(tiny_pipeline):
    """Two clocks, one answer: a straight line through the generation times of requests of three
    lengths, and one length's decode steps alone, give the same cost per second of audio.

    In one process, interleaved: across worker processes a dia-tiny step (2-5 ms of small ops)
    varies by +-30% on a 2-core VM, which would test the VM; dia-1.6b's memory-bound steps agree
    across processes too (README: the int8 scaling fit)."""
    import numpy as np

    from harness.measure import long_form
    from harness.pipeline import SamplingParams
    from harness.presets import FRAMES_PER_SECOND, frames_for_seconds

    pipe, _ = tiny_pipeline
    texts, lengths = ["[S1] Dia is an open weights text to dialogue model."], (0.25, 0.5, 1.0)
    pipe.run(texts, 22, SamplingParams(), 0)  # the warmup
    outs: dict[float, list] = {s: [] for s in lengths}
    # Five interleaved rounds: with three, one slow request among nine moved the fit by 10% in a CI run.
    rounds = 5
    for _ in range(rounds):
        for s in lengths:
            outs[s].append(pipe.run(texts, frames_for_seconds(s), SamplingParams(), 0))
    audio = {s: frames_for_seconds(s) / FRAMES_PER_SECOND for s in lengths}
    # The median request of each length: one request slowed by the VM must not tilt the line.
    fit = scaling._ols(np.array([audio[s] for s in lengths]),
                       np.array([np.median([o.times.generate_s for o in outs[s]]) for s in lengths]))
    lf = long_form(outs[1.0], frames_for_seconds(1.0), 1)
    predicted = scaling.slope_from_steps(lf["rtf"], 1, float(np.median(lf["step_growth_us_per_step_repeats"])),
                                         lf["steps_per_request"],
                                         [(audio[s], len(outs[s][0].times.step_latencies_s), 1) for s in lengths])
    assert fit["slope"] == pytest.approx(predicted, rel=0.1)
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

    from harness.roofline import roofline

    pipe, _ = tiny_pipeline
    fine = roofline(pipe.model, torch.device("cpu"), 10.0)
    kernels = {k: v for k, v in fine["bandwidth_kernels"].items() if v}
    assert len(kernels) >= 3 and fine["measured_bandwidth_gbps"] == max(kernels.values())
    assert "read kernels" in fine["bandwidth_method"] and fine["problem"] is None
    impossible = roofline(pipe.model, torch.device("cpu"), 1e-9)  # a step faster than memory allows
    assert impossible["fraction_of_bandwidth"] > 1 and "above the measured" in impossible["problem"]


def test_a_suite_that_would_time_compilation_is_refused(tmp_path):
    text = TINY_SUITE.replace('tf32 = [true]', 'compile = ["default"]')
    result = run_cli("sweep", str(write_suite(tmp_path, text)), "--list")
    assert result.returncode == 2 and "warmup = 0 with a compile cell" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
