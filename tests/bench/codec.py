"""What the DAC codec costs per second of audio, and what the guide's CPU techniques do to it: one process,
the variants taking turns each round, so a machine that drifts drifts on all of them.

    python -m tests.bench.codec [--seconds 2] [--rounds 5] [--preset dia-1.6b]

Variants: fp32 (today's), autocast=bf16 (what the autocast plugin does to the codec), the codec's weights
in bf16 (codec-dtype=bf16), and torch.compile of the decoder in fp32 and with its weights in bf16
(codec-compile; here for the one length measured), and the last three again with the decoder in channels_last
(channels-last: its 1-D layers as 2-D ones of height 1). Prints seconds of compute per second of audio (the
codec's share of the RTF) with the spread over rounds, and how far each variant's audio is from fp32's
(SNR).
Not a unit test: the figures depend on the machine; name it with them.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch

from dia_bench.harness.cell import Cell
from dia_bench.harness.env import collect
from dia_bench.harness.presets import FRAMES_PER_SECOND, frames_for_seconds
from dia_bench.harness.runtime.codec import snr_db
from dia_bench.harness.runtime.codec_layout import to_channels_last
from dia_bench.harness.worker.measure import load_pipeline


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--preset", default="dia-1.6b")
    ap.add_argument("--flush-denormal", action="store_true", help="torch.set_flush_denormal(True) first")
    args = ap.parse_args()
    torch.set_flush_denormal(args.flush_denormal)
    pipe, _ = load_pipeline(Cell(preset=args.preset, fidelity=False))
    dac = pipe.codec.model
    frames = frames_for_seconds(args.seconds)
    codes = torch.randint(0, 1024, (1, frames, dac.config.n_codebooks))
    # DacModel.decode takes (batch, codebooks, frames)
    codes = codes.transpose(1, 2)

    def fp32():
        return dac.decode(audio_codes=codes).audio_values.float()

    def autocast_bf16():
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return dac.decode(audio_codes=codes).audio_values.float()

    bf16_dac = copy.deepcopy(dac).to(torch.bfloat16)

    def weights_bf16():
        return bf16_dac.decode(audio_codes=codes).audio_values.float()

    compiled = torch.compile(dac.decoder)

    def compiled_fp32():
        z = dac.quantizer.from_codes(codes)[0]
        return compiled(z).float()

    compiled_bf16 = torch.compile(bf16_dac.decoder)

    def compiled_weights_bf16():
        z = bf16_dac.quantizer.from_codes(codes)[0]
        return compiled_bf16(z).float()

    def channels_last(model):
        model = copy.deepcopy(model)
        to_channels_last(model.decoder)
        return model

    cl_bf16_dac = channels_last(bf16_dac)

    def weights_bf16_cl():
        return cl_bf16_dac.decode(audio_codes=codes).audio_values.float()

    cl_fp32_dac = channels_last(dac)
    compiled_cl = torch.compile(cl_fp32_dac.decoder)
    compiled_bf16_cl = torch.compile(cl_bf16_dac.decoder)  # the eager variant's model, as for compile bf16

    def compiled_fp32_cl():
        return compiled_cl(cl_fp32_dac.quantizer.from_codes(codes)[0]).float()

    def compiled_weights_bf16_cl():
        return compiled_bf16_cl(cl_bf16_dac.quantizer.from_codes(codes)[0]).float()

    variants = {"fp32": fp32, "autocast=bf16": autocast_bf16, "weights bf16": weights_bf16,
                "compile fp32": compiled_fp32, "compile bf16": compiled_weights_bf16,
                "bf16 + cl": weights_bf16_cl, "compile fp32 + cl": compiled_fp32_cl,
                "compile bf16 + cl": compiled_weights_bf16_cl}
    with torch.inference_mode():
        ref = fp32()
        quality = {name: snr_db(fn().reshape(-1), ref.reshape(-1)) for name, fn in variants.items()}  # warms all
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, fn in variants.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    seconds = frames / FRAMES_PER_SECOND
    env = collect("cpu")
    print(f"{env['cpu']['model']} ({env['cpu']['logical_cores']} cores), torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; {args.preset} codec, {seconds:.2f} s of audio, {args.rounds} rounds")
    base = statistics.median(times["fp32"])
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"{name:18} {med / seconds:.3f} s per audio second (rounds {min(ts) / seconds:.3f}-"
              f"{max(ts) / seconds:.3f}), {base / med:.2f}x fp32, SNR against fp32 {_db(quality[name])}")


def _db(snr: float | None) -> str:
    return "identical" if snr is None else f"{snr:.1f} dB"


if __name__ == "__main__":
    main()
