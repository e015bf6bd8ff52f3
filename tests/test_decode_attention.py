"""dia-bench's CPU attention kernel for one query (harness/kernels/decode_attention.c) against the same
attention in float64: grouped heads, a cache read through a slice of a longer buffer, masks shared and
per row, masked positions, and a plain-C build beside this machine's."""

from __future__ import annotations

import pytest
import torch

from dia_bench.harness.kernels import decode_attention, ops
from tests.conftest import needs_cpu


def _expected(q, k, v, mask, scale):
    q, k, v, mask = (t.double() for t in (q, k, v, mask))
    scores = torch.einsum("rhgd,rhtd->rhgt", q, k) * scale + mask[:, None, None, :]
    return torch.einsum("rhgt,rhtd->rhgd", scores.softmax(-1), v).float()


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("rows", "kv_heads", "groups", "dim", "length", "per_row"),
                         [(2, 4, 4, 128, 1, False), (2, 4, 4, 128, 301, False), (2, 16, 1, 128, 45, True),
                          (3, 16, 1, 16, 37, True),
                          (1, 2, 2, 8, 5, True)])
def test_the_kernel_equals_attention_in_float64(rows, kv_heads, groups, dim, length, per_row, kv_dtype):
    """A bf16 cache is widened exactly as it is read: the same float64 answer on its rounded values."""
    g = torch.Generator().manual_seed(rows * 1000 + length)
    q = torch.randn(rows, kv_heads, groups, dim, generator=g)
    cache = length + 7  # the engine's keys are the first positions of a buffer allocated for the request
    k, v = (torch.randn(rows, kv_heads, cache, dim, generator=g).to(kv_dtype)[:, :, :length] for _ in range(2))
    mask = torch.zeros(rows if per_row else 1, length)
    if length > 1:  # positions a row may not see: the largest negative float, as the engine's masks hold
        mask[-1, length // 2:] = torch.finfo(torch.float32).min
    out = decode_attention.attend(q, k, v, mask, dim ** -0.5)
    torch.testing.assert_close(out, _expected(q, k, v, mask.expand(rows, length), dim ** -0.5), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16])
def test_positions_no_row_may_see_are_not_read(kv_dtype):
    """A compiled step attends over the whole cache allocated for its request, the unwritten positions
    masked: those, and any masked before a row's first position, are not read. Not-a-number keys and
    values there leave the answer as it is without them; a row that may see nothing weighs all alike."""
    g = torch.Generator().manual_seed(11)
    q = torch.randn(3, 4, 4, 128, generator=g)
    k, v = (torch.randn(3, 4, 40, 128, generator=g).to(kv_dtype) for _ in range(2))
    mask = torch.zeros(3, 40)
    low = torch.finfo(torch.float32).min
    mask[0, 25:] = low  # positions not written yet
    mask[1, :6], mask[1, 30:] = low, low  # padding before the text, and after it
    mask[1, 12] = low  # a masked position between two a row sees is read as before
    mask[2, :] = low
    expected = _expected(q, k, v, mask, 0.1)
    for r, unseen in ((0, slice(25, None)), (1, slice(None, 6)), (1, slice(30, None))):
        k[r, :, unseen], v[r, :, unseen] = float("nan"), float("nan")
    out = decode_attention.attend(q, k, v, mask, 0.1)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


# The builds the kernel can be forced into, with the CPU flags each needs: gcc lowers its vector code to
# AVX-512 registers, pairs of AVX2 registers or plain C. Every one this CPU can run is tested.
BUILDS = {"x86-64-v4": ("avx512f", "avx512bw", "avx512vl", "avx512dq", "avx512cd"),
          "haswell": ("avx2", "fma", "bmi2", "f16c"),
          "x86-64": ()}


@pytest.mark.parametrize("kv_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize(("groups", "dim"), [(4, 32), (4, 128), (1, 128)])
@pytest.mark.parametrize("march", list(BUILDS))
def test_each_build_gives_the_same_attention(march, groups, dim, kv_dtype):
    """The builds for AVX-512, AVX2 and processors without AVX beside this machine's: the same arithmetic,
    through the library's own entry point, for both cache dtypes, in the generic body (dim 32) and in
    the paths arranged for Dia's 128-wide heads (self-attention's 4 queries a head, cross-attention's 1)."""
    import ctypes

    needs_cpu(*BUILDS[march])
    lib = decode_attention.library(march)
    g = torch.Generator().manual_seed(7)
    q = torch.randn(2, 4, groups, dim, generator=g)
    k, v = (torch.randn(2, 4, 51, dim, generator=g).to(kv_dtype) for _ in range(2))
    mask, out = torch.zeros(1, 51), torch.empty(2, 4, groups, dim)
    mask[0, 41:] = torch.finfo(torch.float32).min  # 41 positions read: pairs, then one alone
    assert lib.decode_attention(q.data_ptr(), k.data_ptr(), k.stride(0), k.stride(1), v.data_ptr(), v.stride(0),
                                v.stride(1), mask.data_ptr(), 0, out.data_ptr(), 2, 4, groups, dim, 51,
                                ctypes.c_float(0.25), int(kv_dtype == torch.bfloat16)) == 0
    torch.testing.assert_close(out, _expected(q, k, v, mask.expand(2, 51), 0.25), rtol=1e-5, atol=1e-5)


def test_keys_it_cannot_read_are_refused():
    if decode_attention.operator() == "C++ operator" and torch.__version__ < ops.REFUSALS_REACH_PYTHON_SINCE:
        pytest.skip(f"torch {torch.__version__}: a C++ operator's refusal ends the process")
    q = torch.zeros(1, 1, 1, 8)
    with pytest.raises(RuntimeError, match="positions contiguous"):
        decode_attention.attend(q, torch.zeros(1, 1, 4, 8).transpose(2, 3).contiguous().transpose(2, 3),
                                torch.zeros(1, 1, 4, 8), torch.zeros(1, 4), 1.0)
    with pytest.raises(RuntimeError, match="one dtype"):  # keys in bf16, values in fp32
        decode_attention.attend(q, torch.zeros(1, 1, 4, 8, dtype=torch.bfloat16), torch.zeros(1, 1, 4, 8),
                                torch.zeros(1, 4), 1.0)
