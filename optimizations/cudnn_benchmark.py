"""cuDNN autotuning: picks the fastest convolution algorithms for the shapes seen."""

from __future__ import annotations

import contextlib

from dia_bench.optimizations.base import Expectation, Plugin


class CudnnBenchmark(Plugin):
    name = "cudnn-benchmark"
    description = "torch.backends.cudnn.benchmark = True (acts on convolutions: only the DAC codec has them)"
    expectation = Expectation(section="4. CUDA Settings", speedup=(1.1, 1.1), note="conv ops")
    devices = frozenset({"cuda"})
    warms_per_shape = True

    @contextlib.contextmanager
    def context(self, value: None, device: str):
        import torch

        old = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = True
        try:
            yield
        finally:
            torch.backends.cudnn.benchmark = old

    def transform(self, pipeline, value: None) -> str:
        import torch

        convs = sum(isinstance(m, torch.nn.Conv1d | torch.nn.Conv2d | torch.nn.ConvTranspose1d)
                    for m in pipeline.model.modules())
        return ("acts on the codec's convolutions only: the Dia transformer has none" if not convs
                else f"acts on {convs} convolutions in Dia and the codec's")


PLUGIN = CudnnBenchmark
