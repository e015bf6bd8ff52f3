"""The descript-audio-codec backend against transformers' DacModel: same weights, same audio.

Runs only where `import dac` works (`nox -s descript`: torch 2.9.1 with a matching torchaudio);
beside torch 2.13 it cannot import, and these tests skip.
"""

from __future__ import annotations

import json

import pytest
import torch

from dia_bench.harness.presets import _REAL_CODEC, get_preset
from dia_bench.harness.runtime.codec import DescriptDac, TransformersDac
from dia_bench.harness.runtime.weights import ensure_synthetic
from tests.conftest import run_cli


def _dac_reason() -> str | None:
    try:
        import dac  # noqa: F401
    except Exception as exc:  # ImportError, or OSError/RuntimeError from a torchaudio built for another torch
        return f"import dac failed ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"
    return None


REASON = _dac_reason()
pytestmark = [pytest.mark.descript, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


def _codec_dir(kind: str, tmp_path_factory) -> str:
    if kind == "dia-tiny":
        return ensure_synthetic(get_preset("dia-tiny"), 0, "codec").path
    # The real DAC 44.1 kHz architecture (76.6 M parameters), seeded random weights.
    from transformers import DacConfig, DacModel

    path = tmp_path_factory.mktemp("dac-44khz")
    torch.manual_seed(1)
    DacModel(DacConfig(**_REAL_CODEC)).save_pretrained(path)
    return str(path)


@pytest.mark.parametrize("kind", ["dia-tiny", "dac-44khz"])
def test_both_backends_decode_the_same_codes_to_the_same_audio(kind, tmp_path_factory):
    path = _codec_dir(kind, tmp_path_factory)
    ours, theirs = TransformersDac.load(path, "cpu"), DescriptDac(path, "cpu")
    assert theirs.sample_rate == ours.sample_rate == 44100
    codes = torch.randint(0, 1024, (2, 9, 24), generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        a, b = ours.decode(codes), theirs.decode(codes)
    assert a.shape == b.shape == (2, 24 * 512)
    scale = float(a.abs().max())
    assert scale > 0
    # Weight norm is recomputed from (g, v) in descript's layers: equal up to float rounding.
    assert float((a - b).abs().max()) <= 1e-4 * scale, float((a - b).abs().max())


def test_a_dia_tiny_cell_runs_with_the_descript_codec(tmp_path):
    out = tmp_path / "descript.json"
    result = run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--codec", "descript", "--seconds", "0.25",
                     "--warmup", "0", "--repeats", "1", "--quiet", "--json", str(out))
    assert result.returncode == 0, result.stdout + result.stderr
    rec = json.loads(out.read_text())
    assert rec["status"] == "ok" and rec["codec"] == "descript"
    assert rec["samples"] == rec["frames"] * 512 and rec["stages"]["codec_decode_s"] > 0
