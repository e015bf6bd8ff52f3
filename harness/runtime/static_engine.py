"""`engine=static`: dia-bench's own decode loop over transformers' Dia modules and weights.

transformers' `generate` rebuilds masks, caches and a chain of logits processors every step and
asks the host about tensor values to decide when to stop. A request of F audio frames needs none
of that: it runs exactly F + 16 decode steps (the delay pattern), and which token each channel gets
at each step (BOS before its delay, a sample, EOS, then PAD) is known before the first step. So:
the encoder and the cross-attention keys and values run once; self-attention keys and values go
into a cache allocated once for the request's length; CFG's conditional and unconditional rows run
as one batch; and the CFG combination, temperature, top-k, top-p and the forced tokens are tensor
operations, so nothing in the loop waits on the device (gpt-fast's `generate.py` is the model).

The arithmetic is transformers' own wherever it can be: the same submodules, rotary embedding and
attention function (`config._attn_implementation`), and the processors written out in the order
`generate` applies them. Greedy decoding gives exactly `generate`'s codes (tests/test_static_engine.py).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS
from transformers.models.dia.modeling_dia import apply_rotary_pos_emb, eager_attention_forward

from dia_bench.harness.kernels import decode_attention
from dia_bench.harness.kernels.decode_attention import KV_DTYPES
from dia_bench.harness.presets import decode_steps
from dia_bench.harness.runtime import hugepages
from dia_bench.harness.runtime.pipeline import BOS, EOS, PAD

NEG_INF = float("-inf")


@dataclass(frozen=True)
class Sampling:
    """The sampling `generate` would do for these arguments (its defaults where one is absent)."""

    guidance_scale: float | None
    temperature: float | None
    top_k: int | None
    top_p: float | None
    do_sample: bool
    suppress_eos: bool

    @classmethod
    def from_generate_kwargs(cls, kwargs: dict[str, Any]) -> Sampling:
        temperature = kwargs.get("temperature")
        if temperature is not None and temperature < 1.0:
            temperature = 1.0  # transformers' Dia clamps it the same way
        return cls(guidance_scale=kwargs.get("guidance_scale"), temperature=temperature,
                   top_k=kwargs.get("top_k"), top_p=kwargs.get("top_p"),
                   do_sample=bool(kwargs.get("do_sample", False)),
                   suppress_eos=EOS in (kwargs.get("suppress_tokens") or []))

    @property
    def cfg(self) -> bool:
        return self.guidance_scale is not None and self.guidance_scale != 1


def forced_tokens(frames: int, delays: list[int], device: torch.device) -> torch.Tensor:
    """(frames + max delay + 1, channels): the token each step must give each channel, -1 to sample.

    Step t (1-based) of channel c with delay d: BOS while t <= d, sampled up to t = frames + d, EOS at
    frames + d + 1, PAD after; what `generate` gives with EOS suppressed and max_new_tokens set so."""
    steps = decode_steps(frames, delays)
    t = torch.arange(1, steps + 1)[:, None]
    d = torch.tensor(delays)[None, :]
    table = torch.full((steps, len(delays)), -1, dtype=torch.long)
    table = torch.where(t <= d, BOS, table)
    table = torch.where(t == frames + d + 1, EOS, table)
    table = torch.where(t > frames + d + 1, PAD, table)
    return table.to(device)


@dataclass
class Request:
    """What one request allocates before its first step."""

    rows: int  # decoder rows: 2x the texts with CFG
    cross_keys: list[torch.Tensor]
    cross_values: list[torch.Tensor]
    cross_mask: torch.Tensor  # additive, (rows, 1, 1, text length)
    keys: list[torch.Tensor]  # per layer (rows, kv heads, steps, head dim)
    values: list[torch.Tensor]
    forced: torch.Tensor  # forced_tokens(...)


class StaticEngine:
    """Generates delayed codes for a `DiaPipeline` (read through it, so plugins that replace the
    model, such as ipex, are seen)."""

    def __init__(self, pipeline: Any, fuse_qkv: bool | None = None, attention_kernel: bool = True) -> None:
        self.pipeline = pipeline
        # The self- and cross-attention caches' dtype where it differs from the activations' (kv-cache=bf16:
        # half the bytes a CPU step's attention reads); None keeps the activations' own.
        self.cache_dtype: torch.dtype | None = None
        self.attention_kernel = attention_kernel  # False: the CPU's matmuls even where the kernel runs
        self.decode: Callable[..., tuple[torch.Tensor, torch.Tensor]] = self._decode
        self.compiled: str | None = None
        self._attend: Callable[..., tuple[torch.Tensor, Any]] = eager_attention_forward  # set per request
        self._buffers: dict[tuple, torch.Tensor] = {}
        # One GEMM for q, k and v instead of three. On an H200 the k and v GEMMs of 2 rows took 5.4 us
        # each for 2 MB of weights (36 a step, 0.19 ms of a 2.08 ms step): a GEMM that small costs its
        # launch and tail, not its bytes. Joined, the step fell to 1.91 ms (tests/bench/gpu_step.py).
        # On by default on CUDA only: on a CPU a joined GEMM may round differently from generate's
        # three, and greedy codes are tested there to be generate's own. Only where all three are
        # plain Linear layers (int8, int4 and onednn replace them).
        # Packed layers that join exactly (int4=8da4w's: each output is its own tile's arithmetic) are
        # joined everywhere: on a 2-core Zen 4 each of a step's 144 kernel calls costs about 11 us around
        # its work, and the joined layer quantizes h once, not three times.
        if fuse_qkv is None:
            fuse_qkv = torch.device(pipeline.device).type == "cuda"
        self.qkv = _fuse_qkv(self.model.model.decoder.layers, exact_only=not fuse_qkv)

    @property
    def model(self):
        return self.pipeline.model

    def compile(self, mode: str, **inductor: Any) -> None:
        """One decode step, sampling included, compiled at fixed shapes; reduce-overhead on CUDA captures
        it in one CUDA graph. Sampling goes in too because, left outside, its few dozen small kernels
        would each be launched from Python: on a GPU that costs about what the step itself does.
        `inductor`: options on top of the mode's own (torch.compile takes a mode or options, not both)."""
        if inductor:
            options = {**torch._inductor.list_mode_options(mode), **inductor}
            self.decode = torch.compile(self._decode, options=options, dynamic=False)
        else:
            self.decode = torch.compile(self._decode, mode=mode, dynamic=False)
        self.compiled = mode

    def attention(self, device: torch.device | None = None) -> str:
        """Which attention a step runs: on the CPU, where the model's is SDPA and no plugin forced one of its
        backends, `cpu-kernel` (dia-bench's C kernel, fp32) or `cpu-matmul` (where that kernel cannot run);
        else the model's own, as transformers names it."""
        impl = self.model.config._attn_implementation
        device = torch.device(self.pipeline.device) if device is None else device
        if impl == "sdpa" and device.type == "cpu" and self.pipeline.sdpa_backend is None:
            return "cpu-kernel" if self.attention_kernel and _kernel_attends(self.model.dtype) else "cpu-matmul"
        return impl

    def describe(self) -> dict[str, Any]:
        """What the record says about this engine's step."""
        attention = self.attention()
        return {"compiled_step": self.compiled, "fused_qkv": self.qkv is not None,
                "cache_dtype": str(self.cache_dtype).removeprefix("torch.") if self.cache_dtype else None,
                "attention": attention,
                "attention_operator": decode_attention.operator() if attention == "cpu-kernel" else None}

    def _choose_attention(self, device: torch.device) -> None:
        """The attention function of this request's steps, chosen before the loop: the choice asks whether
        a kernel builds, which a compiled step must not trace. The one seam where a step's attention
        changes; its Linear layers are the modules themselves, which quantizing plugins replace."""
        name = self.attention(device)
        attend = {"cpu-kernel": _cpu_kernel_attention, "cpu-matmul": _cpu_attention}.get(
            name, ALL_ATTENTION_FUNCTIONS.get_interface(self.model.config._attn_implementation,
                                                        eager_attention_forward))
        if self.cache_dtype is not None and name != "cpu-kernel":  # the kernel reads a bf16 cache itself
            attend = _widened(attend)
        self._attend = attend

    # -- one request ----------------------------------------------------------------------------

    def prepare(self, inputs: dict[str, torch.Tensor], steps: int, frames: int, cfg: bool) -> Request:
        model = self.model
        decoder = model.model.decoder
        ids, mask = inputs["input_ids"], inputs["attention_mask"]
        if cfg:  # the unconditional rows: the text zeroed, as transformers builds them
            ids, mask = torch.cat([ids, torch.zeros_like(ids)]), mask.repeat(2, 1)
        encoded = model.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
        rows = ids.shape[0]
        cross_keys, cross_values, keys, values = [], [], [], []
        for layer in decoder.layers:
            ca, sa = layer.cross_attention, layer.self_attention
            shape = (rows, encoded.shape[1], -1, ca.head_dim)
            for name, proj, out in (("cross_k", ca.k_proj, cross_keys), ("cross_v", ca.v_proj, cross_values)):
                value = proj(encoded).view(shape).transpose(1, 2)
                out.append(self._buffer((name, len(out)), value.shape, self.cache_dtype or value.dtype,
                                        ids.device).copy_(value))
            cache_shape = (rows, sa.num_key_value_heads, steps, sa.head_dim)
            keys.append(self._buffer(("k", len(keys)), cache_shape, cross_keys[-1].dtype, ids.device))
            values.append(self._buffer(("v", len(values)), cache_shape, cross_keys[-1].dtype, ids.device))
        # The mask is added to the scores, in the activations' dtype whatever the cache's (SDPA refuses a
        # bf16 mask beside fp32 queries).
        dtype = value.dtype
        cross_mask = torch.zeros(mask.shape, dtype=dtype, device=ids.device).masked_fill(
            mask == 0, torch.finfo(dtype).min)[:, None, None, :]
        forced = forced_tokens(frames, list(model.config.delay_pattern), ids.device)
        return Request(rows, cross_keys, cross_values, cross_mask, keys, values, forced)

    def _buffer(self, key: tuple, shape: tuple, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A tensor kept from one request to the next of the same shape: CUDA graphs replay on fixed
        addresses (and skip a graph that writes into an input that moves). Stale values are never
        read: a step attends to positions it has written this request, and masks the rest."""
        buf = self._buffers.get(key)
        if buf is None or tuple(buf.shape) != tuple(shape) or buf.dtype != dtype or buf.device != device:
            buf = torch.zeros(shape, dtype=dtype, device=device)
            if device.type == "cuda":
                torch._dynamo.mark_static_address(buf)
            self._buffers[key] = buf
        return buf

    def _decode(self, prev: torch.Tensor, pos: torch.Tensor, req: Request, forced: torch.Tensor,
                sampling: Sampling, span: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One decode step: the tokens (texts, channels) that follow `prev` at position `pos`, and the raw
        logits they were drawn from. `forced` (channels,) holds the delay pattern's token, -1 to sample."""
        logits = self._step(prev.repeat(req.rows // prev.shape[0], 1), pos, req, span)
        sampled = self.draw(self.scores(logits, sampling), sampling).view(prev.shape)
        return torch.where(forced >= 0, forced, sampled), logits

    def _step(self, tokens: torch.Tensor, pos: torch.Tensor, req: Request, span: int | None = None) -> torch.Tensor:
        """Logits (rows, channels, vocab) in fp32 for `tokens` (rows, channels) at position `pos`.
        `span`: self-attention reads the cache's first `span` positions (pos + 1 at least); None reads all
        of it, masked, at one shape for every step, as a compiled step or a CUDA graph needs."""
        model = self.model
        decoder = model.model.decoder
        x = decoder.embeddings(tokens[:, None, :])  # (rows, 1, hidden)
        cos, sin = decoder.rotary_emb(x, position_ids=pos.view(1, 1))
        steps = req.keys[0].shape[2] if span is None else span
        allowed = torch.arange(steps, device=pos.device) <= pos
        causal = torch.zeros(steps, dtype=x.dtype, device=x.device).masked_fill(~allowed, torch.finfo(x.dtype).min)
        causal = causal.view(1, 1, 1, steps)
        attend, rows = self._attend, tokens.shape[0]
        for i, layer in enumerate(decoder.layers):
            sa = layer.self_attention
            q, k, v = self._qkv(i, sa, layer.pre_sa_norm(x))
            q, k, v = (t.view(rows, 1, -1, sa.head_dim).transpose(1, 2) for t in (q, k, v))
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            req.keys[i].index_copy_(2, pos.view(1), k.to(req.keys[i].dtype))
            req.values[i].index_copy_(2, pos.view(1), v.to(req.values[i].dtype))
            out, _ = attend(sa, q, req.keys[i][:, :, :steps], req.values[i][:, :, :steps], causal, dropout=0.0,
                            scaling=sa.scaling)
            x = x + sa.o_proj(out.reshape(rows, 1, -1))

            ca = layer.cross_attention
            q = ca.q_proj(layer.pre_ca_norm(x)).view(rows, 1, -1, ca.head_dim).transpose(1, 2)
            out, _ = attend(ca, q, req.cross_keys[i], req.cross_values[i], req.cross_mask, dropout=0.0,
                            scaling=ca.scaling)
            x = x + ca.o_proj(out.reshape(rows, 1, -1))
            x = x + layer.mlp(layer.pre_mlp_norm(x))
        logits = model.logits_dense(decoder.norm(x))
        return logits.view(rows, decoder.num_channels, decoder.vocab_size).float()

    def _qkv(self, i: int, sa: Any, h: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Layer i's queries, keys and values (its self-attention `sa`) of the normed hidden state `h`: one
        GEMM where they were joined (`_fuse_qkv`), else the three modules."""
        joined = None if self.qkv is None else self.qkv[i]
        if joined is None:
            return sa.q_proj(h), sa.k_proj(h), sa.v_proj(h)
        qkv = joined(h) if isinstance(joined, nn.Module) else F.linear(h, joined)
        return qkv.split([sa.q_proj.out_features, sa.k_proj.out_features, sa.v_proj.out_features], dim=-1)

    # -- sampling, as transformers' Dia processors do it, on the device -------------------------

    @staticmethod
    def scores(logits: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        """(texts x channels, vocab) scores to draw from: CFG, EOS suppressed, temperature, Dia's EOS
        channel filter, top-k, top-p, in `generate`'s order. The forced tokens come after."""
        scores = logits.reshape(-1, logits.shape[-1])
        if sampling.cfg:
            cond, uncond = scores.split(scores.shape[0] // 2, dim=0)
            guided = cond + (cond - uncond) * sampling.guidance_scale
            if sampling.top_k is not None:  # Dia keeps the conditional logits of the guided top-k
                keep = torch.zeros_like(guided, dtype=torch.bool).scatter(
                    -1, torch.topk(guided, k=sampling.top_k, dim=-1).indices, True)
                guided = cond.masked_fill(~keep, NEG_INF)
            scores = guided
        if sampling.suppress_eos:
            scores = scores.clone()
            scores[:, EOS] = NEG_INF
        if sampling.temperature is not None and sampling.temperature != 1.0:
            scores = scores / sampling.temperature
        scores = _eos_channel_filter(scores, channels=logits.shape[-2])
        if sampling.do_sample and sampling.top_k:
            kth = torch.topk(scores, min(sampling.top_k, scores.shape[-1]))[0][..., -1, None]
            scores = scores.masked_fill(scores < kth, NEG_INF)
        if sampling.do_sample and sampling.top_p is not None and sampling.top_p < 1.0:
            ordered, order = torch.sort(scores, descending=False)
            drop = ordered.softmax(dim=-1).cumsum(dim=-1) <= (1 - sampling.top_p)
            drop[..., -1:] = False
            scores = scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)
        return scores

    @staticmethod
    def draw(scores: torch.Tensor, sampling: Sampling) -> torch.Tensor:
        if not sampling.do_sample:
            return scores.argmax(dim=-1)
        probs = scores.softmax(dim=-1)
        # multinomial's own path for one sample, spelled out so that no check reads a value back.
        return (probs / torch.empty_like(probs).exponential_(1)).argmax(dim=-1)

    # -- the loop -------------------------------------------------------------------------------

    def generate(self, inputs: dict[str, torch.Tensor], frames: int, kwargs: dict[str, Any],
                 clock: Any | None = None, max_steps: int | None = None) -> torch.Tensor:
        """Delayed codes (texts, steps + 1, channels), row 0 the BOS row, as `generate` returns them;
        `max_steps` stops the request after that many steps (a warmup), its first rows unchanged."""
        sampling = Sampling.from_generate_kwargs(kwargs)
        delays = list(self.model.config.delay_pattern)
        steps = decode_steps(frames, delays)
        run = steps if max_steps is None else max(1, min(steps, max_steps))
        texts, channels = inputs["input_ids"].shape[0], len(delays)
        device = inputs["input_ids"].device
        timer = _StepTimer(device, clock)
        req = self.prepare(inputs, steps, frames, sampling.cfg)
        self._choose_attention(device)
        self.pipeline.decoder_rows = req.rows
        self.pipeline.cache_dtype = req.keys[0].dtype
        out = torch.full((texts, steps + 1, channels), BOS, dtype=torch.long, device=device)
        positions = torch.arange(steps, device=device)
        # A streaming clock reads each step's codes; reading them waits for the device, so only where asked.
        on_row = getattr(clock, "on_row", None)
        timer.mark()  # the encoder and cross-attention keys and values are done
        with contextlib.ExitStack() as settled:
            for t in range(run):
                out[:, t + 1, :] = self.decode(out[:, t, :], positions[t], req, req.forced[t], sampling,
                                               self._span(t))[0]
                timer.mark()
                if on_row is not None:
                    on_row(out[:, t + 1, :])
                if t == 0 and self.compiled:
                    # The first step checked every guard, and so ran (or compiled) the step for this
                    # request's shapes; the later ones differ from it in tensor values only. Their guards
                    # (each weight, buffer and constant the step reads) cost 0.77 ms of a 33 ms compiled
                    # int4 step on a 2-core Zen 4 (torch.profiler's "TorchDynamo Cache Lookup"). Only
                    # the guards that tell compiled steps apart still run.
                    settled.enter_context(torch.compiler.set_stance("default", skip_guard_eval_unsafe=True))
        timer.finish()
        return out[:, :run + 1]

    def _span(self, t: int) -> int | None:
        """Eager steps attend to the t + 1 positions written so far. A request's cache is allocated for all
        its steps, and reading all of it every step costs a long request dearly: at 30 s of dia-1.6b in
        fp32, about 380 MB a step beside 700 MB of int4 weights. A compiled step keeps one shape."""
        return None if self.compiled else t + 1

    @torch.inference_mode()
    def teacher_forced_logits(self, inputs: dict[str, torch.Tensor], delayed: torch.Tensor,
                              kwargs: dict[str, Any]) -> torch.Tensor:
        """Raw logits (rows x channels, steps - 1, vocab) of this engine's steps fed the history, one
        step at a time through its own cache and its own (compiled, where it is) decode step: what
        fidelity compares against the reference. The history's next token is forced at each step."""
        sampling = Sampling.from_generate_kwargs(kwargs)
        device = inputs["input_ids"].device
        # A copy made in inference mode, like the rows `generate` feeds the step: a history read from disk
        # outside it fails the compiled step's guards (its dispatch keys), and the step compiled again
        # would be judged instead of the one measured.
        history = delayed[:1].to(device, copy=True)
        steps = history.shape[1] - 1
        frames = steps - decode_steps(0, list(self.model.config.delay_pattern))
        req = self.prepare({k: v[:1] for k, v in inputs.items()}, steps, frames, sampling.cfg)
        self._choose_attention(device)
        # clone: a CUDA graph's outputs are overwritten by its next replay.
        logits = [self.decode(history[:, t, :], torch.tensor(t, device=device), req, history[0, t + 1, :],
                              sampling, self._span(t))[1].clone() for t in range(steps)]
        stacked = torch.stack(logits, dim=1)  # (rows, steps, channels, vocab)
        return stacked.transpose(1, 2).reshape(-1, steps, stacked.shape[-1])


def _fuse_qkv(layers: Any, exact_only: bool = False) -> list[torch.Tensor | nn.Module | None] | None:
    """Per layer, q, k and v's weights as one (out, in) tensor, or None where they cannot be joined.
    The three layers' own weights become views into it, so the model holds them once. Packed layers
    whose class can `join` them (int4=8da4w's) become one such layer instead, the three its views.
    `exact_only`: only those, which give the three layers' results bit for bit. None where no layer
    joined."""
    fused: list[torch.Tensor | nn.Module | None] = []
    for layer in layers:
        sa = layer.self_attention
        projs = (sa.q_proj, sa.k_proj, sa.v_proj)
        module = _join_packed(sa, projs)
        if module is not None or exact_only:
            fused.append(module)
            continue
        weight = getattr(sa, "_dia_bench_qkv", None)
        if not isinstance(weight, torch.Tensor):
            weight = None
        if weight is not None and sa.q_proj.weight.data_ptr() != weight.data_ptr():
            weight = None  # the model was cast or moved since: join its new weights
        # Plain Linear layers with plain float weights: torchao quantizes in place (the module stays a
        # Linear, its weight becomes a tensor subclass), and joining those would unquantize them.
        if weight is None and all(type(p) is torch.nn.Linear and p.bias is None and p.weight.is_floating_point()
                                  and type(p.weight.detach()) is torch.Tensor for p in projs):
            weight = torch.cat([p.weight.detach() for p in projs])
            start = 0
            for p in projs:
                rows = p.weight.shape[0]
                p.weight = torch.nn.Parameter(weight[start:start + rows], requires_grad=False)
                start += rows
            if weight.device.type == "cuda":
                # Else reduce-overhead copies every tensor that is not a module's own into the CUDA
                # graph at each replay: 226 MB a step on dia-1.6b, measured as 0.14 ms of DtoD copies.
                torch._dynamo.mark_static_address(weight)
            sa._dia_bench_qkv = weight
        fused.append(weight)
    return fused if any(f is not None for f in fused) else None


def _join_packed(sa: Any, projs: tuple[Any, ...]) -> nn.Module | None:
    """The joined layer of q, k and v where their class joins exactly (`join`), made once per model: the
    three are replaced by its views. Kept off the module tree (object.__setattr__), so the model's
    weights and layers are counted once."""
    joined = getattr(sa, "_dia_bench_qkv", None)
    if isinstance(joined, nn.Module) and getattr(sa.q_proj, "_dia_bench_joined", None) is joined:
        return joined
    join = getattr(type(projs[0]), "join", None)
    if join is None or any(type(p) is not type(projs[0]) for p in projs):
        return None
    try:
        # The joined codes in 2 MB pages like the parts' (int4=8da4w places them there: int4.py says why).
        joined, parts = join(list(projs), place=hugepages.copy_of)
    except ValueError:
        return None
    sa.q_proj, sa.k_proj, sa.v_proj = parts
    for part in parts:
        object.__setattr__(part, "_dia_bench_joined", joined)
    object.__setattr__(sa, "_dia_bench_qkv", joined)
    return joined


def _grouped(query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
    """One query a row, (rows, heads, 1, dim), as (rows, key/value heads, the query heads each serves, dim):
    a grouped head then reads its key/value head in place."""
    rows, heads, _, dim = query.shape
    return query.reshape(rows, key.shape[1], heads // key.shape[1], dim)


def _scale(query: torch.Tensor, scaling: float | None) -> float:
    return query.shape[-1] ** -0.5 if scaling is None else scaling


def _per_row(mask: torch.Tensor) -> torch.Tensor:
    """An additive mask (rows or 1, 1, 1, keys) as (rows or 1, keys)."""
    return mask.reshape(mask.shape[0], mask.shape[-1])


def _kernel_attends(dtype: torch.dtype) -> bool:
    return dtype == torch.float32 and decode_attention.unavailable() is None


def _widened(attend: Callable[..., tuple[torch.Tensor, Any]]) -> Callable[..., tuple[torch.Tensor, Any]]:
    """`attend` reading a cache kept in another dtype than the queries, widened to theirs first."""
    def widened(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args: Any,
                **kwargs: Any) -> tuple[torch.Tensor, Any]:
        return attend(module, query, key.to(query.dtype), value.to(query.dtype), *args, **kwargs)

    return widened


def _cpu_kernel_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                          mask: torch.Tensor, dropout: float = 0.0, scaling: float | None = None,
                          **kwargs: Any) -> tuple[torch.Tensor, None]:
    """One query a row in fp32 through dia-bench's kernel (harness/kernels/decode_attention.py), which streams
    each key/value head once for its group of queries; anything else as `_cpu_attention`."""
    if query.shape[2] != 1 or query.dtype != torch.float32 or key.dtype not in KV_DTYPES or key.dtype != value.dtype:
        return _widened(_cpu_attention)(module, query, key, value, mask, dropout, scaling)
    out = decode_attention.attend(_grouped(query, key), key, value, _per_row(mask), _scale(query, scaling))
    return out.reshape(query.shape[0], 1, query.shape[1], query.shape[3]), None


def _cpu_attention(module: Any, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, mask: torch.Tensor,
                   dropout: float = 0.0, scaling: float | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """Attention for the CPU with grouped-query heads read in place. transformers' own sdpa function
    copies each key/value head once per query head it serves when a mask is given (`repeat_kv`), except
    in an eager step, where it packs the queries instead; a compiled step then copied the whole cache
    four times over on dia-1.6b. One query a row goes through two batched matmuls with the group's
    queries as rows: over 18 layers' caches of 1738 positions (20 s of audio, 256 MB) they took 27.7 ms
    where SDPA's CPU kernel took 41.6 (Zen 4, 2 cores). CUDA keeps transformers' path: its graph is
    the one measured there."""
    if query.shape[2] != 1:
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask, dropout_p=dropout,
                                             scale=_scale(query, scaling),
                                             enable_gqa=key.shape[1] != query.shape[1])
        return out.transpose(1, 2), None
    scores = torch.matmul(_grouped(query, key), key.transpose(-1, -2)) * _scale(query, scaling)
    scores = scores + _per_row(mask)[:, None, None, :]
    # The softmax in fp32, as SDPA's kernels keep it, whatever the weights' dtype.
    out = torch.matmul(scores.softmax(dim=-1, dtype=torch.float32).to(value.dtype), value)
    return out.reshape(query.shape[0], 1, query.shape[1], query.shape[3]), None


def _eos_channel_filter(scores: torch.Tensor, channels: int) -> torch.Tensor:
    """transformers' DiaEOSChannelFilterLogitsProcessor: only channel 0 may end, and EOS there is
    either the only candidate (when it is the most likely) or none."""
    vocab = torch.arange(scores.shape[-1], device=scores.device)
    channel = torch.arange(channels, device=scores.device)[:, None]
    # One mask for what no channel may emit (past EOS, or EOS beyond channel 0), not writes into slices of
    # a copy: those, fused with top-k's mask and the argmax below, made torch 2.11's inductor generate C++
    # that gcc refuses ("'decltype' evaluates to 'float'"). The same values either way.
    never = (vocab > EOS) | ((vocab == EOS) & (channel > 0))
    s = scores.view(-1, channels, scores.shape[-1]).masked_fill(never, NEG_INF).view(-1, scores.shape[-1])
    eos_top = (s.argmax(dim=-1) == EOS)[:, None]
    below_eos = vocab[None, :] < EOS
    s = s.masked_fill(eos_top & below_eos, NEG_INF)
    is_eos = vocab[None, :] == EOS
    return s.masked_fill(~eos_top & is_eos, NEG_INF)


class _StepTimer:
    """Per-step stamps for the pipeline's clock: host time on CPU, CUDA events on a GPU (read once,
    after the loop, so that timing never waits on the device inside it)."""

    def __init__(self, device: torch.device, clock: Any | None) -> None:
        self.clock, self.cuda = clock, device.type == "cuda"
        self.events: list[Any] = []
        if self.cuda and clock is not None:
            self.start_host = time.perf_counter()
            self.start = torch.cuda.Event(enable_timing=True)
            self.start.record()

    def mark(self) -> None:
        if self.clock is None:
            return
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self.events.append(event)
        else:
            self.clock.stamps.append(time.perf_counter())

    def finish(self) -> None:
        if self.clock is not None and self.cuda:
            self.events[-1].synchronize()
            self.clock.stamps.extend(self.start_host + self.start.elapsed_time(e) / 1000 for e in self.events)
