"""How close a decode step comes to the memory-bandwidth floor.

A decode step is memory bound: it reads every decoder weight once, and the attention caches. The floor
is those bytes over the machine's measured bandwidth; the fraction achieved says how much room an
optimization has.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from dia_bench.harness.jsonio import read_json, write_json_atomic
from dia_bench.harness.paths import cache_dir
from dia_bench.harness.runtime import hugepages


def _tensor_bytes(t: torch.Tensor) -> int:
    """What a tensor holds in memory. A wrapper subclass (torchao's quantized weights) reports its logical
    dtype, bf16 for int8 codes; the tensors it is made of (`__tensor_flatten__`) are what a step reads."""
    flatten = getattr(type(t), "__tensor_flatten__", None)
    if flatten is not None and type(t) is not torch.Tensor and type(t) is not nn.Parameter:
        names, _ = t.__tensor_flatten__()
        return sum(_tensor_bytes(getattr(t, name)) for name in names)
    return t.numel() * t.element_size()


def _module_weight_bytes(module: nn.Module) -> int:
    """Bytes a module's own weights occupy, including packed int8 weights that are not Parameters."""
    counted = getattr(module, "dia_bench_weight_bytes", None)
    if callable(counted):
        # A packed layer (int4, oneDNN) keeps its weights in buffers or opaque tensors: it says itself.
        return int(counted())
    total = sum(_tensor_bytes(p) for p in module.parameters(recurse=False))
    weight_fn = getattr(module, "weight", None)
    if callable(weight_fn) and not isinstance(weight_fn, torch.Tensor):
        # torch.ao dynamic quantized Linear keeps its weight packed for fbgemm. weight() would unpack
        # it (about as slow as packing: 15 s for Dia-1.6B's 253 layers), so count from the shape.
        packed = getattr(module, "_packed_params", None)
        dtype = getattr(packed, "dtype", None)
        if dtype is not None and hasattr(module, "in_features"):
            per_weight = 1 if dtype in (torch.qint8, torch.quint8) else torch.empty(0, dtype=dtype).element_size()
            total += module.in_features * module.out_features * per_weight
            if getattr(module, "dia_bench_has_bias", True):
                total += module.out_features * 4  # fp32
    return total


def decode_step_modules(model: nn.Module) -> Iterator[nn.Module]:
    """The modules whose own weights one decode step reads: the decoder and LM head, minus what is
    computed once.

    The encoder runs once; cross-attention keys and values are cached after the first step; an
    embedding lookup touches nine rows, not the table.
    """
    for name, module in model.model.decoder.named_modules():
        if "cross_attention.k_proj" in name or "cross_attention.v_proj" in name:
            continue
        if isinstance(module, nn.Embedding) or name.endswith("embeddings"):
            continue
        yield module
    for name, module in model.named_modules():
        if not name.startswith("model.") and name:
            yield module  # the logits head


def decode_step_weight_bytes(model: nn.Module) -> int:
    """Bytes of the weights one decode step reads (`decode_step_modules`)."""
    return sum(_module_weight_bytes(module) for module in decode_step_modules(model))


BANDWIDTH_METHOD_VERSION = 5  # in the cache key: figures of an older method are measured again


def _buffer_bytes(floor: int = 2**30) -> int:
    """Far beyond the last-level cache, so every kernel reads from memory: `floor` (1 GiB), or 4x a
    larger LLC."""
    llc = 0
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            size = (index / "size").read_text().strip()
            llc = max(llc, int(size.rstrip("KMG")) * {"K": 2**10, "M": 2**20, "G": 2**30}.get(size[-1], 1))
        except (OSError, ValueError):
            continue
    return max(floor, 4 * llc)


def _best_seconds(fn: Callable[[], object], device: torch.device, iters: int) -> float:
    fn()  # first touch and any lazy set-up outside the timing
    best = float("inf")
    for _ in range(iters):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - t0)
    return best


def _filled(numel: int, dtype: torch.dtype, device: torch.device, value: float = 1) -> torch.Tensor:
    """A buffer for a read kernel: on the CPU in 2 MB pages where the kernel allows, because a stream of
    weights reads faster there (harness/runtime/hugepages.py): the floor is what the memory can do."""
    if device.type == "cpu":
        return hugepages.empty(numel, dtype).fill_(value)
    return torch.full((numel,), value, dtype=dtype, device=device)


