"""Fidelity judges what a cell samples from, on one history the fp32 reference generated."""

from __future__ import annotations

import pytest
import torch

from dia_bench.harness.analysis import quality, results
from dia_bench.harness.driver.launcher import run_isolated
from dia_bench.harness.runtime.pipeline import SamplingParams
from dia_bench.harness.worker import fidelity
from tests.conftest import tiny_cell


def test_the_processor_chain_is_the_one_generate_applies(tiny_pipeline):
    """fidelity rebuilds transformers' logits processors from private methods; if transformers ever
    builds them differently, the teacher-forced scores stop matching what generate reports."""
    pipe, _ = tiny_pipeline
    inputs = pipe.tokenize(["[S1] The same scores, step by step."])
    kwargs = pipe.sampling_kwargs(20, SamplingParams())
    torch.manual_seed(3)
    with torch.inference_mode():
        out = pipe.model.generate(**inputs, **kwargs, output_scores=True, return_dict_in_generate=True)
        logits = fidelity.teacher_forced_logits(pipe.model, inputs, out.sequences, cfg=True)
        processors = fidelity._processors(pipe.model, kwargs, inputs, cfg=True)
        history = out.sequences[:, :-1, :]
        for t, reported in enumerate(out.scores):
            ids = history[:, : t + 1, :].transpose(1, 2).reshape(9, t + 1)
            ours = processors(ids, logits[:, t, :].clone())
            finite = torch.isfinite(reported)
            assert torch.equal(finite, torch.isfinite(ours)), f"step {t}: another set of tokens can be drawn"
            assert torch.allclose(ours[finite], reported[finite], atol=1e-4), f"step {t}"


@pytest.fixture(scope="module")
def judged(tmp_path_factory):
    """The reference, then two cells judged on its history: cfg=0 and sdpa=math."""
    directory = tmp_path_factory.mktemp("fidelity")
    recs = {}
    for plugins in ([], ["cfg=0"], ["sdpa=math"], ["codec-dtype=bf16"]):
        rec = run_isolated(tiny_cell(plugins=plugins, fidelity_dir=str(directory)), timeout_s=600)
        assert rec["status"] == "ok", rec.get("reason")
        recs["+".join(plugins) or "baseline"] = rec
    return directory, recs


def test_one_history_per_run_made_by_the_reference(judged):
    directory, recs = judged
    base = recs["baseline"]["fidelity"]
    # Made by the reference, or copied from the machine's cache where an earlier run (test) made it.
    assert not base["compared"] and base["history"]["source"] in ("created", "cache")
    ids = {rec["fidelity"]["history"]["id"] for rec in recs.values()}
    assert len(ids) == 1 and len(list(directory.glob("history-*.safetensors"))) == 1
    assert recs["cfg=0"]["fidelity"]["history"]["source"] == "run"
    assert not recs["cfg=0"]["fidelity"]["history"]["created_by_this_cell"]
    assert recs["cfg=0"]["fidelity"]["history"]["sampling"]["cfg_scale"] == 3.0


def test_the_next_run_copies_the_history_from_the_cache_instead_of_generating_it(judged, tmp_path):
    directory, recs = judged
    rec = run_isolated(tiny_cell(fidelity_dir=str(tmp_path)), timeout_s=600)
    history = rec["fidelity"]["history"]
    assert history["source"] == "cache" and not history["created_by_this_cell"]
    assert history["id"] == recs["baseline"]["fidelity"]["history"]["id"]
    ours = tmp_path / f"history-{history['id']}.safetensors"
    assert history["path"] == str(ours)  # the run directory keeps its own copy
    assert ours.read_bytes() == (directory / ours.name).read_bytes()


def test_guidance_off_is_exact_arithmetic_and_a_different_distribution(judged):
    _, recs = judged
    fid = recs["cfg=0"]["fidelity"]
    # The conditional logits are computed exactly as the reference computes them ...
    assert fid["logits"]["max_abs_error"] == 0
    # ... but what is sampled from is not Dia's guided distribution, and the bar sees it.
    assert fid["sampled"]["total_variation"] > 0.3
    assert fid["sampled"]["all_channels_top1_agreement"] < fid["sampled"]["top1_agreement"]
    row = results.load_records([recs["cfg=0"]]).iloc[0]
    assert quality.assess(row)["status"] == "fails"
    row["reference_sensitivity_tv"] = 0.5  # by design stays a failure, however sensitive the reference
    assert quality.assess(row)["status"] == "fails"


