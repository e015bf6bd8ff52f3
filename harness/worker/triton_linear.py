"""A Linear layer for the few rows of a decode step, written in Triton, with the step's neighbours folded in.

On an H200 the static engine's bf16 step spent 1.19 ms of 1.91 in cuBLAS GEMMs whose bytes need 0.62:
for 2 rows (one request with CFG) cuBLAS reads a 2048x2048 weight at 1.5 TB/s of 4.8, because its
kernels tile for rows it does not have and leave most of the GPU idle. Here each program owns a few
output features and streams their weights once for all the rows, multiplying on the CUDA cores
(for 2 rows a tensor-core tile would be 16 rows of padding), so a 2048-wide layer spreads over every
SM. What sits between the GEMMs goes into them, each a kernel fewer a layer: the RMSNorm before a
layer (its weight multiplies the input as it is read, the 1/rms per row scales the sums at the end,
where it factors out), the gated SiLU before the MLP's down projection, and the residual add after
a layer. Above MAX_ROWS the rows' products cost the CUDA cores more than the bytes cost the bus, and
the layer is the modules' own arithmetic (cuBLAS and inductor's kernels).

The first version padded the rows to a 16-row tensor-core tile and was tuned call by call with
Triton's `do_bench`: in the H200's step it took 3.57 ms against cuBLAS's 1.90 (its prologues computed
8 times the rows there are, and `do_bench` timed the host's launches, not the kernels;
reference-results/2026-11-27-h200-triton-kernels/).

`torch.ops.dia_bench.skinny_linear` is a `triton_op`, so torch.compile keeps it in the step's graph and
a CUDA graph captures it. Block sizes come from `tune` (each candidate timed in a CUDA graph, as the
step runs it, once per shape), else from a rule that gives every SM work.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton
except ImportError:  # CPU wheels of torch come without Triton; unavailable() says so
    triton = None

MAX_ROWS = 4  # batch 2 with CFG; above it, the modules' arithmetic


@dataclass(frozen=True)
class Blocks:
    n: int  # output features a program owns
    k: int  # inputs read per iteration
    warps: int = 4
    stages: int = 4  # iterations whose loads are in flight at once, plus one


_TUNED: dict[tuple, Blocks] = {}
# Registers per thread for the products: rows x n x k / (32 x warps) fp32 values, 64 at most at 2 rows
# (no spills at 4 rows either, compiled for sm_90). Bytes in flight a program: n x k x 2 x (stages - 1).
CANDIDATES = [Blocks(4, 512), Blocks(8, 256), Blocks(8, 512, 8), Blocks(16, 256, 8), Blocks(8, 256, 4, 6),
              Blocks(16, 512, 8, 3), Blocks(32, 256, 8, 3)]


def unavailable(device: torch.device | str = "cuda") -> str | None:
    """Why the kernel cannot run on `device`, or None."""
    if triton is None:
        return "Triton is not installed (it comes with torch's CUDA wheels)"
    if torch.device(device).type != "cuda" and os.environ.get("TRITON_INTERPRET") != "1":
        return "Triton kernels run on CUDA here (or on the CPU under TRITON_INTERPRET=1)"
    return None


def padded_rows(rows: int) -> int:
    return 1 << (rows - 1).bit_length()


def _key(rows: int, n: int, k: int, norm: bool, gated: bool, residual: bool) -> tuple:
    return (padded_rows(rows), n, k, norm, gated, residual)


def default_blocks(n: int, k: int) -> Blocks:
    """Without tuning: the widest block that still leaves two programs per SM."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132
    for width in (16, 8):
        if -(-n // width) >= 2 * sms:
            return Blocks(width, 256, 8 if width == 16 else 4)
    return Blocks(4, 512)


def blocks_for(rows: int, n: int, k: int, norm: bool, gated: bool, residual: bool) -> Blocks:
    return _TUNED.get(_key(rows, n, k, norm, gated, residual)) or default_blocks(n, k)


if triton is not None:

    @triton.jit
    def _gemv_kernel(x_ptr, w_ptr, y_ptr, g_ptr, r_ptr, M, N, K, stride_x, stride_w, stride_y, stride_r, eps,
                     ROWS: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                     NORM: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr, EVEN_K: tl.constexpr,
                     STAGES: tl.constexpr):
        rm = tl.arange(0, ROWS)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        row_ok = rm[:, None] < M
        n_ok = rn[:, None] < N
        # Products summed along k only once, after the loop: (rows, n, k) partial sums in registers.
        acc = tl.zeros((ROWS, BLOCK_N, BLOCK_K), dtype=tl.float32)
        squares = tl.zeros((ROWS, BLOCK_K), dtype=tl.float32)
        # Loads run STAGES - 1 iterations ahead (cp.async into shared memory): with a grid of a few
        # programs an SM, that is what keeps enough bytes in flight to stream the weights at the bus's rate.
        for k0 in tl.range(0, K, BLOCK_K, num_stages=STAGES):
            kk = k0 + rk
            x_ok = row_ok if EVEN_K else row_ok & (kk[None, :] < K)
            x_at = x_ptr + rm[:, None] * stride_x + kk[None, :]
            if GATED:  # the input is [gate | up], 2K wide: up * silu(gate), rounded as DiaMLP rounds it
                gate = tl.load(x_at, mask=x_ok, other=0.0).to(tl.float32)
                up = tl.load(x_at + K, mask=x_ok, other=0.0)
                act = (gate * tl.sigmoid(gate)).to(up.dtype)
                x = (up.to(tl.float32) * act.to(tl.float32)).to(up.dtype).to(tl.float32)
            else:
                x = tl.load(x_at, mask=x_ok, other=0.0).to(tl.float32)
            if NORM:
                squares += x * x
                g = tl.load(g_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
                x = (x * g[None, :]).to(w_ptr.dtype.element_ty).to(tl.float32)
            w_ok = n_ok if EVEN_K else n_ok & (kk[None, :] < K)
            w = tl.load(w_ptr + rn[:, None] * stride_w + kk[None, :], mask=w_ok, other=0.0).to(tl.float32)
            acc += x[:, None, :] * w[None, :, :]
        out = tl.sum(acc, axis=2)
        if NORM:  # W (g * x / rms) = (W (g * x)) / rms, one scale per row; fp32 again (inductor passes fp64)
            out = out * tl.rsqrt(tl.sum(squares, axis=1) / K + eps).to(tl.float32)[:, None]
        y = out.to(y_ptr.dtype.element_ty)
        y_ok = row_ok & (rn[None, :] < N)
        if RESIDUAL:  # x + layer(x) in the activations' dtype, as the decoder adds them
            r = tl.load(r_ptr + rm[:, None] * stride_r + rn[None, :], mask=y_ok, other=0.0)
            y = (r.to(tl.float32) + y.to(tl.float32)).to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + rm[:, None] * stride_y + rn[None, :], y, mask=y_ok)

    @triton_op("dia_bench::skinny_linear", mutates_args={})
    def _skinny_linear(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None,
                       residual: torch.Tensor | None, gated: bool, eps: float) -> torch.Tensor:
        rows = x.reshape(-1, x.shape[-1])
        n, k = weight.shape
        m = rows.shape[0]
        out = torch.empty((m, n), dtype=x.dtype, device=x.device)
        res = residual.reshape(m, n) if residual is not None else out
        b = blocks_for(m, n, k, norm_weight is not None, gated, residual is not None)
        wrap_triton(_gemv_kernel)[(triton.cdiv(n, b.n),)](
            rows, weight, out, norm_weight if norm_weight is not None else weight, res, m, n, k,
            rows.stride(0), weight.stride(0), out.stride(0), res.stride(0), eps,
            ROWS=padded_rows(m), BLOCK_N=b.n, BLOCK_K=b.k, NORM=norm_weight is not None, GATED=gated,
            RESIDUAL=residual is not None, EVEN_K=k % b.k == 0, STAGES=b.stages, num_warps=b.warps,
            num_stages=b.stages)
        return out.reshape(*x.shape[:-1], n)


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None = None,
                  eps: float = 1e-6, residual: torch.Tensor | None = None, gated: bool = False) -> torch.Tensor:
    """`residual + (norm(x) or x) @ weight.T`. `norm_weight`: an RMSNorm (weight, eps) applied to x first.
    `gated`: x is [gate | up] (2 x weight's inputs wide) and the layer reads up * silu(gate). Up to
    MAX_ROWS rows of x through the Triton kernel, more through `reference`. The last dimension of x
    must be contiguous, as must weight's rows."""
    if x.numel() // x.shape[-1] > MAX_ROWS:
        return reference(x, weight, norm_weight, eps, residual, gated)
    return torch.ops.dia_bench.skinny_linear(x.contiguous(), weight, norm_weight, residual, gated, eps)


