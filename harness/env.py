"""What machine and software a measurement ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import socket
import subprocess
from functools import lru_cache
from pathlib import Path
from typing import Any

from dia_bench import harness

# The features that decide which optimizations can pay off on a CPU.
CPU_FEATURES = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx512_fp16", "avx_vnni",
                "amx_bf16", "amx_int8", "amx_tile", "neon", "asimd", "sve")


@lru_cache(maxsize=1)
def git_commit() -> str | None:
    """The project's commit: DIA_BENCH_GIT_COMMIT where set (a copy of the tree whose .git is not the one it
    came from says so), else the checkout's (nox installs it editable)."""
    if os.environ.get("DIA_BENCH_GIT_COMMIT"):
        return os.environ["DIA_BENCH_GIT_COMMIT"]
    here = Path(harness.__file__).resolve().parent.parent
    try:
        out = subprocess.run(["git", "-C", str(here), "rev-parse", "HEAD"], capture_output=True, text=True,
                             timeout=5, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(here), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return out + ("-dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def git_subject() -> str | None:
    """The first line of the commit's message: `dia-bench history` names commits by it."""
    if os.environ.get("DIA_BENCH_GIT_SUBJECT"):
        return os.environ["DIA_BENCH_GIT_SUBJECT"]
    here = Path(harness.__file__).resolve().parent.parent
    try:
        return subprocess.run(["git", "-C", str(here), "log", "-1", "--format=%s"], capture_output=True, text=True,
                              timeout=5, check=True).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


@lru_cache(maxsize=1)
def cpu_info() -> dict[str, Any]:
    import cpuinfo
    import psutil

    info = cpuinfo.get_cpu_info()
    flags = set(info.get("flags", []))
    return {
        "model": info.get("brand_raw") or platform.processor(),
        "vendor": info.get("vendor_id_raw"),
        "arch": info.get("arch") or platform.machine(),
        "physical_cores": psutil.cpu_count(logical=False),
        "logical_cores": psutil.cpu_count(logical=True),
        # A run pinned with taskset (a 2-core figure taken on a larger server) must say so.
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "features": {f: f in flags for f in CPU_FEATURES},
        "flags": sorted(flags),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
    }


def usable_cores(cpu: dict[str, Any]) -> int | None:
    """The hardware threads a run could use: its affinity where recorded, else all the machine has."""
    return cpu.get("usable_cores") or cpu.get("logical_cores")


def pinned_cores(cpu: dict[str, Any]) -> int | None:
    """The hardware threads a pinned process could use, or None where it could use all the machine has."""
    usable = cpu.get("usable_cores")
    return usable if usable and usable < (cpu.get("logical_cores") or cpu.get("physical_cores") or 0) else None


def cores_label(cpu: dict[str, Any]) -> str:
    """`16 cores`, or `2 of 16 cores (pinned)` where the process could use fewer than the machine has."""
    cores, pinned = cpu.get("physical_cores"), pinned_cores(cpu)
    if pinned and cores:
        return f"{pinned} of {cores} cores (pinned)"
    return f"{cores if cores is not None else '?'} cores"


def gpu_info() -> list[dict[str, Any]]:
    """Every NVIDIA GPU through NVML; empty where there is no driver."""
    try:
        import pynvml

        pynvml.nvmlInit()
    except Exception:  # NVMLError_LibraryNotFound without a GPU, ImportError without the package
        return []
    gpus = []
    try:
        driver = pynvml.nvmlSystemGetDriverVersion()
        for i in range(pynvml.nvmlDeviceGetCount()):
            h = pynvml.nvmlDeviceGetHandleByIndex(i)
            major, minor = pynvml.nvmlDeviceGetCudaComputeCapability(h)
            gpus.append({
                "index": i,
                "name": pynvml.nvmlDeviceGetName(h),
                "driver": driver,
                "capability": f"{major}.{minor}",
                "memory_gb": round(pynvml.nvmlDeviceGetMemoryInfo(h).total / 2**30, 1),
            })
    finally:
        pynvml.nvmlShutdown()
    return gpus


# Threads' settings a record names where set: their count, and how OpenMP's threads wait between parallel
# regions. A decode step makes about a hundred of those, and under OMP_WAIT_POLICY=passive a 2-core
# Zen 5's int4=8da4w GEMVs read their weights at 0.6-0.8x the rate they had with the default (a step's
# layers, two processes each way, against one long layer in the same processes).
THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME",
              "OMP_PROC_BIND", "OMP_PLACES")

# Packages that only some software stacks have (suites/stacks.toml): read from metadata, never
# imported, since a mismatched one (IPEX beside another torch) crashes the process that imports it.
STACK_PACKAGES = ("intel-extension-for-pytorch", "torchaudio", "descript-audio-codec", "torchao")


def stack_packages() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in STACK_PACKAGES:
        with contextlib.suppress(PackageNotFoundError):
            found[name] = version(name)
    return found


def software() -> dict[str, Any]:
    import torch
    import transformers

    return {
        # Set by the nox stack sessions; None for any other venv.
        "stack": os.environ.get("DIA_BENCH_STACK") or None,
        "packages": stack_packages(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "dia_bench": harness.__version__,
        "git_commit": git_commit(),
        "git_subject": git_subject(),
    }


def collect(device: str = "cpu") -> dict[str, Any]:
    import torch

    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "platform": platform.platform(),
        "cpu": cpu_info(),
        "gpus": gpu_info(),
        "software": software(),
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "thread_env": {k: os.environ[k] for k in THREAD_ENV if k in os.environ},
        "device": device,
    }
    if device.startswith("cuda") and torch.cuda.is_available():
        idx = torch.device(device).index or 0
        env["device_name"] = torch.cuda.get_device_name(idx)
        env["device_capability"] = "{}.{}".format(*torch.cuda.get_device_capability(idx))
    else:
        env["device_name"] = env["cpu"]["model"]
    return env
