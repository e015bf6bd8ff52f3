"""torch's large CPU tensors in transparent huge pages (2 MB), through torch's own THP_MEM_ALLOC_ENABLE.

Not in the guide. A decode step streams its weights once per step, and in 4 KB pages every 4 KB is a TLB
miss and a place where the hardware prefetcher stops. torch reads THP_MEM_ALLOC_ENABLE once per process,
at its first allocation, so it is set before torch starts (harness/import_env.py gives such a cell its own
interpreter). It acts on what torch allocates: quantized and packed weights, caches, activations; weights
that transformers maps from a file stay in the page cache's pages (the record says how much of the
process landed in huge pages). int4=8da4w places its packed codes in huge pages itself, without it.
"""

from __future__ import annotations

from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin


class HugePages(Plugin):
    name = "hugepages"
    preserves_numerics = True  # where tensors live, not what is computed
    description = ("torch's CPU tensors of 2 MB and more in transparent huge pages (THP_MEM_ALLOC_ENABLE=1): "
                   "fewer TLB misses where a decode step streams its weights")
    expectation = Expectation(section="(not in the guide: harness/runtime/hugepages.py)",
                              note="on a 2-core Zen 4, in turns in one process: a sum over 1 GiB read 50 GB/s "
                                   "in 4 KB pages and 69 in 2 MB pages; int4=8da4w places its own codes in "
                                   "2 MB pages whether or not this plugin is on")
    devices = frozenset({"cpu"})
    order = 1  # nothing to transform: the allocator has been asking since the process started

    def availability(self, value: Any, device: str) -> str | None:
        from dia_bench.harness.runtime import hugepages

        mode = hugepages.thp_mode()
        if mode is None:
            return f"this system has no transparent huge pages ({hugepages.THP_SETTING} is missing; Linux only)"
        if mode == "never":
            return (f"transparent huge pages are off here ({hugepages.THP_SETTING} says never): "
                    "an administrator can set it to madvise")
        return None

    def process_env(self, value: Any) -> dict[str, str]:
        return {"THP_MEM_ALLOC_ENABLE": "1"}

    def transform(self, pipeline, value: Any) -> str:
        from dia_bench.harness.runtime import hugepages

        if not hugepages.torch_gets_huge_pages():
            return ("torch's large tensors are NOT eligible for huge pages: THP_MEM_ALLOC_ENABLE was read before "
                    "it was set")
        held = hugepages.resident_huge_bytes() / 1e6
        return (f"torch's large tensors land in huge pages (transparent huge pages: {hugepages.thp_mode()}); "
                f"{held:.0f} MB of the process in them after loading, before the other plugins acted")

    def report(self, pipeline, value: Any) -> dict[str, Any]:
        from dia_bench.harness.runtime import hugepages

        return {"thp_mode": hugepages.thp_mode(), "torch_gets_huge_pages": hugepages.torch_gets_huge_pages(),
                "resident_huge_bytes": hugepages.resident_huge_bytes()}


PLUGIN = HugePages
