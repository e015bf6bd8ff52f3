"""TensorFloat-32 matmuls and convolutions on Ampere and newer."""

from __future__ import annotations

import contextlib

from dia_bench.optimizations._util import cuda_capability
from dia_bench.optimizations.base import Expectation, Plugin


class Tf32(Plugin):
    name = "tf32"
    description = "Allow TF32 in cuBLAS and cuDNN and set float32 matmul precision to 'high'"
    expectation = Expectation(section="4. CUDA Settings", note="Ampere+ only; no speedup figure in the guide")
    devices = frozenset({"cuda"})

    def availability(self, value: None, device: str) -> str | None:
        cap = cuda_capability(device)
        if cap is not None and cap < (8, 0):
            return f"TF32 needs compute capability 8.0+ (this GPU is {cap[0]}.{cap[1]})"
        return None

    @contextlib.contextmanager
    def context(self, value: None, device: str):
        import torch

        old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
               torch.get_float32_matmul_precision())
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
        try:
            yield
        finally:
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old[0], old[1]
            torch.set_float32_matmul_precision(old[2])

    def transform(self, pipeline, value: None) -> str | None:
        if all(p.dtype != __import__("torch").float32 for p in pipeline.model.parameters()):
            return "nothing to act on in Dia: its weights are not fp32 (the fp32 codec still uses TF32)"
        return "fp32 matmuls use TF32 tensor cores inside generate and the codec"


PLUGIN = Tf32
