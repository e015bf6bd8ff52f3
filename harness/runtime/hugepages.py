"""Transparent huge pages on Linux: whether the kernel offers them, whether torch's allocator asks for them,
how much of this process sits in them, and CPU buffers placed in them on purpose.

Why it matters here: a decode step streams its weights once, and in 4 KB pages every 4 KB of them is a
TLB miss and a place where the hardware prefetcher stops. On a 2-core Zen 4, taking turns in one
process, a sum over 1 GiB read 50 GB/s in 4 KB pages and 69 GB/s in 2 MB pages (medians of 10 pairs; 2
MB pages read faster in all of 6 more pairs, by 11-84%), so the roofline measures the memory in 2 MB
pages: the best the machine does. The int4=8da4w kernel gains less, being no plain sum: on that Zen 4 a
step's GEMVs alone took 16.0 ms against 14.7 ms (8%) and the whole compiled step moved by about 1%, within
the noise; on a 2-core Zen 5, taking turns step by step within each request, the compiled step took
0.964-0.984x the time in 2 MB pages in all 8 requests (tests/bench/step_ab.py --compare pages --by-step;
taken request by request, the memory's episodes had made that look like 12%). So int4=8da4w places its codes
here (`copy_of`), and the `hugepages` plugin asks torch's allocator for huge pages for everything else.
"""

from __future__ import annotations

import mmap
import re
from pathlib import Path

import torch

HUGE_PAGE = 2 << 20
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode() -> str | None:
    """The kernel's transparent-huge-page mode (always, madvise or never), or None where there are none."""
    try:
        found = re.search(r"\[(\w+)\]", THP_SETTING.read_text())
    except OSError:
        return None
    return found.group(1) if found else None


def available() -> bool:
    """Whether a buffer that asks for huge pages (madvise) can get them."""
    return thp_mode() in ("always", "madvise")


def resident_huge_bytes() -> int | None:
    """Bytes of this process's anonymous memory in huge pages now (AnonHugePages), None off Linux."""
    try:
        text = Path("/proc/self/smaps_rollup").read_text()
    except OSError:
        return None
    found = re.search(r"^AnonHugePages:\s+(\d+) kB", text, re.MULTILINE)
    return int(found.group(1)) * 1024 if found else None


def eligible(address: int) -> bool | None:
    """Whether the mapping holding `address` may be backed by huge pages (the kernel's THPeligible for it),
    None where /proc/self/smaps cannot say."""
    try:
        text = Path("/proc/self/smaps").read_text()
    except OSError:
        return None
    for block in re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", text):
        low, _, high = block.split(" ", 1)[0].partition("-")
        if int(low, 16) <= address < int(high, 16):
            found = re.search(r"^THPeligible:\s+(\d)", block, re.MULTILINE)
            return bool(int(found.group(1))) if found else None
    return None


def torch_gets_huge_pages() -> bool:
    """Whether a large tensor from torch's CPU allocator may land in huge pages: under THP_MEM_ALLOC_ENABLE=1
    (read once per process) torch advises them, and with the kernel's mode `always` every large mapping is
    eligible. Asked of the kernel for a fresh 8 MB tensor, never written, so it costs no memory."""
    probe = torch.empty(4 * HUGE_PAGE, dtype=torch.uint8)
    return bool(eligible(probe.data_ptr() + 2 * HUGE_PAGE))


def empty(numel: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A CPU tensor of `numel` elements in memory of its own, 2 MB-aligned and advised into huge pages where
    the kernel allows (else ordinary pages: the caller need not care). Its memory is unmapped when the
    last tensor viewing it is gone: torch.frombuffer holds the mapping."""
    nbytes = numel * torch.empty(0, dtype=dtype).element_size()
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    raw = torch.frombuffer(region, dtype=torch.uint8)
    start = -raw.data_ptr() % HUGE_PAGE
    if available():
        # Only the 2 MB extents the tensor covers: untouched extents cost nothing either way, and a tail
        # shorter than a huge page stays in small pages rather than holding a whole one.
        whole = nbytes // HUGE_PAGE * HUGE_PAGE
        if whole:
            region.madvise(mmap.MADV_HUGEPAGE, start, whole)
    return raw[start:start + nbytes].view(dtype)


def copy_of(t: torch.Tensor) -> torch.Tensor:
    """`t` copied into memory of its own in 2 MB pages (`empty`), where the kernel offers them and `t` spans
    at least one; else `t` itself."""
    if not available() or t.device.type != "cpu" or t.numel() * t.element_size() < HUGE_PAGE:
        return t
    return empty(t.numel(), t.dtype).view(t.shape).copy_(t)
