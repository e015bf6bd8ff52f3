"""The Triton kernels compiled for an H100/H200 (sm_90) without one: every block size the tuner may pick
builds, spills no registers, and streams its weights through cp.async (the loads run ahead of the
sums: what keeps the bus busy with a few programs an SM). Needs Triton, not a GPU; skipped where torch
came without Triton (CPU wheels) and under Triton's interpreter, which compiles nothing."""

from __future__ import annotations

import os
import re
import subprocess
import tempfile

import pytest

from dia_bench.harness.worker import triton_linear

pytestmark = pytest.mark.skipif(triton_linear.triton is None or os.environ.get("TRITON_INTERPRET") == "1",
                                reason="needs Triton compiling for real (not installed, or interpreted)")

NOT_ALIGNED = ("M", "N", "S", "eps", "scale")  # rows, outputs (9252 logits) and keys (188) need not be


def _compile(kernel, constexprs: dict, warps: int, stages: int) -> dict:
    """Resource use and load instructions of `kernel` built for sm_90 as Triton builds it at run time:
    pointers and strides divisible by 16, Python floats as fp64 (as inductor passes them)."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    names = kernel.arg_names
    signature = {n: "constexpr" if n in constexprs else "*bf16" if n.endswith("_ptr")
                 else "fp64" if n in ("eps", "scale") else "i32" for n in names}
    attrs = {(names.index(n),): [["tt.divisibility", 16]] for n in names
             if n not in constexprs and n not in NOT_ALIGNED}
    source = ASTSource(fn=kernel, signature=signature, attrs=attrs,
                       constexprs={(names.index(n),): v for n, v in constexprs.items()})
    compiled = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                              options={"num_warps": warps, "num_stages": stages})
    tools = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    with tempfile.NamedTemporaryFile("wb", suffix=".cubin") as f:
        f.write(compiled.asm["cubin"])
        f.flush()
        usage = subprocess.run([os.path.join(tools, "cuobjdump"), "--dump-resource-usage", f.name],
                               capture_output=True, text=True, check=True).stdout
        sass = subprocess.run([os.path.join(tools, "cuobjdump"), "-sass", f.name],
                              capture_output=True, text=True, check=True).stdout
    return {"registers": int(re.search(r"REG:(\d+)", usage).group(1)),
            "stack": int(re.search(r"STACK:(\d+)", usage).group(1)),
            "async_loads": len(re.findall(r"LDGSTS", sass))}


@pytest.mark.parametrize("rows", [1, 2, 4])
@pytest.mark.parametrize("blocks", triton_linear.CANDIDATES, ids=lambda b: f"{b.n}x{b.k}w{b.warps}s{b.stages}")
@pytest.mark.parametrize(("norm", "gated"), [(True, False), (False, True)])
def test_every_candidate_builds_for_sm90_without_spills_and_pipelines_its_loads(rows, blocks, norm, gated):
    built = _compile(triton_linear._gemv_kernel,
                     {"ROWS": rows, "BLOCK_N": blocks.n, "BLOCK_K": blocks.k, "NORM": norm, "GATED": gated,
                      "RESIDUAL": gated, "EVEN_K": True, "STAGES": blocks.stages}, blocks.warps, blocks.stages)
    assert built["stack"] == 0, built  # a spill shows as a stack frame
    assert built["registers"] <= 255 and built["async_loads"] > 0, built


def test_the_attention_kernel_builds_for_sm90_with_fp64_scale():
    from dia_bench.harness.worker import triton_attention

    built = _compile(triton_attention._decode_attention_kernel, {"G": 4, "BLOCK_G": 16, "BLOCK_S": 64, "D": 128},
                     4, 3)
    assert built["stack"] == 0 and built["async_loads"] > 0, built
