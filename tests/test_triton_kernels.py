"""The Triton kernels of `kernels=triton` against the arithmetic they replace: DiaRMSNorm + F.linear (+ the
gated SiLU, + the residual) and grouped-query SDPA, then the whole static engine on dia-tiny.

They run on CUDA (`pytest -m cuda`), or on the CPU under Triton's interpreter where Triton is installed
(`TRITON_INTERPRET=1`, fp16: the interpreter has no bf16); CPU wheels of torch have no Triton, so CI
skips them with the reason."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dia_bench.harness.worker import triton_linear
from dia_bench.harness.worker.pipeline import SamplingParams
from dia_bench.harness.worker.static_engine import StaticEngine

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
pytestmark = [pytest.mark.skipif(triton_linear.unavailable(DEVICE) is not None,
                                 reason=str(triton_linear.unavailable(DEVICE)))]
if DEVICE == "cuda":
    pytestmark.append(pytest.mark.cuda)
DTYPE = torch.float16
TEXTS = ["[S1] Dia is an open weights text to dialogue model.", "[S1] Hi. [S2] Hello."]


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize(("n", "k"), [(96, 512), (40, 200)])  # 200: inputs not a multiple of the block
@pytest.mark.parametrize(("norm", "gated", "residual"), [(False, False, False), (True, False, False),
                                                         (False, False, True), (False, True, True)])
def test_the_linear_kernel_equals_the_modules_arithmetic(rows, n, k, norm, gated, residual):
    x, w, scale, r = _linear_inputs(rows, n, k, norm, gated, residual)
    got = triton_linear.skinny_linear(x, w, scale, 1e-5, residual=r, gated=gated)
    expected = triton_linear.reference(x, w, scale, 1e-5, residual=r, gated=gated)
    assert got.shape == expected.shape == (rows, 1, n) and got.dtype == DTYPE
    # Half-precision rounding apart (the norm's 1/rms is applied after the sums, not before).
    torch.testing.assert_close(got.float(), expected.float(), rtol=1e-2, atol=1e-2)


def test_more_rows_than_the_kernel_takes_run_the_modules_arithmetic():
    x, w, scale, r = _linear_inputs(triton_linear.MAX_ROWS + 1, 40, 64, True, False, True)
    assert torch.equal(triton_linear.skinny_linear(x, w, scale, 1e-5, residual=r),
                       triton_linear.reference(x, w, scale, 1e-5, residual=r))


def _linear_inputs(rows: int, n: int, k: int, norm: bool, gated: bool, residual: bool) -> tuple:
    g = torch.Generator().manual_seed(rows * n + k)
    x = torch.randn(rows, 1, 2 * k if gated else k, generator=g).to(DEVICE, DTYPE)
    w = (torch.randn(n, k, generator=g) / k ** 0.5).to(DEVICE, DTYPE)
    scale = (torch.rand(k, generator=g) + 0.5).to(DEVICE, DTYPE) if norm else None
    r = torch.randn(rows, 1, n, generator=g).to(DEVICE, DTYPE) if residual else None
    return x, w, scale, r


@pytest.mark.parametrize(("rows", "kv_heads", "group", "keys", "mask_rows"),
                         [(2, 4, 4, 70, 1), (3, 16, 1, 33, 3), (32, 2, 2, 130, 1)])
def test_the_attention_kernel_equals_grouped_query_sdpa_reading_the_cache_in_place(rows, kv_heads, group, keys,
                                                                                    mask_rows):
    from dia_bench.harness.worker.triton_attention import decode_attention

    g = torch.Generator().manual_seed(keys)
    dim = 16
    q = torch.randn(rows, kv_heads, group, dim, generator=g).to(DEVICE, DTYPE)
    cache = torch.randn(2, rows, kv_heads, keys + 20, dim, generator=g).to(DEVICE, DTYPE)
    k, v = cache[0, :, :, :keys], cache[1, :, :, :keys]  # a view of a longer cache, as a step reads it
    mask = torch.zeros(mask_rows, keys)
    mask[:, keys // 2:] = torch.finfo(DTYPE).min
    mask[0, :3] = torch.finfo(DTYPE).min
    mask = mask.to(DEVICE, DTYPE)
    got = decode_attention(q, k, v, mask, dim ** -0.5)
    expected = F.scaled_dot_product_attention(
        q.reshape(rows, kv_heads * group, 1, dim).float(), k.float().repeat_interleave(group, 1),
        v.float().repeat_interleave(group, 1), attn_mask=mask.float()[:, None, None, :], scale=dim ** -0.5)
    torch.testing.assert_close(got.reshape(rows, kv_heads * group, dim).float(), expected[:, :, 0],
                               rtol=2e-3, atol=2e-3)


@pytest.fixture(scope="module")
def half_pipeline():
    from dia_bench.harness.worker.measure import load_pipeline
    from tests.conftest import tiny_cell

    pipe, _ = load_pipeline(tiny_cell(device=DEVICE))
    pipe.model.to(DTYPE)
    return pipe


def _codes(pipe, engine: StaticEngine, frames: int = 12) -> torch.Tensor:
    pipe.engine = engine
    pipe.generate_kwargs["do_sample"] = False
    try:
        with torch.inference_mode():
            return pipe.generate(pipe.tokenize(TEXTS), frames, SamplingParams(), 0)
    finally:
        pipe.engine = None
        pipe.generate_kwargs.pop("do_sample", None)


def test_the_engine_through_the_kernels_gives_the_modules_codes_and_logits(half_pipeline):
    pipe = half_pipeline
    plain = StaticEngine(pipe, fuse_qkv=True)
    triton_step = StaticEngine(pipe, fuse_qkv=True)
    assert "Triton" in triton_step.use_kernels("triton")
    assert triton_step.describe()["attention"] == "triton" and triton_step.describe()["kernels"] == "triton"
    expected = _codes(pipe, plain)
    assert torch.equal(_codes(pipe, triton_step), expected)
    inputs = pipe.tokenize(TEXTS[:1])
    kwargs = pipe.generation_kwargs(12, SamplingParams())
    with torch.inference_mode():
        got = triton_step.teacher_forced_logits(inputs, expected[:1], kwargs)
        want = plain.teacher_forced_logits(inputs, expected[:1], kwargs)
    torch.testing.assert_close(got, want, rtol=1e-2, atol=1e-2)
    if DEVICE == "cuda":  # the shapes the engine ran were tuned, each against cuBLAS
        assert triton_step.tuning and all(t["us"] > 0 and t["cublas_us"] > 0 for t in triton_step.tuning)
        compiled = StaticEngine(pipe, fuse_qkv=True)
        compiled.use_kernels("triton")
        compiled.compile("reduce-overhead")
        assert torch.equal(_codes(pipe, compiled), expected)


def test_a_model_the_kernels_do_not_fit_is_refused_with_the_reason(half_pipeline):
    pipe = half_pipeline
    pipe.model.to(torch.float32)
    try:
        with pytest.raises(ValueError, match="add dtype=bf16"):
            StaticEngine(pipe).use_kernels("triton")
    finally:
        pipe.model.to(DTYPE)
