"""Does this machine's memory bandwidth hold still? The roofline's probe (harness/worker/roofline.py:
bandwidth_probe), taken in turns on fresh buffers and on buffers kept alive, over some rounds.

    python -m tests.bench.bandwidth_drift [--rounds 8] [--pause 2]

Prints per round the fresh probe and each kept buffer's read bandwidth (GB/s, best of 5 sums over
256 MiB). Fresh and kept moving together means time (the VM's neighbours); one kept buffer apart
from the others in every round means where its pages landed. On a 2-core Zen 4 VM both were seen:
50 GB/s falling to 32 within 20 s, and one buffer 10% slower than three others. Not a unit test.
"""

from __future__ import annotations

import argparse
import time

import torch

from dia_bench.harness import env
from dia_bench.harness.worker.roofline import PROBE_BYTES, bandwidth_probe, read_gbps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--pause", type=float, default=2.0, help="seconds between rounds")
    parser.add_argument("--kept", type=int, default=4, help="buffers kept alive over the rounds")
    args = parser.parse_args()
    cpu = torch.device("cpu")
    kept = [torch.ones(PROBE_BYTES // 4) for _ in range(args.kept)]
    print(f"cpu: {env.cpu_info()['model']}  threads: {torch.get_num_threads()}  buffers: {PROBE_BYTES / 2**20:.0f} MiB")
    for rnd in range(args.rounds):
        kept_gbps = "  ".join(f"{read_gbps(x):5.1f}" for x in kept)
        print(f"round {rnd}: fresh {bandwidth_probe(cpu):5.1f}   kept {kept_gbps}", flush=True)
        time.sleep(args.pause)


if __name__ == "__main__":
    main()
