"""The DAC decoder in channels_last (harness/runtime/codec_layout.py), on the tiny pipeline's real codec."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

from dia_bench.harness.runtime import codec_layout
from dia_bench.harness.runtime.codec import decode_in_chunks, decoder_context_frames, snr_db
from tests.conftest import run_cli


@pytest.fixture()
def codec(tiny_pipeline):
    """A copy of the tiny pipeline's codec, so a test may convert it."""
    pipe, _ = tiny_pipeline
    return copy.deepcopy(pipe.codec)


def _codes(frames: int = 40) -> torch.Tensor:
    return torch.randint(0, 1024, (2, 9, frames), generator=torch.Generator().manual_seed(0))


def test_the_converted_decoder_computes_its_audio_in_channels_last(codec):
    codes = _codes()
    with torch.inference_mode():
        before = codec.decode(codes)
    convs = sum(isinstance(m, nn.Conv1d | nn.ConvTranspose1d) for m in codec.model.decoder.modules())
    snakes = sum(type(m).__name__ == "Snake1d" for m in codec.model.decoder.modules())
    done = codec_layout.to_channels_last(codec.model.decoder, min_snr_db=60)
    assert done.convolutions + done.transposed == convs and done.activations == snakes > 0
    assert not any(isinstance(m, nn.Conv1d | nn.ConvTranspose1d) for m in codec.model.decoder.modules())
    assert codec_layout.is_channels_last(codec.model.decoder)
    seen = []
    hooks = [m.register_forward_pre_hook(lambda m, args: seen.append(
        args[0].is_contiguous(memory_format=torch.channels_last) and args[0].dim() == 4))
        for m in codec.model.decoder.modules() if isinstance(m, nn.Conv2d | nn.ConvTranspose2d)]
    with torch.inference_mode():
        after = codec.decode(codes)
    for h in hooks:
        h.remove()
    assert len(seen) == convs and all(seen)
    assert after.shape == before.shape and after.dtype == torch.float32
    snr = snr_db(after, before)
    assert snr is None or snr > 60  # fp32, another kernel: at most its order of sums differs


def test_the_receptive_field_and_the_chunks_are_those_of_the_1d_decoder(codec):
    """Streaming and codec-chunks read the decoder's receptive field off its layers: the 2-D layers of
    height 1 must give the frames the 1-D ones gave, and the chunks must still join into the whole."""
    context = decoder_context_frames(codec)
    codec_layout.to_channels_last(codec.model.decoder, min_snr_db=60)
    assert decoder_context_frames(codec) == context > 0
    codes = _codes(50)
    with torch.inference_mode():
        whole = codec.decode(codes)
        chunked = decode_in_chunks(codec.decode, codes, 16, context).float()
        short = decode_in_chunks(codec.decode, codes, 16, 1).float()
    torch.testing.assert_close(chunked, whole, rtol=1e-4, atol=1e-4)
    assert (short - whole).abs().max() > (chunked - whole).abs().max()


@pytest.mark.filterwarnings("ignore:`torch.nn.utils.weight_norm` is deprecated:FutureWarning")  # descript's
@pytest.mark.parametrize("weight_norm", [nn.utils.parametrizations.weight_norm, nn.utils.weight_norm],
                         ids=["parametrization", "hooks"])
def test_weight_normalized_convolutions_convert_with_the_weight_they_compute(codec, weight_norm):
    """descript's DAC keeps its convolutions weight-normalized, with torch's older hooks or its
    parametrization: the 2-D layers take the weight the 1-D ones compute from their norm and direction."""
    decoder = codec.model.decoder
    with torch.no_grad():
        for m in list(decoder.modules()):
            if isinstance(m, nn.Conv1d | nn.ConvTranspose1d):
                weight_norm(m)
                if hasattr(m, "weight_g"):
                    m.weight_g.mul_(1.5)
                    m.weight_v.add_(0.01)
                else:
                    m.parametrizations.weight.original0.mul_(1.5)
                    m.parametrizations.weight.original1.add_(0.01)
    codes = _codes()
    with torch.inference_mode():
        before = codec.decode(codes)
        codec_layout.to_channels_last(decoder, min_snr_db=60)
        after = codec.decode(codes)
    snr = snr_db(after, before)
    assert snr is None or snr > 60


def test_a_decoder_with_a_layer_of_unknown_layout_is_left_as_it_was(codec):
    decoder = codec.model.decoder
    decoder.block[0].snake1 = nn.GroupNorm(1, decoder.block[0].conv_t1.in_channels)
    layers = list(decoder.modules())
    with pytest.raises(ValueError, match="'snake1' \\(GroupNorm\\) is not one whose layout is known"):
        codec_layout.to_channels_last(decoder, min_snr_db=60)
    assert list(decoder.modules()) == layers and not codec_layout.is_channels_last(decoder)


def test_a_conversion_whose_probe_disagrees_is_undone(codec):
    """Past the floor, the decoder is put back layer by layer: the same modules, the same audio."""
    decoder = codec.model.decoder
    layers = list(decoder.modules())
    codes = _codes()
    with torch.inference_mode():
        before = codec.decode(codes)
    with pytest.raises(ValueError, match="under the inf dB floor on a probe"):
        codec_layout.to_channels_last(decoder, min_snr_db=math.inf)
    assert list(decoder.modules()) == layers
    with torch.inference_mode():
        assert torch.equal(codec.decode(codes), before)


def test_the_channels_last_plugin_converts_the_compiled_codec_and_keeps_its_audio(tmp_path):
    """Through the CLI as a user runs it, with the codec compiled: the note says what was converted, the
    report shows it, the repeats compile nothing, Dia's tokens are the reference's and the codec's audio on
    the reference's codes moves only by rounding."""
    import json

    out = tmp_path / "rec.json"
    result = run_cli("run", "--preset", "dia-tiny", "--device", "cpu", "--opt", "codec-compile", "--opt",
                     "channels-last", "--repeats", "2", "--json", str(out))
    assert result.returncode == 0, result.stderr[-2000:]
    rec = json.loads(out.read_text())
    note = rec["plugin_notes"]["channels-last"]
    assert note.startswith("codec decoder in channels_last: ") and "Snake activations as 2-D layers" in note
    assert rec["plugin_reports"]["channels-last"] == {"codec_decoder_channels_last": True}
    assert rec["plugin_reports"]["codec-compile"] == {"codec_decoder_compiled": True}
    assert rec["graphs_compiled_in_repeats"] == 0
    fid = rec["fidelity"]
    assert fid["logits"]["max_abs_error"] == 0 and fid["sampled"]["total_variation"] == 0
    assert fid["codec_same_codes_identical"] or fid["codec_same_codes_snr_db"] > 60, fid
