"""The load generator's own overhead: how late does it send a request, against a target that costs
nothing? An open-loop client must never be what limits a measured server.

    python -m tests.bench.load_overhead [--rate 50] [--requests 1000]

Prints the scheduling lag (sent minus scheduled) p50/p99/max against the in-process null target,
and against a null HTTP server on loopback where the `serve` extra is installed (the client's HTTP
stack included). The goal is a p99 under 5 ms at 50 requests a second. Not a unit test.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util

import numpy as np

from dia_bench.harness import env
from dia_bench.harness.serving.loadgen import run_load
from dia_bench.harness.serving.targets import null_target


def _lags_ms(run) -> np.ndarray:
    return np.array([r.lag_s for r in run.records if r.lag_s is not None]) * 1000


def _line(name: str, run) -> str:
    lags = _lags_ms(run)
    p50, p99 = np.percentile(lags, [50, 99])
    ok = sum(r.status == "ok" for r in run.records)
    return (f"{name}: {ok} of {len(run.records)} ok; scheduling lag p50 {p50:.3f} ms, p99 {p99:.3f} ms, "
            f"max {lags.max():.3f} ms")


async def _http(rate: float, requests: int, seed: int):
    import httpx

    from dia_bench.harness.serving.web import create_app, http_target, serve

    async with serve(create_app(null_target)) as url, httpx.AsyncClient(timeout=None) as client:
        return await run_load(http_target(client, url + "/v1/speech"), ["[S1] Hello."], rate, requests=requests,
                              seconds=0.1, seed=seed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"cpu: {env.cpu_info()['model']}  rate {args.rate:g}/s  requests {args.requests}")
    run = asyncio.run(run_load(null_target, ["[S1] Hello."], args.rate, requests=args.requests, seconds=0.1,
                               seed=args.seed))
    print(_line("in-process null target", run))
    if all(importlib.util.find_spec(m) for m in ("starlette", "uvicorn", "httpx")):
        print(_line("null HTTP server on loopback", asyncio.run(_http(args.rate, args.requests, args.seed))))
    else:
        print("null HTTP server: skipped (pip install 'dia-bench[serve]')")


if __name__ == "__main__":
    main()
