"""IPEX for real: ipex.optimize on the dia-tiny pipeline, measured like every plugin.

Runs only where IPEX can load (`nox -s bench-stack-torch-2.8-ipex`: torch 2.8 beside
intel-extension-for-pytorch 2.8); elsewhere these tests skip with the plugin's own reason.
"""

from __future__ import annotations

import pytest

from dia_bench.harness.driver.launcher import run_isolated
from dia_bench.optimizations.registry import resolve
from tests.conftest import tiny_cell

REASONS = resolve(["ipex"], "cpu").unavailable("cpu")
pytestmark = [pytest.mark.ipex, pytest.mark.skipif(bool(REASONS), reason="; ".join(REASONS))]


def _run(plugins: list[str]) -> dict:
    rec = run_isolated(tiny_cell(plugins=plugins, repeats=3), timeout_s=600)
    assert rec["status"] == "ok", rec.get("reason")
    return rec


def test_ipex_replaces_the_linear_layers_and_keeps_the_output():
    rec = _run(["ipex"])
    modules = rec["plugin_reports"]["ipex"]["ipex_modules"]
    # Every decoder and encoder projection becomes IPEX's prepacked Linear.
    assert sum(modules.values()) > 10, modules
    assert "ipex.optimize (float32) replaced" in rec["plugin_notes"]["ipex"]
    # IPEX runs on any x86 CPU; the note says so where this one is not Intel, and only there.
    from dia_bench.harness.env import cpu_info
    from dia_bench.optimizations.ipex import _is_intel

    assert ("is not Intel" in rec["plugin_notes"]["ipex"]) == (not _is_intel(cpu_info()))
    fid = rec["fidelity"]
    assert fid["compared"] and fid["sampled"]["total_variation"] < 0.05, fid["sampled"]
    assert rec["audio_sha256"]


def test_ipex_runs_in_bf16_where_the_weights_are_bf16():
    rec = _run(["dtype=bf16", "ipex"])
    assert "ipex.optimize (bfloat16)" in rec["plugin_notes"]["ipex"]
    assert sum(rec["plugin_reports"]["ipex"]["ipex_modules"].values()) > 10


def test_ipex_after_int8_leaves_the_quantized_layers_to_torch():
    rec = _run(["int8=dynamic", "ipex"])
    kinds = rec["plugin_reports"]["int8=dynamic"]["linear_kinds"]
    assert kinds["torch.ao.nn.quantized.dynamic.modules.linear.Linear"] > 0
    assert rec["fidelity"]["compared"]


def test_the_record_names_the_stack_and_ipex_version():
    rec = _run(["ipex"])
    sw = rec["env"]["software"]
    assert sw["packages"]["intel-extension-for-pytorch"].startswith(sw["torch"].split("+")[0].rsplit(".", 1)[0])
    assert rec["plugin_reports"]["ipex"]["ipex"] == sw["packages"]["intel-extension-for-pytorch"]
