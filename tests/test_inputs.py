"""Inputs checked once, before any work: every bad input is one line and exit 2, and an
output that fails late never costs the measurement."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dia_bench.harness import process_noise
from dia_bench.harness.cell import Cell, text_tokens
from dia_bench.harness.driver.launcher import run_isolated
from dia_bench.harness.presets import PRESETS
from tests.conftest import cli, run_cli, tiny_cell
from tests.test_cli_errors import _assert_usage_error
from tests.test_sweep import TINY_SUITE, write_suite

TINY_RUN = ("run", "--preset", "dia-tiny", "--device", "cpu", "--seconds", "0.2", "--repeats", "1", "--warmup", "0")


@pytest.fixture()
def a_run(tiny_run) -> Path:
    """Any finished run: the session's sweep (tests/conftest.py), read only."""
    return tiny_run


def test_the_validator_counts_tokens_as_dia_does():
    from transformers import DiaTokenizer

    tokenizer = DiaTokenizer()
    for text in ("[S1] Hello there. [S2] Hi! (laughs)", "Ünïcode [S2] 日本語 [S1]", "x" * 300):
        assert text_tokens(text) == len(tokenizer(text)["input_ids"])


def test_the_limits_are_the_models_own():
    for preset in PRESETS.values():
        config = preset.dia_config()
        assert preset.encoder_positions == config.encoder_config.max_position_embeddings
        assert preset.decoder_positions == config.decoder_config.max_position_embeddings


def test_a_100_kb_text_is_refused_at_once():
    _assert_usage_error(run_cli(*TINY_RUN, "--text", "[S1] " + "a" * 100_000), "tokens", "at most 1024")


@pytest.mark.parametrize("args, needles", [
    (["--json", "/proc/dia-bench.json"], ["--json", "cannot write in /proc"]),
    (["--json", "/proc/nope/x.json"], ["--json", "cannot create"]),
    (["--save-audio", "a.txt"], ["--save-audio", ".wav"]),
    (["--profile", "/proc/nope"], ["--profile", "cannot create"]),
])
def test_outputs_are_checked_before_any_work(tmp_path, args, needles):
    result = run_cli(*TINY_RUN, *args)
    _assert_usage_error(result, *needles)
    assert "loading" not in result.stderr  # no worker started


def test_crosscheck_needs_a_round():
    _assert_usage_error(run_cli("crosscheck", "--preset", "dia-tiny", "--rounds", "0"), "--rounds", "at least 1")


@pytest.mark.parametrize("mutate, needles", [
    (lambda s: s.replace("repeats = 3", "repeats = 3\nmin_repeats = -3"), ["min_repeats = -3"]),
    (lambda s: s.replace("repeats = 3", "repeats = 3\ntimeout_s = -1"), ["timeout_s = -1"]),
    (lambda s: s.replace("seconds = [0.2]", "seconds = [1e400]"), ["seconds", "finite"]),
    (lambda s: s.replace("seconds = [0.2]", "seconds = [40.0]"), ["cell baseline at 40 s", "at most 35.5 s"]),
    (lambda s: s.replace("repeats = 3", "repeats = 3\ntarget_ci_pct = 2"), ["needs --max-repeats"]),
    (lambda s: s.replace("repeats = 3", "repeats = 3\nwarmup_seconds = -0.5"), ["warmup_seconds", "> 0"]),
    (lambda s: s.replace("repeats = 3", 'repeats = 3\ngpu_model = "H100"'), ["gpu_model", "add cuda to devices"]),
    (lambda s: s.replace('devices = ["cpu"]', 'devices = ["cuda"]\ngpu_model = "H 100"'),
     ["gpu_model = 'H 100'", "such as H100"]),
])
def test_suites_meet_the_same_validator(tmp_path, mutate, needles):
    path = write_suite(tmp_path, mutate(TINY_SUITE))
    _assert_usage_error(run_cli("sweep", str(path), "--list"), str(path), *needles)


def test_a_directory_is_not_a_suite_and_cannot_hide_a_shipped_one(tmp_path, a_run):
    import os
    import subprocess
    import sys

    _assert_usage_error(run_cli("sweep", str(a_run)), "is a directory, not a suite file", "dia-bench report")
    (tmp_path / "smoke").mkdir()  # e.g. a run directory named after the suite
    listed = subprocess.run([sys.executable, "-m", "dia_bench.harness.cli", "sweep", "smoke", "--list"], cwd=tmp_path,
                            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(Path.cwd())})
    assert listed.returncode == 0 and "dia-tiny/cpu/baseline" in listed.stdout, listed.stderr


def test_only_that_matches_nothing_says_so():
    _assert_usage_error(run_cli("sweep", "smoke", "--list", "--only", "zzz"), "--only 'zzz' matches no cell")


def test_report_outputs(a_run, tmp_path):
    fresh = tmp_path / "newdir" / "x.md"
    assert cli("report", str(a_run), "--markdown", "-o", str(fresh)).returncode == 0 and fresh.is_file()
    _assert_usage_error(run_cli("report", str(a_run), "-o", str(tmp_path)), "-o", "is a directory")
    on_run_json = tmp_path / "r.html"
    assert cli("report", str(a_run / "run.json"), "-o", str(on_run_json)).returncode == 0


def test_export_outputs(a_run, tmp_path):
    _assert_usage_error(run_cli("export", str(a_run), "-o", str(tmp_path)), "is a directory")
    _assert_usage_error(run_cli("export", str(a_run), "-o", "/proc/x/b.json"), "cannot create")