def _kernels(device: torch.device, nbytes: int,
             kept: dict[str, Any]) -> dict[str, Callable[[], tuple[Callable[[], object], int]]]:
    """Read kernels like a decode step's: each builds its buffers and returns (run, bytes read). `kept`
    holds what is too costly to build again for each attempt of one measurement."""
    rows = 2  # a decode step with CFG multiplies two rows by every weight

    def fp32_sum():
        x = _filled(nbytes // 4, torch.float32, device)
        return (lambda: x.sum()), x.nbytes

    def fp32_dot():
        a, b = _filled(nbytes // 8, torch.float32, device), _filled(nbytes // 8, torch.float32, device)
        return (lambda: torch.dot(a, b)), a.nbytes + b.nbytes

    def fp32_matvec():
        # What an fp32 step calls: the BLAS torch was built with (MKL on x86). Not always at the memory's
        # rate: on AMD CPUs MKL's fp32 product for two rows read 7-10 GB/s where a sum read 45.
        k = 8192
        w = _filled(nbytes // 4 // k * k, torch.float32, device).view(-1, k)
        x = torch.ones(rows, k, device=device)
        return (lambda: torch.nn.functional.linear(x, w)), w.nbytes

    def bf16_matvec():
        k = 8192
        w = _filled(nbytes // 2 // k * k, torch.bfloat16, device).view(-1, k)
        x = torch.ones(rows, k, dtype=torch.bfloat16, device=device)
        return (lambda: torch.nn.functional.linear(x, w)), w.nbytes

    def int8_matvec():
        # fbgemm's dynamic int8 Linear, the kernel of int8=dynamic, built from int8 directly (no fp32
        # copy). Its packing costs about 10 s a GiB, so it reads half the buffer (still past the cache), and
        # is kept for the measurement's later attempts (`kept`).
        k = 8192
        if "int8" not in kept:
            weights = [torch._make_per_tensor_quantized_tensor(torch.full((4096, k), 3, dtype=torch.int8), 0.01, 0)
                       for _ in range(nbytes // 2 // (4096 * k))]
            kept["int8"] = ([torch.ops.quantized.linear_prepack(w, None) for w in weights],
                            sum(w.numel() for w in weights))
        packed, read = kept["int8"]
        x = torch.ones(rows, k)
        return (lambda: [torch.ops.quantized.linear_dynamic(x, p) for p in packed]), read

    def int8_weight_only():
        # The int8 weight-only kernel (bf16 activations) that torchao-style quantization calls.
        k = 8192
        w = _filled(nbytes // k * k, torch.int8, device, 3).view(-1, k)
        scales = torch.ones(w.shape[0], dtype=torch.bfloat16, device=device)
        x = torch.ones(rows, k, dtype=torch.bfloat16, device=device)
        return (lambda: torch._weight_int8pack_mm(x, w, scales)), w.nbytes

    def copy():
        x = _filled(nbytes // 8, torch.float32, device)
        y = _filled(nbytes // 8, torch.float32, device, 0)
        return (lambda: y.copy_(x)), 2 * x.nbytes  # reads and writes through the same memory

    if device.type == "cuda":
        return {"sum fp32": fp32_sum, "copy": copy, "fp32 matvec": fp32_matvec, "bf16 matvec": bf16_matvec}
    return {"sum fp32": fp32_sum, "dot fp32": fp32_dot, "fp32 matvec": fp32_matvec, "bf16 matvec": bf16_matvec,
            "int8 matvec": int8_matvec, "int8 weight-only matvec": int8_weight_only}


def read_gbps(x: torch.Tensor, iters: int = 5) -> float:
    """How fast `x` is read, in GB/s: the best of `iters` sums over it."""
    return x.nbytes / _best_seconds(x.sum, x.device, iters) / 1e9


def _probes_agree(probes: tuple[float, ...] | list[float]) -> bool:
    """Whether bandwidth probes taken around a measurement are within 10% of each other: else the
    bandwidth moved under it."""
    return max(probes) <= 1.1 * min(probes)


PROBE_BYTES = 2**28  # 256 MiB: past an H100's 50 MB L2 too; 4x the LLC where that is larger


def bandwidth_probe(device: torch.device, iters: int = 5) -> float:
    """A quick read bandwidth (GB/s): the best of a few sums over a buffer past the caches, about 0.1 s on
    a CPU. The full measurement is cached per machine, but these VMs' bandwidth wanders by 10-15% within
    minutes (the same int4 kernel read 701 MB in 21.7 ms and in 29.1 ms, runs a minute apart, on a Zen 4):
    a probe beside each measurement scales the cached figure to the one the step really had."""
    x = _filled(_buffer_bytes(PROBE_BYTES) // 4, torch.float32, device)
    gbps = round(read_gbps(x, iters), 3)
    del x
    if device.type == "cuda":
        torch.cuda.empty_cache()  # else the measured phase's reserved peak would hold it
    return gbps


def _measure(device: torch.device, iters: int = 5, tries: int = 3) -> dict:
    """Read bandwidth in GB/s as the best of several kernels on buffers far beyond the caches.

    One kernel alone understates the memory: a plain sum may not saturate it where a matrix-vector
    product with wide vector loads does (an int8 Linear read 25% faster than a sum on a Zen 4, in 4 KB
    pages), and then a decode step seems to beat the floor.

    The probe that later measurements are scaled against (see roofline) is taken just before and just
    after the kernels, and the whole is measured again, up to `tries` times, while the two disagree by
    more than 10%: these VMs' bandwidth can jump by half within seconds (a Zen 4 read 67 and 35 GB/s a
    minute apart), and a best kernel from one episode over a probe from another scales every later
    figure wrongly.
    """
    import warnings

    nbytes = _buffer_bytes()
    kept: dict[str, Any] = {}
    attempts = 0
    while attempts < tries:
        attempts += 1
        before = bandwidth_probe(device)
        kernels: dict[str, float | None] = {}
        for name, build in _kernels(device, nbytes, kept).items():
            run = None
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # torch.ao's quantized tensors are deprecated, still the kernel
                    run, read = build()
                    kernels[name] = round(read / _best_seconds(run, device, iters) / 1e9, 2)
            except (RuntimeError, NotImplementedError):  # a kernel this build or CPU lacks
                kernels[name] = None
            finally:
                del run
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        after = bandwidth_probe(device)
        steady = _probes_agree((before, after))
        if steady:
            break
    best = max((v for v in kernels.values() if v), default=None)
    pages = ""
    if device.type == "cpu":
        pages = (" in 2 MB pages" if hugepages.available()
                 else f" in 4 KB pages (transparent huge pages: {hugepages.thp_mode()})")
    return {"gbps": best, "method": f"best of {len(kernels)} read kernels on {nbytes / 2**30:.1f} GiB buffers{pages}",
            "kernels": kernels, "probe_gbps": round((before + after) / 2, 3), "probes_gbps": [before, after],
            "probe_steady": steady, "attempts": attempts}


def bandwidth_key(device: torch.device) -> str:
    """What a cached bandwidth belongs to. The host name alone is not enough: a VM keeps its name when
    it moves to another CPU (this project's own machines have been a Zen 4, a Xeon and an AVX2 EPYC
    under one name), so the processor model, its flags and the cores it offers are in the key too."""
    import hashlib
    import socket

    from dia_bench.harness.env import cpu_info

    cpu = cpu_info()
    flags = hashlib.sha256(" ".join(cpu["flags"]).encode()).hexdigest()[:12]
    key = (f"{socket.gethostname()}|{device}|{torch.get_num_threads()}|v{BANDWIDTH_METHOD_VERSION}"
           f"|{cpu['model']}|{cpu['logical_cores']} cores|flags {flags}")
    if device.type == "cuda":
        key += "|" + torch.cuda.get_device_name(device)
    return key


def measured_bandwidth_gbps(device: torch.device) -> dict:
    """Measured once per machine (host, processor, cores), device, thread count and method, then read
    from the cache."""
    key = bandwidth_key(device)
    path = cache_dir() / "bandwidth.json"
    try:
        cached = read_json(path)
    except (OSError, ValueError):
        cached = {}
    if isinstance(cached.get(key), dict):
        return {**cached[key], "cached": True}
    value = _measure(device)
    cached[key] = value
    with contextlib.suppress(OSError):
        write_json_atomic(path, cached)
    return {**value, "cached": False}


def attention_cache_bytes(model: nn.Module, rows: int, text_positions: int, steps: int,
                          dtype: torch.dtype) -> int:
    """Attention-cache bytes a decode step must read, as the mean over a request's `steps` timed steps.

    Every step reads the cross-attention keys and values of all `text_positions` and the self-attention
    keys and values written so far: timed step j (the first is the one after the first decoder step)
    attends to j + 1 positions. Beside dia-1.6b's int4 weights they are not small: the medium text's
    cross-attention (16 key-value heads, 180 positions, 2 CFG rows) is 53 MB a step in bf16 against 712 MB
    of weights, and 20 s of audio adds up to 128 MB of self-attention. A step that reads more (a whole
    preallocated cache, masked) spends its own time on that: only what it must read is the floor.
    """
    config = model.config.decoder_config
    item = torch.empty(0, dtype=dtype).element_size()
    self_per_position = 2 * config.num_key_value_heads * config.head_dim  # keys and values
    cross_per_position = 2 * config.cross_num_key_value_heads * config.cross_head_dim
    mean_positions = (steps + 3) / 2 if steps else 0  # (2 + 3 + ... + (steps + 1)) / steps
    per_row = self_per_position * mean_positions + cross_per_position * text_positions
    return round(config.num_hidden_layers * rows * per_row * item)


def roofline(model: nn.Module, device: torch.device, step_seconds: float | None, cache_bytes: int = 0,
             probes: tuple[float, float] | None = None) -> dict:
    """The step's floor: its weights and `cache_bytes` of attention caches over the measured bandwidth.
    `fraction_of_bandwidth` counts both; `weights_fraction_of_bandwidth` the weights alone, as records
    before the caches were counted did. `probes`: bandwidth_probe() just before and after the measured
    repeats; the machine's cached bandwidth is scaled by their mean over the probe cached with it."""
    weight_bytes = decode_step_weight_bytes(model)
    total = weight_bytes + cache_bytes
    bw = measured_bandwidth_gbps(device)
    gbps, drift = bw["gbps"], None
    if gbps and probes and bw.get("probe_gbps"):
        drift = sum(probes) / len(probes) / bw["probe_gbps"]
        gbps = round(gbps * drift, 2)
    out = {
        "weight_bytes_per_step": weight_bytes,
        "cache_bytes_per_step": cache_bytes,
        "bytes_per_step": total,
        "measured_bandwidth_gbps": gbps,
        "bandwidth_method": bw.get("method"),
        "bandwidth_kernels": bw.get("kernels"),
        "bandwidth_from_cache": bw["cached"],
        # The cached figure, and how the probes beside this measurement moved it (1.0: not at all).
        "bandwidth_cached_gbps": bw["gbps"],
        "bandwidth_drift": None if drift is None else round(drift, 3),
        "bandwidth_probes_gbps": list(probes) if probes else None,
        "bandwidth_unsteady": None,
        # False where the machine's own measurement never saw its probes agree (see _measure).
        "bandwidth_cached_steady": bw.get("probe_steady"),
        "floor_step_ms": round(total / (gbps * 1e9) * 1000, 4) if gbps else None,
        "achieved_bandwidth_gbps": None,
        "fraction_of_bandwidth": None,
        "weights_fraction_of_bandwidth": None,
        # The fraction with the bandwidth each probe alone gave: what an unsteady machine leaves open.
        "fraction_range": None,
        "problem": None,
    }
    if probes and not _probes_agree(probes):
        out["bandwidth_unsteady"] = (f"the bandwidth probe moved from {probes[0]:.1f} to {probes[1]:.1f} GB/s over "
                                     "the repeats: the fraction is uncertain by as much")
    if step_seconds and gbps:
        achieved = total / step_seconds / 1e9
        out["achieved_bandwidth_gbps"] = round(achieved, 3)
        out["fraction_of_bandwidth"] = round(achieved / gbps, 4)
        out["weights_fraction_of_bandwidth"] = round(weight_bytes / step_seconds / 1e9 / gbps, 4)
        if drift is not None:
            scale = bw["gbps"] / bw["probe_gbps"]
            out["fraction_range"] = [round(achieved / (max(probes) * scale), 4),
                                     round(achieved / (min(probes) * scale), 4)]
        if achieved > gbps:
            # Faster than memory allows: the floor is wrong (bandwidth measured too low) or the
            # bytes were not all read from memory (a cache held them); either way not a result.
            out["problem"] = (f"a decode step read its weights and attention caches at {achieved:.1f} GB/s, above "
                              f"the measured {gbps:.1f} GB/s: the bandwidth figure or the byte count is wrong")
    return out
