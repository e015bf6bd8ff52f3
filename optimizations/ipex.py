"""Intel Extension for PyTorch: ipex.optimize on the Dia model (Intel CPUs)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from optimizations.base import Expectation, Plugin


def _major_minor(v: str) -> str:
    return ".".join(v.split("+")[0].split(".")[:2])


class Ipex(Plugin):
    name = "ipex"
    description = "intel-extension-for-pytorch's ipex.optimize on the Dia model (Intel CPUs, matching torch)"
    expectation = Expectation(section="CPU-Specific Optimizations / 3. Intel Extension for PyTorch",
                              note="no speedup figure in the guide")
    devices = frozenset({"cpu"})
    order = 30

    def availability(self, value: None, device: str) -> str | None:
        # Checked from package metadata: importing a mismatched IPEX crashes the process on exit.
        try:
            ipex_version = version("intel-extension-for-pytorch")
        except PackageNotFoundError:
            return "intel-extension-for-pytorch is not installed (Intel has stopped developing it)"
        torch_version = version("torch")
        if _major_minor(ipex_version) != _major_minor(torch_version):
            return (f"intel-extension-for-pytorch {ipex_version} needs torch {_major_minor(ipex_version)}.*, "
                    f"this is torch {torch_version}")
        from harness.env import cpu_info

        vendor = (cpu_info().get("vendor") or "") + " " + (cpu_info().get("model") or "")
        if "intel" not in vendor.lower():
            return f"IPEX targets Intel CPUs; this CPU is {cpu_info().get('model')}"
        return None

    def transform(self, pipeline, value: None) -> str:
        import intel_extension_for_pytorch as ipex

        dtype = next(pipeline.model.parameters()).dtype
        pipeline.model = ipex.optimize(pipeline.model.eval(), dtype=dtype, inplace=True)
        return f"ipex.optimize applied ({dtype})"

    def report(self, pipeline, value: None) -> dict[str, Any]:
        return {"ipex": version("intel-extension-for-pytorch")}


PLUGIN = Ipex
