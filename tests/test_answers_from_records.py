"""Answers read from committed records: the guide's GPU rows from H200 records beside a CPU run (no GPU
needed), recommendations only with evidence, and the same answers as JSON.

What a user reads after a GPU machine measured: the guide's GPU claims with verdicts, "GPU over CPU" at
batch 1 once both devices measured dia-1.6b, and a recommendation for each device.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dia_bench.harness.analysis import quality, results
from dia_bench.reports import as_json, recommend, verdicts
from tests.conftest import cli, run_cli

REFERENCE = Path(__file__).resolve().parent.parent / "reference-results"
GPU_RUN = REFERENCE / "2026-11-27-h200-gpu-engine"
CPU_RUN = REFERENCE / "2026-11-28-zen4-engine-cpu"
VERDICTS = ("below", "above", "reproduced", "inconclusive")


def _rows() -> list[dict]:
    return verdicts.speedup_rows(results.load([GPU_RUN, CPU_RUN]))


def test_the_guides_gpu_claims_get_a_verdict_from_gpu_records():
    rows = _rows()
    half = next(r for r in rows if r["technique"] == "FP16/BF16" and r["device"] == "cuda")
    assert half["measured"] is not None and half["verdict"].startswith(VERDICTS), half
    assert "/cuda/" in half["cell"] and "dtype=bf16" in half["cell"]
    # A claim the run did not measure says so, on the device it is about.
    flash = next(r for r in rows if r["technique"] == "Flash Attention" and r["device"] == "cuda")
    assert flash["verdict"].startswith("not measured")


@pytest.mark.parametrize("max_tv", [quality.DEFAULT_MAX_TOTAL_VARIATION, 10.0])
def test_gpu_over_cpu_is_one_comparison_of_batch_1_cells_on_both_devices(max_tv):
    """With the quality bar lifted, the H200 run's batch-16 bf16 cell has the lowest RTF of all: a
    batch's aggregate still never stands for a single request."""
    rows = [r for r in verdicts.speedup_rows(results.load([GPU_RUN, CPU_RUN]), max_tv)
            if r["technique"] == "GPU over CPU"]
    assert len(rows) == 1
    (row,) = rows
    assert row["measured"] is not None and row["verdict"].startswith(VERDICTS), row
    gpu_cell, cpu_cell = row["cell"].split(" vs ")
    assert "/cuda/" in gpu_cell and gpu_cell.split(" ")[0].endswith("/b1")
    assert "/cpu/" in cpu_cell and cpu_cell.split(" ")[0].endswith("/b1")
    # One device alone cannot answer it.
    (alone,) = [r for r in verdicts.speedup_rows(results.load([CPU_RUN])) if r["technique"] == "GPU over CPU"]
    assert alone["measured"] is None and alone["verdict"].startswith("not measured")


def test_recommend_gives_one_recommendation_per_device():
    rows = recommend.recommendations(results.load([GPU_RUN, CPU_RUN]))
    assert {r["device"] for r in rows} == {"cuda", "cpu"}
    markdown = recommend.render_markdown([GPU_RUN, CPU_RUN])
    assert "NVIDIA H200" in markdown and "| cuda |" in markdown and "| cpu |" in markdown


def test_recommend_puts_forward_only_configurations_whose_quality_was_judged():
    """The Zen 4 engine run measured no fidelity: its faster cells are listed apart as not verified, and
    the recommendation is what the evidence supports, the reference itself."""
    (row,) = recommend.recommendations(results.load([CPU_RUN]))
    assert row["settings"] == "baseline" and row["quality"] == "reference"
    assert 1 <= len(row["unverified"]) <= recommend.UNVERIFIED_SHOWN + 1
    assert all("quality not verified" in t for t in row["unverified"][:recommend.UNVERIFIED_SHOWN])
    markdown = recommend.render_markdown([CPU_RUN])
    head, _, rest = markdown.partition("Fastest, quality not verified")
    assert "int4" not in head and "int4" in rest  # never under the quality bar's header


def test_report_and_recommend_give_their_answers_as_json(tmp_path):
    """The same tables and verdicts as the pages, as data: every figure with its interval, every cell's
    quality with its reason, strict JSON (no NaN) that a CI job can read."""
    report = tmp_path / "report.json"
    assert cli("report", str(GPU_RUN), str(CPU_RUN), "--format", "json", "-o", str(report)).returncode == 0
    doc = json.loads(report.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in strict JSON"))
    assert doc["format"] == as_json.FORMAT and doc["kind"] == "report"
    assert doc["quality_bar"]["recommendable"] == list(quality.RECOMMENDABLE)
    ok = [c for c in doc["cells"] if c["status"] == "ok"]
    assert ok and all(c["quality"]["status"] and c["quality"]["why"] for c in ok)
    timed = [c for c in ok if c["rtf_ci_low"] is not None]
    assert timed and all(c["rtf_ci_low"] <= c["rtf"] <= c["rtf_ci_high"] for c in timed)
    (gpu_over_cpu,) = [g for g in doc["guide_speedups"] if g["technique"] == "GPU over CPU"]
    assert gpu_over_cpu["low"] <= gpu_over_cpu["measured"] <= gpu_over_cpu["high"]

    rec = tmp_path / "recommend.json"
    assert cli("recommend", str(CPU_RUN), "--format", "json", "-o", str(rec)).returncode == 0
    (row,) = json.loads(rec.read_text())["recommendations"]
    assert row["settings"] == "baseline" and row["unverified"]


def test_two_formats_at_once_are_refused_in_one_line():
    result = run_cli("report", str(CPU_RUN), "--markdown", "--format", "json")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "--markdown and --format json ask for two formats" in result.stderr.strip().splitlines()[-1]


def test_the_guide_verdicts_are_drawn_as_one_picture():
    """Each measured claim: the guide's range, the measured interval over it, coloured by verdict. A run
    that measured none of the guide's claims has no such picture."""
    from dia_bench.reports import charts

    rows = [r for r in verdicts.speedup_rows(results.load([GPU_RUN, CPU_RUN])) if r["measured"] is not None]
    svg = charts.guide_forest(rows)
    assert svg is not None and svg.startswith("data:image/svg+xml;base64,")
    assert charts.guide_forest([r for r in verdicts.speedup_rows(results.load([CPU_RUN]))
                                if r["technique"] == "GPU over CPU"]) is None
