"""Device time of one small kernel as a decode step's CUDA graph runs it.

Timing a microsecond kernel call by call (Triton's `do_bench`, CUDA events around each launch) measures
the host: on an H200 it gave cuBLAS 9.4 us for a 2-row 2048x2048 GEMM that the profiler saw take 5.7
us inside the step's graph, and dia-bench's first Triton kernels were tuned on such figures. Here the
calls are captured back to back in one CUDA graph, as in the step, and each call reads its own copy
of the inputs, so that weights come from memory as a step's 18 layers do and not from the 50 MB L2.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any

import torch

L2_SPAN_BYTES = 256 << 20  # the copies cycled through: several times any GPU's L2


def copies_for(nbytes: int, most: int = 64) -> int:
    """How many copies of `nbytes` of inputs keep a sequence of calls out of the L2."""
    return max(2, min(most, -(-L2_SPAN_BYTES // max(nbytes, 1))))


def graph_time_us(call: Callable[[Any], Any], inputs: Sequence[Any], replays: int = 20) -> float:
    """Median device time in us of `call(inputs[i])`, the calls captured in one CUDA graph over every
    input in turn and the graph replayed `replays` times."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):  # warm up outside the capture: Triton compiles, cuBLAS picks its kernel
        for item in inputs[:2]:
            call(item)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for item in inputs:
            call(item)
    graph.replay()
    times = []
    for _ in range(replays):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1000 / len(inputs))
    return statistics.median(times)
