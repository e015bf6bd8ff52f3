"""C kernels dia-bench builds on the machine that runs them, at first use, with the system compiler, and the
C++ operators that call them from torch (`build_operator`).

Each is keyed by its source, the compiler and its version, the flags and the processor (these VMs
change CPU from one run to the next), and built into the cache atomically: a concurrent worker sees a whole
library or none. OpenMP resolves to the runtime torch already loaded, so `threads=N` governs it too."""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path

from dia_bench.harness.paths import cache_dir

FLAGS = ("-O3", "-ffp-contract=fast", "-fopenmp", "-shared", "-fPIC", "-std=c11")
# An operator is a thin C++ layer between torch's dispatcher and a C kernel, written against torch's stable
# C ABI (torch/csrc/stable): its headers compile in about 2 s, where the full C++ API's take about a minute.
OPERATOR_FLAGS = ("-O2", "-shared", "-fPIC", "-std=c++17")


class KernelUnavailable(RuntimeError):
    """A kernel cannot be built here; the message says why."""


def compiler() -> str:
    """The C compiler kernels are built with: $CC, else gcc, else cc."""
    found = shutil.which(os.environ.get("CC", "gcc")) or shutil.which("cc")
    if not found:
        raise KernelUnavailable("no C compiler found (gcc or $CC): dia-bench builds its kernels here at first use")
    return found


def cxx_compiler() -> str:
    """The C++ compiler operators are built with: $CXX, else g++, else c++."""
    found = shutil.which(os.environ.get("CXX", "g++")) or shutil.which("c++")
    if not found:
        raise KernelUnavailable("no C++ compiler found (g++ or $CXX)")
    return found


@cache  # a compiler's version does not change within a process
def _compiler_version(cc: str) -> str:
    return subprocess.run([cc, "--version"], capture_output=True, text=True, check=False).stdout


def _key(source: Path, cc: str, *more: str) -> str:
    """What names a build: its source, the compiler and its version, and whatever else decides the result."""
    return hashlib.sha256("\0".join([source.read_text(), cc, _compiler_version(cc), *more]).encode()).hexdigest()[:16]


@cache  # the CPU's flags do not change within a process
def library_path(source: Path, cc: str, march: str) -> Path:
    from dia_bench.harness.env import cpu_info

    cpu = cpu_info()
    key = _key(source, cc, " ".join(FLAGS), march, cpu["model"], " ".join(cpu["flags"]))
    return cache_dir() / "kernels" / f"{source.stem.removesuffix('_kernel').lstrip('_')}-{march}-{key}.so"


def _compile(command: list[str], path: Path, failure: str) -> None:
    """Runs `command` with its output at a temporary path and moves the result to `path`: a concurrent
    process sees a whole library or none."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        built = Path(tmp) / path.name
        done = subprocess.run([*command, "-o", str(built)], capture_output=True, text=True, check=False)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no message"])[-1]
            raise KernelUnavailable(f"{failure}: {last}")
        os.replace(built, path)


def build(source: Path, what: str, march: str = "native") -> ctypes.CDLL:
    """The library built from `source` for `march` (native: this processor), compiled now if this machine
    has not built it before. `what` names the kernel in the error a failed build raises."""
    cc = compiler()
    path = library_path(source, cc, march)
    if not path.exists():
        _compile([cc, *FLAGS, f"-march={march}", str(source), "-lm"], path,
                 f"the {what} kernel did not compile with {cc}")
    return ctypes.CDLL(str(path))


def build_operator(source: Path, what: str) -> Path:
    """The operator library built from the C++ `source` against this torch, compiled now if this machine has
    not built it before; load it with torch.ops.load_library, which registers its implementations. Keyed by
    the source, the compiler and torch's version (not the processor: it holds no arithmetic of its own)."""
    import torch

    cxx = cxx_compiler()
    root = Path(torch.__file__).parent
    key = _key(source, cxx, " ".join(OPERATOR_FLAGS), torch.__version__, str(root))
    path = cache_dir() / "kernels" / f"{source.stem}-{key}.so"
    if not path.exists():
        lib = root / "lib"
        _compile([cxx, *OPERATOR_FLAGS, f"-I{root / 'include'}", str(source), f"-L{lib}", f"-Wl,-rpath,{lib}",
                  "-ltorch_cpu", "-lc10"], path, f"the {what} operator did not compile with {cxx}")
    return path
