"""Transparent huge pages: buffers placed in them, torch's allocator asked for them by the `hugepages`
plugin (in the worker's own process, before torch starts), and the roofline measuring memory in them."""

from __future__ import annotations

import pytest
import torch

from dia_bench.harness.runtime import hugepages
from dia_bench.optimizations.registry import all_plugins
from tests.test_plugins import run_ok

needs_thp = pytest.mark.skipif(not hugepages.available(), reason="this kernel offers no transparent huge pages")


@needs_thp
def test_a_buffer_placed_in_huge_pages_is_eligible_aligned_and_usable():
    x = hugepages.empty(3 * hugepages.HUGE_PAGE // 4 + 5)  # 1.5 huge pages of fp32, and a ragged tail
    assert x.data_ptr() % hugepages.HUGE_PAGE == 0 and x.dtype == torch.float32
    x.copy_(torch.arange(x.numel(), dtype=torch.float32))
    assert hugepages.eligible(x.data_ptr()) is True
    assert x[-1].item() == x.numel() - 1
    # An ordinary allocation of this process is not, unless torch was told to ask (the plugin's test).
    assert hugepages.eligible(torch.empty(8 * hugepages.HUGE_PAGE, dtype=torch.uint8).data_ptr()) is (
        hugepages.thp_mode() == "always" or hugepages.torch_gets_huge_pages())


@needs_thp
def test_a_copy_in_huge_pages_is_made_of_a_tensor_of_one_or_more_and_not_of_a_smaller_one():
    big = torch.arange(hugepages.HUGE_PAGE // 2, dtype=torch.int32)  # 4 MB
    placed = hugepages.copy_of(big)
    assert placed.data_ptr() != big.data_ptr() and torch.equal(placed, big)
    assert hugepages.eligible(placed.data_ptr()) is True
    small = torch.ones(1000)
    assert hugepages.copy_of(small) is small  # a tail shorter than a huge page would stay in small pages anyway


@needs_thp
def test_the_plugin_has_torch_allocate_in_huge_pages_in_the_worker_and_changes_no_output():
    rec = run_ok(plugins=["hugepages", "int4=8da4w-32"])
    report = rec["plugin_reports"]["hugepages"]
    assert report["torch_gets_huge_pages"] is True and report["thp_mode"] == hugepages.thp_mode()
    assert "land in huge pages" in rec["plugin_notes"]["hugepages"]
    plain = run_ok(plugins=["int4=8da4w-32"])
    assert rec["audio_sha256"] == plain["audio_sha256"]  # where the weights live changes no arithmetic
    assert "in 2 MB pages" in rec["roofline"]["bandwidth_method"]


def test_the_plugin_says_why_where_huge_pages_are_off(tmp_path, monkeypatch):
    setting = tmp_path / "enabled"
    setting.write_text("always madvise [never]\n")
    monkeypatch.setattr(hugepages, "THP_SETTING", setting)
    plugin = all_plugins()["hugepages"]
    assert "says never" in plugin.availability(None, "cpu")
    monkeypatch.setattr(hugepages, "THP_SETTING", tmp_path / "missing")
    assert "Linux only" in plugin.availability(None, "cpu")
    assert hugepages.empty(10).numel() == 10  # still a buffer, in ordinary pages