def reference(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None = None,
              eps: float = 1e-6, residual: torch.Tensor | None = None, gated: bool = False) -> torch.Tensor:
    """What `skinny_linear` computes, in the modules' own arithmetic (DiaRMSNorm, DiaMLP, F.linear)."""
    if gated:
        gate, up = x.chunk(2, dim=-1)
        x = up * torch.nn.functional.silu(gate)
    if norm_weight is not None:
        xf = x.float()
        x = norm_weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)).to(x.dtype)
    y = torch.nn.functional.linear(x, weight)
    return y if residual is None else residual + y


def tune(rows: int, n: int, k: int, norm: bool = False, gated: bool = False, residual: bool = False,
         candidates: list[Blocks] | None = None) -> dict:
    """Times each candidate's blocks for this shape as the step's CUDA graph runs them (graph_timer: calls
    back to back, weights read from memory) and keeps the fastest for the kernel to use; cuBLAS's F.linear
    is timed the same way beside them. Returns the times in us, the kept blocks and cuBLAS's time."""
    from dia_bench.harness.worker.graph_timer import copies_for, graph_time_us

    device, dtype = torch.device("cuda"), torch.bfloat16
    x = torch.randn(rows, 2 * k if gated else k, device=device, dtype=dtype)
    copies = copies_for(n * k * 2)
    weights = [torch.randn(n, k, device=device, dtype=dtype) / k ** 0.5 for _ in range(copies)]
    g = torch.rand(k, device=device, dtype=dtype) + 0.5 if norm else None
    r = torch.randn(rows, n, device=device, dtype=dtype) if residual else None
    key = _key(rows, n, k, norm, gated, residual)
    times = {}
    for b in candidates or CANDIDATES:
        _TUNED[key] = b
        try:
            times[b] = graph_time_us(lambda w: skinny_linear(x, w, g, residual=r, gated=gated), weights)
        except Exception:  # a block shape this GPU cannot run (registers, shared memory) is no candidate
            continue
    best = min(times, key=times.get)
    _TUNED[key] = best
    xin = x.chunk(2, dim=-1)[1] if gated else x
    cublas = graph_time_us(lambda w: torch.nn.functional.linear(xin, w), weights)
    return {"shape": [rows, n, k], "norm": norm, "gated": gated, "residual": residual,
            "blocks": vars(best), "us": round(times[best], 2), "cublas_us": round(cublas, 2),
            "gb_per_s": round(n * k * 2 / times[best] / 1000, 1),
            "tried": {f"{b.n}x{b.k}/{b.warps}": round(t, 2) for b, t in times.items()}}
