"""Bad input: one line naming the problem and the fix, exit status 2, no traceback."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import run_cli


def _assert_usage_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert lines[0].startswith("dia-bench: error:")
    for needle in needles:
        assert needle in lines[0], lines[0]


@pytest.mark.parametrize("args, needles", [
    (["--preset", "dia-huge"], ["unknown preset 'dia-huge'", "dia-1.6b", "dia-tiny"]),
    (["--device", "tpu"], ["unknown device 'tpu'", "cpu, cuda or cuda:N"]),
    (["--seconds", "0"], ["--seconds must be a finite number > 0"]),
    (["--seconds", "-2"], ["--seconds must be a finite number > 0"]),
    (["--seconds", "inf"], ["--seconds must be a finite number > 0"]),
    (["--seconds", "40"], ["Dia's decoder has 3072", "at most 35.5 s"]),
    (["--seconds", "abc"], ["not a number"]),
    (["--text", ""], ["text is empty"]),
    (["--text", "   "], ["text is empty"]),
    (["--repeats", "0"], ["--repeats must be a whole number >= 1"]),
    (["--batch", "0"], ["--batch must be a whole number >= 1"]),
    (["--cfg-scale", "0.5"], ["--cfg-scale must be above 1", "--opt cfg=0"]),
    (["--timeout", "-5"], ["--timeout", "must be a finite number > 0"]),
    (["--text", "x" * 2000], ["2000 tokens", "at most 1024"]),
    (["--warmup-seconds", "nan"], ["warmup_seconds must be a finite number > 0"]),
    (["--target-ci-pct", "2"], ["needs --max-repeats"]),
    (["--target-ci-pct", "-1", "--max-repeats", "5"], ["--target-ci-pct must be a number > 0"]),
    (["--max-repeats", "2", "--repeats", "3"], ["--max-repeats must be a whole number >= --repeats"]),
    (["--codec", "wavenet"], ["unknown codec backend 'wavenet'"]),
    (["--opt", "warp-drive"], ["unknown plugin 'warp-drive'"]),
    (["--opt", "int8=int3"], ["no value 'int3'", "dynamic"]),
    (["--bogus"], ["unrecognized arguments: --bogus"]),
])
def test_bad_run_input(args, needles):
    _assert_usage_error(run_cli("run", "--preset", "dia-tiny", "--device", "cpu", *args), *needles)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda():
    _assert_usage_error(run_cli("run", "--preset", "dia-tiny", "--device", "cuda"), "no CUDA GPU", "--device cpu")


def test_missing_weights_directory(tmp_path):
    _assert_usage_error(run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--weights",
                                str(tmp_path / "nope")), "no such directory", "save_pretrained")


def test_weights_directory_without_config(tmp_path):
    _assert_usage_error(run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--weights", str(tmp_path)),
                        "no config.json")


def test_corrupt_weights_directory(tiny_pipeline, tmp_path):
    pipe, _ = tiny_pipeline
    saved = tmp_path / "dia"
    pipe.model.save_pretrained(saved)
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _assert_usage_error(run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--weights", str(saved)),
                        "model.safetensors is corrupt", "truncated")


def test_codec_weights_of_the_wrong_kind(tiny_pipeline, tmp_path):
    pipe, _ = tiny_pipeline
    saved = tmp_path / "dia"
    pipe.model.save_pretrained(saved)
    _assert_usage_error(run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--codec-weights", str(saved)),
                        "model_type 'dia', not 'dac'")


def test_unwritable_record_path_is_refused_before_measuring(tmp_path):
    _assert_usage_error(run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--json", str(tmp_path)),
                        "is a directory")


def test_descript_codec_without_the_package_is_a_clear_error():
    import importlib.util

    if importlib.util.find_spec("dac") is not None:
        pytest.skip("descript-audio-codec is installed here")
    _assert_usage_error(run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--codec", "descript"),
                        "codec backend 'descript' is unavailable", "--codec transformers")
