"""How sensitive a preset's weights are: what tiny relative noise on the fp32 weights, and a cast to
bf16, do to the teacher-forced logits of one history. It asks whether a fidelity figure judges the
optimization or the weights.

    python -m tests.bench.weight_noise [--preset dia-1.6b] [--frames 24]

Prints the mean cosine of the logits and the agreement of their top token against fp32, for weights
scaled by (1 + e N(0, 1)) with e = 1e-5, 1e-4 and 1e-3 (bf16 rounds at about 4e-3), then for bf16.
Random weights at Dia's size, with Dia's unscaled attention, are chaotic: measured on a 2-core Xeon,
synthetic dia-1.6b kept 59% of its top-1 tokens at e = 1e-4; dia-tiny kept 100%.
Not a unit test (dia-1.6b holds 6.4 GB of fp32 weights twice); the figures name the machine.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch

from dia_bench.harness.cell import Cell
from dia_bench.harness.env import collect
from dia_bench.harness.runtime.pipeline import SamplingParams
from dia_bench.harness.worker.fidelity import teacher_forced_logits, valid_positions
from dia_bench.harness.worker.measure import load_pipeline

TEXT = "[S1] Dia is an open weights text to dialogue model."


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="dia-1.6b")
    parser.add_argument("--frames", type=int, default=24)
    args = parser.parse_args()
    pipe, weights = load_pipeline(Cell(preset=args.preset, device="cpu", fidelity=False))
    print(f"{args.preset} ({weights['source']} weights) on {collect('cpu')['cpu']['model']}")
    inputs = pipe.tokenize([TEXT])
    t0 = time.perf_counter()
    with torch.inference_mode():
        history = pipe.generate(inputs, args.frames, SamplingParams(), 0)
        reference = teacher_forced_logits(pipe.model, inputs, history, cfg=True)[:9]
        valid = valid_positions(history)

        def compare(name: str, model) -> None:
            got = teacher_forced_logits(model, inputs, history, cfg=True)[:9].float()
            cosine = torch.nn.functional.cosine_similarity(got[valid], reference[valid], dim=-1).mean()
            top1 = (got.argmax(-1) == reference.argmax(-1))[valid].float().mean()
            print(f"  {name:30} logits cosine {cosine:.4f}   top-1 agreement {top1:.3f}", flush=True)

        for scale in (1e-5, 1e-4, 1e-3):
            noisy = copy.deepcopy(pipe.model)
            gen = torch.Generator().manual_seed(1)
            for p in noisy.parameters():
                p.mul_(1 + scale * torch.randn(p.shape, generator=gen))
            compare(f"fp32 weights x (1 + {scale:g} N)", noisy)
            del noisy
        compare("bf16 weights", copy.deepcopy(pipe.model).to(torch.bfloat16))
    print(f"  ({time.perf_counter() - t0:.0f} s)")


if __name__ == "__main__":
    main()
