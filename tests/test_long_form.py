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
    text = TINY_SUITE.replace("seconds = [0.2]", "seconds = [0.25, 0.5, 1.0]").split("[plugins]")[0]
    out = tmp / "run"
    result = run_cli("sweep", str(write_suite(tmp, text)), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


def test_long_form_rtf_agrees_with_the_fit_of_cost_against_length(lengths_run):
    df = results.load(lengths_run)
    fits = scaling.fits(df)
    assert len(fits) == 1
    fit = fits[0]
    assert fit["lengths"] == [0.25, 0.5, 1.0] and fit["points"] == 9
    # The slope of generation time against audio seconds is the cost of one more second of audio:
    # the decode steps' cost, which is what each cell's long-form RTF measures on its own.
    assert fit["slope"] == pytest.approx(fit["long_form_rtf"], rel=0.25)
    # The delay pattern's 16 steps, encoder and prefill: a request costs something before any audio.
    assert fit["intercept"] > 0
    ok = results.ok_cells(df)
    short = ok[ok["seconds"] == 0.25].iloc[0]
    assert short["rtf"] > short["long_form_rtf"]  # short audio reads slow: the fixed cost weighs on it
    assert short["fixed_seconds"] > 0


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
