"""What decoding a long request in chunks (`codec-chunks`) does to the codec's time: the whole request in one
pass against chunks of several sizes, each with the decoder's receptive field of context on either side,
taking turns round after round in one process.

    python -m tests.bench.codec_chunks [--seconds 10] [--rounds 4] [--chunks 86,172,344] [--plugins ...]

The codec as the fastest CPU pipeline runs it by default (`codec-dtype=bf16 codec-compile channels-last`; `--plugins`
sets others), dia-1.6b's DAC on random codes (its speed does not depend on them). Prints seconds of compute
per second of audio for each way, and each chunked waveform's RMS difference from the one-pass one,
relative to its RMS. Not a unit test: the figures depend on the machine; name it with them.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

import torch

from dia_bench.harness import env
from dia_bench.harness.cell import Cell
from dia_bench.harness.presets import frames_for_seconds
from dia_bench.harness.runtime.codec import decode_in_chunks, decoder_context_frames
from dia_bench.harness.worker.measure import load_pipeline
from dia_bench.optimizations.registry import apply_plan, resolve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--chunks", default="86,172,344", help="frames a chunk, comma-separated")
    parser.add_argument("--plugins", default="codec-dtype=bf16,codec-compile,channels-last")
    args = parser.parse_args()
    cell = Cell(plugins=[p for p in args.plugins.split(",") if p], seconds=args.seconds)
    pipe, _ = load_pipeline(cell)
    apply_plan(pipe, resolve(cell.plugins, pipe.device.type), pipe.device.type)
    context = decoder_context_frames(pipe.codec)
    codes = torch.randint(0, 1024, (1, 9, frames_for_seconds(args.seconds)))
    decode = pipe.codec.decode
    ways = {"one pass": lambda: decode(codes).float()}
    for chunk in (int(c) for c in args.chunks.split(",")):
        ways[f"chunks of {chunk}"] = lambda chunk=chunk: decode_in_chunks(decode, codes, chunk, context).float()
    with torch.inference_mode():
        whole = ways["one pass"]()  # also the compile, where codec-compile is on
        differs = {name: float((way() - whole).pow(2).mean().sqrt() / whole.pow(2).mean().sqrt())
                   for name, way in ways.items()}
        per_second: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(args.rounds):
            order = list(ways)
            random.shuffle(order)
            for name in order:
                start = time.perf_counter()
                ways[name]()
                per_second[name].append((time.perf_counter() - start) / args.seconds)
    print(f"cpu: {env.cpu_info()['model']}  threads: {torch.get_num_threads()}  plugins: {' '.join(cell.plugins)}  "
          f"{codes.shape[-1]} frames, {context} frames of context either side")
    for name, got in per_second.items():
        print(f"{name:16s} {statistics.median(got):.3f} s per audio second (range {min(got):.3f}-{max(got):.3f}), "
              f"relative RMS difference from one pass {differs[name]:.1e}")


if __name__ == "__main__":
    main()
