"""A Linear layer for the few rows of a decode step, written in Triton, with the step's neighbours folded in.

On an H200 the static engine's bf16 step spent 1.19 ms of 1.91 in cuBLAS GEMMs whose bytes need 0.62:
for 2 rows (one request with CFG) cuBLAS reads a 2048x2048 weight at 1.5 TB/s of 4.8, because its
kernels tile for rows it does not have and leave most of the GPU idle. Here each program owns a few
output features and streams their weights once for all the rows (padded to one tensor-core tile), so
a 2048-wide layer spreads over every SM. What sits between the GEMMs goes into them, each a kernel
fewer a layer: the RMSNorm before a layer (its weight multiplies the input as it is read, the
1/rms per row scales the sums at the end, where it factors out), the gated SiLU before the MLP's
down projection, and the residual add after a layer.

`torch.ops.dia_bench.skinny_linear` is a `triton_op`, so torch.compile keeps it in the step's graph and
a CUDA graph captures it. Block sizes come from `tune` (each candidate timed on the device, once per
shape), else from a rule that gives every SM work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

try:
    import triton
    import triton.language as tl
    from torch.library import triton_op, wrap_triton
except ImportError:  # CPU wheels of torch come without Triton; unavailable() says so
    triton = None

MAX_ROWS = 32  # one tensor-core tile of rows at most: above it cuBLAS's own tiles pay off


@dataclass(frozen=True)
class Blocks:
    n: int  # output features a program owns
    k: int  # inputs read per iteration
    warps: int = 4
    stages: int = 4


_TUNED: dict[tuple, Blocks] = {}
CANDIDATES = [Blocks(n, k) for n in (16, 32, 64) for k in (128, 256)]


def unavailable(device: torch.device | str = "cuda") -> str | None:
    """Why the kernel cannot run on `device`, or None."""
    if triton is None:
        return "Triton is not installed (it comes with torch's CUDA wheels)"
    if torch.device(device).type != "cuda" and not _interpreted():
        return "Triton kernels run on CUDA here (or on the CPU under TRITON_INTERPRET=1)"
    return None


def _interpreted() -> bool:
    import os

    return os.environ.get("TRITON_INTERPRET") == "1"


def block_rows(rows: int) -> int:
    """Rows as the kernel pads them: tensor-core tiles are 16 rows at least."""
    return 16 if rows <= 16 else 32


def _key(rows: int, n: int, k: int, norm: bool, gated: bool, residual: bool) -> tuple:
    return (block_rows(rows), n, k, norm, gated, residual)


def default_blocks(n: int, k: int) -> Blocks:
    """Without tuning: the widest block that still leaves two programs per SM, wide reads along k."""
    sms = torch.cuda.get_device_properties(0).multi_processor_count if torch.cuda.is_available() else 132
    for width in (64, 32):
        if triton.cdiv(n, width) >= 2 * sms:
            return Blocks(width, 128)
    return Blocks(16, 256)


def blocks_for(rows: int, n: int, k: int, norm: bool, gated: bool, residual: bool) -> Blocks:
    return _TUNED.get(_key(rows, n, k, norm, gated, residual)) or default_blocks(n, k)


if triton is not None:

    @triton.jit
    def _skinny_kernel(x_ptr, w_ptr, y_ptr, g_ptr, r_ptr, M, N, K, stride_x, stride_w, stride_y, stride_r, eps,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       NORM: tl.constexpr, GATED: tl.constexpr, RESIDUAL: tl.constexpr, EVEN_K: tl.constexpr):
        rm = tl.arange(0, BLOCK_M)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        row_ok = rm[:, None] < M
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        squares = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
        for k0 in range(0, K, BLOCK_K):
            kk = k0 + rk
            x_ok = row_ok if EVEN_K else row_ok & (kk[None, :] < K)
            x_at = x_ptr + rm[:, None] * stride_x + kk[None, :]
            if GATED:  # the input is [gate | up], 2K wide: up * silu(gate), rounded as DiaMLP rounds it
                gate = tl.load(x_at, mask=x_ok, other=0.0).to(tl.float32)
                up = tl.load(x_at + K, mask=x_ok, other=0.0)
                act = (gate * tl.sigmoid(gate)).to(up.dtype)
                x = (up.to(tl.float32) * act.to(tl.float32)).to(up.dtype)
            else:
                x = tl.load(x_at, mask=x_ok, other=0.0)
            if NORM:
                xf = x.to(tl.float32)
                squares += xf * xf
                g = tl.load(g_ptr + kk, mask=kk < K, other=0.0).to(tl.float32)
                x = (xf * g[None, :]).to(w_ptr.dtype.element_ty)
            w_ok = rn[:, None] < N if EVEN_K else (rn[:, None] < N) & (kk[None, :] < K)
            w = tl.load(w_ptr + rn[:, None] * stride_w + kk[None, :], mask=w_ok, other=0.0)
            acc += tl.dot(x.to(w.dtype), tl.trans(w))
        if NORM:  # W (g * x / rms) = (W (g * x)) / rms, one scale per row
            acc = acc * tl.rsqrt(tl.sum(squares, axis=1) / K + eps).to(tl.float32)[:, None]  # fp64 from inductor
        y = acc.to(y_ptr.dtype.element_ty)
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
        wrap_triton(_skinny_kernel)[(triton.cdiv(n, b.n),)](
            rows, weight, out, norm_weight if norm_weight is not None else weight, res, m, n, k,
            rows.stride(0), weight.stride(0), out.stride(0), res.stride(0), eps,
            BLOCK_M=block_rows(m), BLOCK_N=b.n, BLOCK_K=b.k, NORM=norm_weight is not None, GATED=gated,
            RESIDUAL=residual is not None, EVEN_K=k % b.k == 0, num_warps=b.warps, num_stages=b.stages)
        return out.reshape(*x.shape[:-1], n)


def skinny_linear(x: torch.Tensor, weight: torch.Tensor, norm_weight: torch.Tensor | None = None,
                  eps: float = 1e-6, residual: torch.Tensor | None = None, gated: bool = False) -> torch.Tensor:
    """`residual + (norm(x) or x) @ weight.T` for at most MAX_ROWS rows of x. `norm_weight`: an RMSNorm
    (weight, eps) applied to x first. `gated`: x is [gate | up] (2 x weight's inputs wide) and the layer
    reads up * silu(gate). The last dimension of x must be contiguous, as must weight's rows."""
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
    """Times each candidate's blocks for this shape on the device (Triton's do_bench: median of repeated
    runs, caches flushed) and keeps the fastest for the kernel to use; cuBLAS's F.linear is timed beside
    them. Returns the times in us, the kept blocks and cuBLAS's time."""
    device, dtype = torch.device("cuda"), torch.bfloat16
    x = torch.randn(rows, 2 * k if gated else k, device=device, dtype=dtype)
    w = torch.randn(n, k, device=device, dtype=dtype) / k ** 0.5
    g = torch.rand(k, device=device, dtype=dtype) + 0.5 if norm else None
    r = torch.randn(rows, n, device=device, dtype=dtype) if residual else None
    key = _key(rows, n, k, norm, gated, residual)
    times = {}
    for b in candidates or CANDIDATES:
        _TUNED[key] = b
        try:
            times[b] = triton.testing.do_bench(lambda: skinny_linear(x, w, g, residual=r, gated=gated)) * 1000
        except Exception:  # a block shape this GPU cannot run (registers, shared memory) is no candidate
            continue
    best = min(times, key=times.get)
    _TUNED[key] = best
    xin = x.chunk(2, dim=-1)[1] if gated else x
    cublas = triton.testing.do_bench(lambda: torch.nn.functional.linear(xin, w)) * 1000
    return {"shape": [rows, n, k], "norm": norm, "gated": gated, "residual": residual,
            "blocks": vars(best), "us": round(times[best], 2), "cublas_us": round(cublas, 2),
            "gb_per_s": round(n * k * w.element_size() / times[best] / 1000, 1),
            "tried": {f"{b.n}x{b.k}": round(t, 2) for b, t in times.items()}}