def test_a_chaotic_reference_leaves_a_cell_within_its_own_sensitivity_unjudged_never_recommended(judged):
    _, recs = judged
    sens = recs["sdpa=math"]["fidelity"]["history"]["sensitivity"]
    # dia-tiny is well conditioned: noise at a fraction of bf16's rounding barely moves it.
    assert sens["linear_output_noise"] == fidelity.SENSITIVITY_NOISE and 0 < sens["total_variation"] < 0.01
    # Several draws of the noise, the largest kept as the bound: one draw alone can land anywhere.
    draws = sens["total_variation_draws"]
    assert len(draws) == fidelity.SENSITIVITY_DRAWS >= 2 and sens["total_variation"] == max(draws)
    assert len(set(draws)) == len(draws)  # independent draws, not one draw counted thrice
    row = results.load_records([recs["sdpa=math"]]).iloc[0]
    assert row["reference_sensitivity_tv"] == sens["total_variation"]
    row["total_variation"] = 0.3  # a drift the bar would fail ...
    assert quality.assess(row)["status"] == "fails"
    row["reference_sensitivity_tv"] = 0.4  # ... unless the reference moves that far on its own
    verdict = quality.assess(row)
    assert verdict["status"] == "unjudged" and "real weights" in verdict["why"], verdict
    assert f"the largest of {fidelity.SENSITIVITY_DRAWS} draws" in verdict["why"]
    # Unjudged is absence of evidence: shown apart as not verified, never recommended.
    assert not bool(quality.eligible(row.to_frame().T).iloc[0])
    assert bool(quality.unverified(row.to_frame().T).iloc[0])
    row["total_variation"] = 0.6  # further than the reference's own sensitivity: on real weights, the plugin moved it
    row["weights_source"] = "hf-cache"
    verdict = quality.assess(row)
    assert verdict["status"] == "fails" and "further than the reference's own sensitivity" in verdict["why"]
    # On synthetic weights that sensitive, a probe far below bf16's rounding says nothing of a larger change.
    row["weights_source"] = "synthetic"
    verdict = quality.assess(row)
    assert verdict["status"] == "unjudged" and "synthetic weights" in verdict["why"], verdict
    row["reference_sensitivity_tv"] = 0.004  # a well-conditioned reference (as dia-tiny's is) still judges it
    assert quality.assess(row)["status"] == "fails"


def test_only_evidence_makes_a_cell_recommendable(judged):
    """Fidelity off: a cell whose plugins change no arithmetic (huge pages) is the reference's output; any
    other is unmeasured, fast perhaps, but not recommended."""
    _, recs = judged
    row = results.load_records([recs["sdpa=math"]]).iloc[0]
    for column in ("total_variation", "top1_agreement", "reference_sensitivity_tv"):
        row[column] = None
    assert quality.assess(row)["status"] == "unmeasured"
    assert not bool(quality.eligible(row.to_frame().T).iloc[0])
    row["plugins"] = "hugepages"
    assert quality.assess(row)["status"] == "exact" and bool(quality.eligible(row.to_frame().T).iloc[0])
    row["plugins"] = "hugepages+threads=1"  # threads reorder sums
    assert quality.assess(row)["status"] == "unmeasured"


def test_measuring_the_sensitivity_leaves_the_model_as_it_was(tiny_pipeline):
    pipe, _ = tiny_pipeline
    inputs = pipe.tokenize(["[S1] Unchanged."])
    kwargs = pipe.sampling_kwargs(8, SamplingParams())
    with torch.inference_mode():
        delayed = pipe.model.generate(**inputs, **kwargs).cpu()
        before = fidelity.teacher_forced_logits(pipe.model, inputs, delayed, cfg=True)
        probs = fidelity.sampled_distributions(pipe.model, kwargs, inputs, delayed, before)
        sens = fidelity.reference_sensitivity(pipe.model, kwargs, inputs, delayed, probs, seed=0)
        after = fidelity.teacher_forced_logits(pipe.model, inputs, delayed, cfg=True)
    assert sens["total_variation"] > 0 and torch.equal(before, after)


