"""Intel Extension for PyTorch: ipex.optimize on the Dia model (Intel CPUs; runs elsewhere too)."""

from __future__ import annotations

import subprocess
import sys
import warnings
from collections import Counter
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from dia_bench.optimizations.base import Expectation, Plugin

# Its last release: IPEX is no longer developed, so this stack is the only one it runs under.
STACK_HINT = "run it under the torch-2.8-ipex stack: nox -s bench-stack-torch-2.8-ipex"


def _major_minor(v: str) -> str:
    return ".".join(v.split("+")[0].split(".")[:2])


@lru_cache(maxsize=1)
def ipex_says_on_import() -> str:
    """What IPEX itself prints when imported beside this torch: in a child process, because a
    mismatched IPEX crashes the process that imports it on the way out."""
    try:
        done = subprocess.run([sys.executable, "-c", "import intel_extension_for_pytorch"], capture_output=True,
                              text=True, timeout=120, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"importing it failed ({type(exc).__name__})"
    lines = [ln.strip() for ln in (done.stderr + done.stdout).splitlines() if ln.strip()]
    said = next((ln for ln in lines if "ERROR" in ln or "needs to work" in ln), lines[-1] if lines else "")
    return f"{said} (exit status {done.returncode})" if said else f"import exits with status {done.returncode}"


def _is_intel(cpu: dict[str, Any]) -> bool:
    return "intel" in f"{cpu.get('vendor') or ''} {cpu.get('model') or ''}".lower()


def _is_ipex_module(module) -> bool:
    return type(module).__module__.startswith("intel_extension")


def _ipex_modules(model) -> dict[str, int]:
    counts = Counter(type(m).__name__ for m in model.modules() if _is_ipex_module(m))
    return dict(sorted(counts.items()))


class Ipex(Plugin):
    name = "ipex"
    description = "intel-extension-for-pytorch's ipex.optimize on the Dia model (Intel CPUs, matching torch)"
    expectation = Expectation(section="CPU-Specific Optimizations / 3. Intel Extension for PyTorch",
                              note="no speedup figure in the guide")
    devices = frozenset({"cpu"})
    order = 30  # after dtype and int8: ipex.optimize sees the weights the cell runs with

    def availability(self, value: None, device: str) -> str | None:
        # From package metadata first: importing a mismatched IPEX crashes the process on exit.
        try:
            ipex_version = version("intel-extension-for-pytorch")
        except PackageNotFoundError:
            return f"intel-extension-for-pytorch is not installed; {STACK_HINT}"
        torch_version = version("torch")
        if _major_minor(ipex_version) != _major_minor(torch_version):
            return (f"intel-extension-for-pytorch {ipex_version} needs torch {_major_minor(ipex_version)}.*, this is "
                    f"torch {torch_version}; IPEX itself says: {ipex_says_on_import()}; {STACK_HINT}")
        # A non-Intel CPU is not refused: IPEX runs there (its kernels are tuned for Intel), and the
        # record says so, so that its figure is read for what it is.
        return None

    def transform(self, pipeline, value: None) -> str:
        from dia_bench.harness.env import cpu_info

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import intel_extension_for_pytorch as ipex

            dtype = next(pipeline.model.parameters()).dtype
            pipeline.model = ipex.optimize(pipeline.model.eval(), dtype=dtype, inplace=True)
        replaced = _ipex_modules(pipeline.model)
        note = (f"ipex.optimize ({str(dtype).removeprefix('torch.')}) replaced "
                + (", ".join(f"{n} x{c}" for n, c in replaced.items()) or "no module"))
        cpu = cpu_info()
        if not _is_intel(cpu):
            note += f"; this CPU ({cpu.get('model')}) is not Intel: IPEX ran, but its kernels target Intel CPUs"
        said = sorted({str(w.message).splitlines()[0][:160] for w in caught})
        if said:
            note += "; IPEX warned: " + " | ".join(said)
        return note

    def report(self, pipeline, value: None) -> dict[str, Any]:
        return {"ipex": version("intel-extension-for-pytorch"), "ipex_modules": _ipex_modules(pipeline.model)}


PLUGIN = Ipex
