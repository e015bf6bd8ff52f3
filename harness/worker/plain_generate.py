"""A plain `model.generate`, timed outside the harness, to cross-check the harness's timing.

    python -m dia_bench.harness.worker.plain_generate --weights DIR --text T --frames F [--repeats N] [--warmup N]

Only transformers and torch: no streamer, no hooks, no plugin contexts. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--weights", required=True)
    parser.add_argument("--text", required=True)
    parser.add_argument("--frames", type=int, required=True)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    import torch
    from transformers import DiaFeatureExtractor, DiaForConditionalGeneration, DiaProcessor, DiaTokenizer

    model = DiaForConditionalGeneration.from_pretrained(args.weights, dtype=torch.float32).eval()
    processor = DiaProcessor(DiaFeatureExtractor(sampling_rate=44100, hop_length=512), DiaTokenizer(), None)
    inputs = processor(text=[args.text], padding=True, return_tensors="pt")
    kwargs = dict(max_new_tokens=args.frames + 16, guidance_scale=3.0, temperature=1.8, top_p=0.90, top_k=45,
                  do_sample=True, suppress_tokens=[1024])
    times = []
    for i in range(args.warmup + args.repeats):
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(**inputs, **kwargs)
        elapsed = time.perf_counter() - t0
        if i >= args.warmup:
            times.append(elapsed)
    print(json.dumps({"repeats_seconds": times, "median_seconds": statistics.median(times),
                      "output_shape": list(out.shape)}))


if __name__ == "__main__":
    main()