def test_a_numerically_equivalent_kernel_passes(judged):
    _, recs = judged
    fid = recs["sdpa=math"]["fidelity"]
    assert fid["sampled"]["total_variation"] < 1e-3 and fid["sampled"]["top1_agreement"] > 0.99
    assert fid["codec_same_codes_identical"]
    assert "synthetic" in fid["free_running_audio"]
    row = results.load_records([recs["sdpa=math"]]).iloc[0]
    assert quality.assess(row)["status"] == "passes"



def test_a_half_precision_codec_is_judged_on_its_audio_against_a_floor(judged):
    _, recs = judged
    fid = recs["codec-dtype=bf16"]["fidelity"]
    # Dia itself is untouched: the same logits, the same sampling ...
    assert fid["logits"]["max_abs_error"] == 0 and fid["sampled"]["total_variation"] == 0
    # ... but the codec's audio on the reference's codes moves, by bf16 rounding.
    assert not fid["codec_same_codes_identical"] and 30 < fid["codec_same_codes_snr_db"] < 120
    row = results.load_records([recs["codec-dtype=bf16"]]).iloc[0]
    verdict = quality.assess(row)
    assert verdict["status"] == "passes" and "codec SNR" in verdict["why"], verdict
    row["codec_same_codes_snr_db"] = quality.MIN_CODEC_SNR_DB - 10  # a codec that loses the audio
    verdict = quality.assess(row)
    assert verdict["status"] == "fails" and "floor" in verdict["why"], verdict

def test_a_history_cut_short_is_made_again(tmp_path, tiny_pipeline):
    pipe, _ = tiny_pipeline
    meta = {"test": "cut short"}
    inputs = pipe.tokenize(["[S1] Again."])
    made = []

    def create(history_id):
        made.append(history_id)
        return fidelity.make_history(pipe, inputs, 5, SamplingParams(), 0, history_id, meta)

    first, source = fidelity.load_or_create(tmp_path, meta, create)
    assert source == "created" and first.path.is_file()
    first.path.write_bytes(first.path.read_bytes()[:100])  # a worker killed mid-write
    again, source = fidelity.load_or_create(tmp_path, meta, create)
    assert source == "created" and len(made) == 2 and torch.equal(again.delayed, first.delayed)
    # A damaged copy in the shared cache is never used either: made again, and the cache mended.
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / again.path.name).write_bytes(b"cut")
    third, source = fidelity.load_or_create(tmp_path / "run2", meta, create, shared=shared)
    assert source == "created" and len(made) == 3 and torch.equal(third.delayed, first.delayed)
    assert third.path == tmp_path / "run2" / again.path.name
    _, source = fidelity.load_or_create(tmp_path / "run3", meta, create, shared=shared)
    assert source == "cache" and len(made) == 3


def test_teacher_forcing_through_generate_gives_the_one_pass_logits(tiny_pipeline):
    """What a compiled forward is judged by: generate, each step forced to the history's token, gives
    the logits of one forward pass over the history (fp32 rounding apart) and follows the history."""
    pipe, _ = tiny_pipeline
    inputs = pipe.tokenize(["[S1] Hello there. [S2] Hi! How are you?"])
    kwargs = pipe.generation_kwargs(20, SamplingParams())
    with torch.inference_mode():
        torch.manual_seed(0)
        delayed = pipe.model.generate(**inputs, **kwargs)
        one_pass = fidelity.teacher_forced_logits(pipe.model, inputs, delayed, cfg=True)
        forced = fidelity.generate_forced_logits(pipe.model, kwargs, inputs, delayed)
    assert forced.shape == one_pass.shape == (2 * 9, delayed.shape[1] - 1, 1028)
    assert torch.allclose(forced, one_pass, atol=1e-5), (forced - one_pass).abs().max()
    assert "_get_logits_processor" not in vars(pipe.model)  # the model is left as it was
