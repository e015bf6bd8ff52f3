"""Attention for one query a row (a decode step), written in Triton: each program takes one row's key/value
head and the query heads it serves, streams that head's keys and values once, and keeps the softmax
running (flash attention's update) in fp32.

On an H200 the static engine's bf16 step spent 0.33 ms of 1.91 in 36 cuDNN attention calls at 9.3 us
each for one query against 188 keys, plus the copies of each key/value head that transformers' SDPA
path makes for grouped-query attention. Here the grouped heads read their key/value head in place.
`torch.ops.dia_bench.decode_attention_gpu` is a `triton_op`: it stays in a compiled step's graph.
"""

from __future__ import annotations

import torch

from dia_bench.harness.worker.triton_linear import triton, unavailable  # noqa: F401 (one answer for both kernels)

if triton is not None:
    import triton.language as tl
    from torch.library import triton_op, wrap_triton

    @triton.jit
    def _decode_attention_kernel(q_ptr, k_ptr, v_ptr, m_ptr, o_ptr, S, scale,
                                 sq_r, sq_h, sq_g, sk_r, sk_h, sk_s, sv_r, sv_h, sv_s, sm_r, so_r, so_h, so_g,
                                 G: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_S: tl.constexpr, D: tl.constexpr):
        row, head = tl.program_id(0), tl.program_id(1)
        rg, rd, rs = tl.arange(0, BLOCK_G), tl.arange(0, D), tl.arange(0, BLOCK_S)
        q = tl.load(q_ptr + row * sq_r + head * sq_h + rg[:, None] * sq_g + rd[None, :], mask=rg[:, None] < G,
                    other=0.0)
        top = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
        total = tl.zeros((BLOCK_G,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_G, D), dtype=tl.float32)
        for s0 in tl.range(0, S, BLOCK_S, num_stages=3):  # keys and values loaded ahead (cp.async)
            ss = s0 + rs
            s_ok = ss < S
            k = tl.load(k_ptr + row * sk_r + head * sk_h + ss[:, None] * sk_s + rd[None, :], mask=s_ok[:, None],
                        other=0.0)
            v = tl.load(v_ptr + row * sv_r + head * sv_h + ss[:, None] * sv_s + rd[None, :], mask=s_ok[:, None],
                        other=0.0)
            bias = tl.load(m_ptr + row * sm_r + ss, mask=s_ok, other=float("-inf")).to(tl.float32)
            # fp32 again: inductor passes Python floats as fp64, which would then carry into the loop.
            scores = (tl.dot(q, tl.trans(k)) * scale).to(tl.float32) + bias[None, :]
            new_top = tl.maximum(top, tl.max(scores, axis=1))
            shrink = tl.exp(top - new_top)
            p = tl.exp(scores - new_top[:, None])
            total = total * shrink + tl.sum(p, axis=1)
            acc = acc * shrink[:, None] + tl.dot(p.to(v.dtype), v)
            top = new_top
        out = (acc / total[:, None]).to(o_ptr.dtype.element_ty)
        tl.store(o_ptr + row * so_r + head * so_h + rg[:, None] * so_g + rd[None, :], out, mask=rg[:, None] < G)

    @triton_op("dia_bench::decode_attention_gpu", mutates_args={})
    def _decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                          scale: float) -> torch.Tensor:
        rows, heads, group, dim = query.shape
        steps = key.shape[2]
        out = torch.empty((rows, heads, group, dim), dtype=query.dtype, device=query.device)
        wrap_triton(_decode_attention_kernel)[(rows, heads)](
            query, key, value, mask, out, steps, scale,
            query.stride(0), query.stride(1), query.stride(2), key.stride(0), key.stride(1), key.stride(2),
            value.stride(0), value.stride(1), value.stride(2), mask.stride(0) if mask.shape[0] > 1 else 0,
            out.stride(0), out.stride(1), out.stride(2),
            G=group, BLOCK_G=max(16, triton.next_power_of_2(group)), BLOCK_S=64, D=dim, num_warps=4, num_stages=3)
        return out


def decode_attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                     scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask) v for one query a row. query (rows, kv heads, the query heads each
    serves, dim); key and value (rows, kv heads, keys, dim), the last dimension contiguous (a cache read
    in place); mask additive, (rows or 1, keys). Returns (rows, kv heads, group, dim)."""
    return torch.ops.dia_bench.decode_attention_gpu(query.contiguous(), key, value, mask.contiguous(), scale)