def test_compare_needs_two_runs_and_a_real_threshold(a_run, tmp_path):
    _assert_usage_error(run_cli("compare", str(a_run), str(a_run)), "the same run twice")
    other = tmp_path / "other"
    shutil.copytree(a_run, other)
    _assert_usage_error(run_cli("compare", str(a_run), str(other), "--max-regression", "-50"),
                        "--max-regression", "percentage >= 0")


def test_an_output_that_fails_late_keeps_the_measurement():
    """The parent checks paths first; if one still fails in the worker (a disk gone, a path raced
    away), the record keeps every figure and says which output is missing."""
    rec = run_isolated(tiny_cell(repeats=2, fidelity=False, save_audio="/proc/dia-bench-gone/a.wav",
                                 profile_dir="/proc/dia-bench-gone"), timeout_s=300)
    assert rec["status"] == "ok", rec.get("reason")
    assert len(rec["repeats_seconds"]) == 2 and rec["rtf"] > 0
    assert set(rec["output_errors"]) == {"audio", "profile"}


def test_adaptive_repeats_stop_at_the_target_or_at_the_limit():
    # The interval is taken on log times: three repeats of which one ran 10x slower (a sibling test's load
    # on a 2-core machine) span about +-1350%. A target of 1e15% is a half-width of 30 in log time, which
    # no repeats reach.
    loose = run_isolated(tiny_cell(repeats=3, max_repeats=6, target_ci_pct=1e15, fidelity=False), timeout_s=300)
    assert loose["status"] == "ok", loose.get("reason")
    assert loose["adaptive"]["target_met"] and loose["adaptive"]["repeats_run"] == 3
    assert loose["adaptive"]["process_term"]["source"] == process_noise.default_prior("cpu dia-tiny").source
    # A machine whose processes never differ: only the repeats' own noise is left to narrow.
    quiet = {"variance": 0.0, "df": 1e9, "source": "no noise between processes (test)"}
    strict = run_isolated(tiny_cell(repeats=3, max_repeats=5, target_ci_pct=1e-6, fidelity=False,
                                    process_term=quiet), timeout_s=300)
    assert strict["adaptive"]["repeats_run"] == 5 == len(strict["repeats_seconds"])
    assert not strict["adaptive"]["target_met"] and strict["adaptive"]["achieved_ci_pct"] > 1e-6
    assert strict["adaptive"]["unreachable"] is None


def test_adaptive_repeats_stop_where_the_noise_between_processes_alone_is_wider_than_the_target():
    """More repeats in one process cannot narrow the process term: the worker stops at the minimum and
    says what would help."""
    rec = run_isolated(tiny_cell(repeats=3, max_repeats=8, target_ci_pct=5.0, fidelity=False), timeout_s=300)
    assert rec["status"] == "ok", rec.get("reason")
    adaptive = rec["adaptive"]
    assert adaptive["repeats_run"] == 3 and not adaptive["target_met"]
    assert "processes" in adaptive["unreachable"] and adaptive["achieved_ci_pct"] >= adaptive["within_ci_pct"]


def test_synthetic_weights_name_the_command_for_real_ones():
    result = run_cli("env")
    assert result.returncode == 0
    assert "hf download nari-labs/Dia-1.6B-0626" in result.stdout.replace("\n", " ")


def test_the_export_carries_pytest_benchmarks_own_stats(a_run, tmp_path):
    from pytest_benchmark.stats import Stats

    out = tmp_path / "bench.json"
    assert cli("export", str(a_run), "-o", str(out)).returncode == 0
    data = json.loads(out.read_text())
    first = data["benchmarks"][0]
    stats = Stats()
    for v in first["stats"]["data"]:
        stats.update(v)
    assert {k: first["stats"][k] for k in stats.as_dict()} == stats.as_dict()
    assert data["machine_info"]["python_implementation"] and "cpu" in data["machine_info"]


@pytest.mark.parametrize("model, name, matches", [
    ("H100", "NVIDIA H100 80GB HBM3", True),
    ("h100", "NVIDIA H100 PCIe", True),
    ("A100", "NVIDIA A100-SXM4-80GB", True),
    ("L4", "NVIDIA L4", True),
    ("L4", "NVIDIA L40S", False),  # whole words: an L4 is not an L40S
    ("A10G", "NVIDIA A100-SXM4-40GB", False),
])
def test_a_gpu_model_is_matched_by_whole_words(model, name, matches):
    from dia_bench.harness.devices import gpu_model_matches

    assert gpu_model_matches(model, name) is matches


def test_the_warmup_is_short_only_where_no_plugin_prepares_per_shape():
    from dia_bench.optimizations.registry import resolve

    cell = Cell(preset="dia-tiny", seconds=0.25, warmup_seconds=0.02)
    # The prefill, then 0.02 s x 86.13 = 2 decode steps.
    assert cell.warmup_steps(full_length=resolve(["int8=dynamic", "cfg=0"], "cpu").warms_per_shape()) == 3
    for plugin in ("compile", "codec-compile"):
        assert cell.warmup_steps(full_length=resolve([plugin], "cpu").warms_per_shape()) is None
    assert Cell(preset="dia-tiny", seconds=0.25).warmup_steps(full_length=False) is None
    assert Cell(preset="dia-tiny", seconds=0.25, warmup_seconds=0.001).warmup_steps(full_length=False) == 2
    # Never more steps than the whole request runs.
    assert Cell(preset="dia-tiny", seconds=0.02, warmup_seconds=5).warmup_steps(full_length=False) == 2 + 16
