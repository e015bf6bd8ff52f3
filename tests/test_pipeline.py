"""The real Dia pipeline on dia-tiny: lengths, determinism, weights round trip, stage timings."""

from __future__ import annotations

import hashlib

import pytest
import torch

from dia_bench.harness.presets import HOP_LENGTH, frames_for_seconds
from dia_bench.harness.runtime.pipeline import SamplingParams
from tests.conftest import run_cli


@pytest.mark.parametrize("frames", [1, 17, 86])
def test_frame_count_gives_exact_samples(tiny_pipeline, frames):
    pipe, _ = tiny_pipeline
    out = pipe.run(["[S1] Hello there. [S2] Hi!"], frames, SamplingParams(), seed=1)
    assert out.codes.shape == (1, 9, frames)
    assert out.audio.shape == (1, frames * HOP_LENGTH)
    assert out.audio.dtype == torch.float32
    # EOS is suppressed, so no code past the frame count is an EOS or PAD token.
    assert int(out.codes.max()) < 1024


def test_frames_follow_seconds():
    assert frames_for_seconds(1.0) == 86
    assert frames_for_seconds(2.5) == round(2.5 * 44100 / 512)


def test_same_seed_same_audio_other_seed_other_audio(tiny_pipeline):
    pipe, _ = tiny_pipeline
    a = pipe.run(["[S1] Same seed."], 30, SamplingParams(), seed=7).audio
    b = pipe.run(["[S1] Same seed."], 30, SamplingParams(), seed=7).audio
    c = pipe.run(["[S1] Same seed."], 30, SamplingParams(), seed=8).audio
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_stage_timings_cover_the_run(tiny_pipeline):
    pipe, _ = tiny_pipeline
    frames = 40
    times = pipe.run(["[S1] Timing."], frames, SamplingParams(), seed=0).times
    # One latency per decode step after the prefill: frames + max delay steps in all, minus the first.
    assert len(times.step_latencies_s) == frames + 15
    assert all(t > 0 for t in times.step_latencies_s)
    assert times.encoder_prefill_s > 0 and times.decode_s > 0 and times.codec_decode_s > 0
    assert times.encoder_prefill_s + times.decode_s == pytest.approx(times.generate_s, rel=0.05)


def test_cfg_runs_two_rows_per_request(tiny_pipeline):
    pipe, _ = tiny_pipeline
    out = pipe.run(["[S1] a", "[S2] b"], 17, SamplingParams(), seed=0)
    assert out.generation_batch_rows == 4
    assert out.audio.shape[0] == 2


def test_saved_checkpoint_loaded_with_weights_gives_same_audio(tiny_pipeline, tmp_path):
    pipe, _weights = tiny_pipeline
    text, seconds, seed = "[S1] Round trip of the weights.", 0.25, 3
    expected = pipe.run([text], frames_for_seconds(seconds), SamplingParams(), seed=seed).audio
    saved = tmp_path / "dia"
    pipe.model.save_pretrained(saved)
    record = tmp_path / "rec.json"
    result = run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--weights", str(saved), "--text", text,
                     "--seconds", str(seconds), "--seed", str(seed), "--repeats", "1", "--warmup", "0",
                     "--json", str(record), "--quiet")
    assert result.returncode == 0, result.stderr
    import json

    rec = json.loads(record.read_text())
    assert rec["weights"]["model"]["source"] == "local"
    assert rec["weights"]["model"]["content_hash"].startswith("sha256:")
    assert rec["audio_sha256"] == hashlib.sha256(expected[0:1].contiguous().numpy().tobytes()).hexdigest()


def test_synthetic_weights_are_recorded_with_seed_and_hash(tiny_pipeline):
    _, weights = tiny_pipeline
    assert weights["source"] == "synthetic"
    assert weights["audio_is_noise"] is True
    assert weights["model"]["seed"] == 0
    assert weights["model"]["content_hash"].startswith("sha256:")
