"""INT4 weights of the Dia Linear layers, groupwise scales and zero points.

Values 32, 64, 128 (the group size): weight-only. CPU: torch's own int4 kernels
(`_convert_weight_to_int4pack_for_cpu`, `_weight_int4pack_mm_for_cpu`), run with bf16 activations
whatever the model's dtype (its only fast path; see _int4_linear). CUDA: torchao's Int4WeightOnlyConfig
where torchao is installed.
Values 8da4w-32, -64, -128: int4 weights with int8 activations quantized per row and group at run
time, through dia-bench's own CPU kernel (harness/kernels/w4a8.py): torch's int4 kernel is compute bound at a decode
step's 2 rows and lost to fbgemm's int8; this one feeds the codes to 8-bit dot products.
The codec is never quantized.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from dia_bench.optimizations._linear_swap import linear_kinds, swap_linears
from dia_bench.optimizations._util import has_module, own_remaining_tensors
from dia_bench.optimizations.base import Expectation, Plugin

GROUP_SIZES = ("32", "64", "128")
W4A8 = "8da4w-"  # the prefix of the int8-activation values
KERNEL = "aten::_weight_int4pack_mm_for_cpu"
W4A8_KERNEL = "dia_bench::w4a8_linear"


class Int4(Plugin):
    name = "int4"
    description = ("INT4 Linear layers with groupwise scales (the value: group size): weight-only through torch's "
                   "int4 CPU kernels or torchao on CUDA; 8da4w-G adds int8 activations through dia-bench's CPU kernel; "
                   "a bare int4 runs 8da4w-128 where that kernel builds")
    expectation = Expectation(section="Advanced Optimizations / Quantization (INT8/INT4)",
                              note="no speedup figure in the guide: 'maximum speed with some quality tradeoff'")
    values = GROUP_SIZES + tuple(W4A8 + g for g in GROUP_SIZES)
    default = "128"  # where no device is named; a bare `int4` takes default_value(device)
    conflicts = frozenset({"int8", "ipex", "autocast"})
    order = 20  # after the dtype cast (the scales take the weights' dtype), before compile

    def default_value(self, device: str) -> str:
        """dia-bench's 8da4w kernel where it builds on this CPU: a decode step's 2 rows leave torch's int4
        kernel compute bound, and the int8 dot products beat it (docs/kernels.md). Elsewhere, and on CUDA
        (torchao), weight-only int4 at group size 128."""
        if not device.startswith("cuda") and self.availability(W4A8 + self.default, device) is None:
            return W4A8 + self.default
        return self.default

    def availability(self, value: str, device: str) -> str | None:
        if value.startswith(W4A8):
            import platform

            from dia_bench.harness.kernels import builder

            if platform.machine().lower() not in ("x86_64", "amd64"):
                return f"int4={value}'s kernel is written for x86 (AVX2 or AVX-512 VNNI), not {platform.machine()}"
            try:
                builder.compiler()  # the same search the build makes ($CC, gcc, cc)
            except builder.KernelUnavailable as why:
                return f"int4={value}: {why}"
            return None
        if device.startswith("cuda"):
            if not has_module("torchao"):
                return "int4 on CUDA runs through torchao, which is not installed (pip install 'dia-bench[torchao]')"
            return None
        import torch

        if not hasattr(torch.ops.aten, "_weight_int4pack_mm_for_cpu"):
            return f"torch {torch.__version__} has no int4 CPU kernel (_weight_int4pack_mm_for_cpu); it needs 2.6+"
        return None

    def incompatibility(self, value: str, device: str, others: dict[str, Any]) -> str | None:
        if value.startswith(W4A8):
            if device.startswith("cuda"):
                return f"int4={value} is dia-bench's CPU kernel; on CUDA use int4={value[len(W4A8):]} (torchao)"
            return None  # any activation dtype: the kernel takes the rows in fp32 and returns their dtype
        if device.startswith("cuda") and others.get("dtype") != "bf16":
            return "torchao's int4 CUDA kernel takes bf16 activations: add --opt dtype=bf16"
        if others.get("dtype") == "fp16":
            return "the int4 CPU kernel runs here with bf16 activations, not fp16: use dtype=bf16 or no dtype"
        return None

    def transform(self, pipeline, value: str) -> str:
        import torch

        from dia_bench.harness.kernels import w4a8
        from dia_bench.optimizations._int4_linear import Int4Linear

        packed = value.startswith(W4A8)
        group = int(value.removeprefix(W4A8))
        if pipeline.device.type == "cuda":
            return self._torchao(pipeline, group)
        if packed:
            self.isa = w4a8.isa()  # builds the kernel on this machine's first use
            self.prefetch = w4a8.prefetches()
            self.walk = w4a8.tuning()  # calibrated at the library's first use on this processor
            self.operator = w4a8.operator()[1]
        skipped: Counter[str] = Counter()
        cached, path = self._cached_packing(pipeline, group) if packed else (None, None)
        fresh: dict[str, tuple] = {}  # what is packed here, for the cache
        names = {id(m): n for n, m in pipeline.model.named_modules()}

        def prepare(linear: torch.nn.Linear):
            # The weight in the 8da4w kernel's layout, on a thread of its own: the layer itself is made
            # in order (make), since each takes the next index of the operator's table.
            if linear.in_features % group:
                return None
            name = names[id(linear)]
            if cached is not None:
                return _in_huge_pages(cached.pop(name))  # popped: the copy read from the cache is let go
            bias = None if linear.bias is None else linear.bias.detach().float().contiguous()
            fresh[name] = ready = _in_huge_pages((linear.in_features, linear.out_features,
                                                  *w4a8.pack(linear.weight.detach(), group), bias))
            return ready

        def make(name: str, linear: torch.nn.Linear, ready) -> torch.nn.Module | None:
            if linear.in_features % group:
                skipped[f"in_features {linear.in_features} not a multiple of {group}"] += 1
                return None
            return w4a8.W4A8Linear(None, group, packed=ready) if packed else Int4Linear(linear, group)

        with torch.no_grad():
            replaced, total = swap_linears(pipeline.model, make, prepare=prepare if packed else None)
        own_remaining_tensors(pipeline.model)
        if path is not None and cached is None:
            from dia_bench.optimizations import _w4a8_cache

            _w4a8_cache.save(fresh, path)
        self.layers = {"quantized": replaced, "total": total, "left_in_float": dict(skipped)}
        how = (f"{W4A8_KERNEL} ({self.isa}; {self.walk['walk']}; {self.operator}), int8 activations"
               if packed else f"{KERNEL}, bf16 activations")
        note = f"{replaced} of {total} Linear layers int4 (group size {group}, kernel {how})"
        if packed:
            self.pages = _pages()
            note += f"; packed weights: {self.cache_state}, in {self.pages}"
        if skipped:
            note += "; left in float: " + ", ".join(f"{n} ({why})" for why, n in skipped.items())
        return note

    def _cached_packing(self, pipeline, group: int) -> tuple[dict | None, Any]:
        """(the packed layers read from the cache or None, the entry's path or None: no digest to key it
        by); sets cache_state."""
        import torch

        from dia_bench.optimizations import _w4a8_cache

        self.cache_state = "off: the checkpoint's digest is unknown"
        if not pipeline.weights_id:
            return None, None
        linears = [m for m in pipeline.model.modules() if type(m) is torch.nn.Linear]
        dtype = "+".join(sorted({str(m.weight.dtype).removeprefix("torch.") for m in linears}))
        path = _w4a8_cache.entry_path(pipeline.weights_id, group, dtype)
        if not path.is_file():
            self.cache_state = "miss: packed here and written"
            return None, path
        expected = {n: (m.in_features, m.out_features, m.bias is not None) for n, m in pipeline.model.named_modules()
                    if type(m) is torch.nn.Linear and m.in_features % group == 0}
        try:
            cached = _w4a8_cache.load(path, expected, group)
        except _w4a8_cache.StaleEntry as exc:
            path.unlink(missing_ok=True)
            self.cache_state = f"rebuilt: the entry could not serve ({exc})"
            return None, path
        self.cache_state = "hit"
        return cached, path

    def _torchao(self, pipeline, group: int) -> str:
        from torch import nn
        from torchao.quantization import Int4WeightOnlyConfig, quantize_

        total = sum(type(m) is nn.Linear for m in pipeline.model.modules())
        quantize_(pipeline.model, Int4WeightOnlyConfig(group_size=group),
                  filter_fn=lambda m, _name: type(m) is nn.Linear and m.in_features % group == 0)
        self.layers = {"total": total}
        return f"torchao Int4WeightOnlyConfig(group_size={group}) applied to the Linear layers of {total}"

    def report(self, pipeline, value: str) -> dict[str, Any]:
        if value.startswith(W4A8):
            return {"linear_kinds": linear_kinds(pipeline.model), "layers": getattr(self, "layers", None),
                    "kernel": W4A8_KERNEL, "kernel_isa": getattr(self, "isa", None),
                    "kernel_prefetch": getattr(self, "prefetch", None), "kernel_walk": getattr(self, "walk", None),
                    "kernel_operator": getattr(self, "operator", None),
                    "kernel_activations": "int8, per row and group of inputs",
                    "packed_weights_cache": getattr(self, "cache_state", None),
                    "packed_weights_pages": getattr(self, "pages", None)}
        return {"linear_kinds": linear_kinds(pipeline.model), "layers": getattr(self, "layers", None),
                "kernel": "torchao int4" if pipeline.device.type == "cuda" else KERNEL,
                "kernel_activations": "bfloat16"}


def _in_huge_pages(packed: tuple) -> tuple:
    """A packed layer (W4A8Linear's tuple) with its codes in 2 MB pages where the kernel offers them. A
    decode step streams every code once, and in 4 KB pages each 4 KB is a TLB miss and a place where the
    hardware prefetcher stops. On a 2-core Zen 5, taking turns step by step within each request
    (tests/bench/step_ab.py --compare pages --by-step), the compiled step took 0.964-0.984x the time in 2
    MB pages in all 8 requests (median 0.976). The scales and lows, under 2 MB a layer, stay where they are."""
    from dia_bench.harness.runtime import hugepages

    fan_in, fan_out, codes, scales, lows, bias = packed
    return fan_in, fan_out, hugepages.copy_of(codes), scales, lows, bias


def _pages() -> str:
    """Where the packed codes live, for the record: the kernel may refuse huge pages (memory too fragmented)
    even where it offers them, so what the process holds in them is said too."""
    from dia_bench.harness.runtime import hugepages

    if not hugepages.available():
        return f"4 KB pages (transparent huge pages: {hugepages.thp_mode() or 'none on this system'})"
    held = hugepages.resident_huge_bytes()
    return "2 MB pages" + ("" if held is None else f" ({held / 1e6:.0f} MB of the process in huge pages)")


PLUGIN = Int4
