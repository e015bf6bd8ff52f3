"""nox sessions: tests, bench (the main job) and lint.

torch is installed first from DIA_BENCH_TORCH_SPEC (default `torch==2.13.0`, a CPU wheel on these
machines) so that resolving the project never pulls a multi-GB CUDA build by accident. On a GPU
machine set e.g. DIA_BENCH_TORCH_SPEC="torch==2.11.0" with the matching index in PIP_INDEX_URL.
"""

from __future__ import annotations

import os

import nox

nox.options.sessions = ["lint", "tests"]
nox.options.reuse_existing_virtualenvs = True

TORCH_SPEC = os.environ.get("DIA_BENCH_TORCH_SPEC", "torch==2.13.0")
PYTHON = os.environ.get("DIA_BENCH_PYTHON") or None  # None: the interpreter running nox


def _install(session: nox.Session, *extras: str) -> None:
    session.install(TORCH_SPEC)
    target = ".[" + ",".join(extras) + "]" if extras else "."
    # Editable, so records can name the git commit of the code that measured them.
    session.install("-e", target, f"--constraint={_torch_constraint(session)}")


def _torch_constraint(session: nox.Session) -> str:
    path = os.path.join(session.create_tmp(), "torch-constraint.txt")
    with open(path, "w") as fh:
        fh.write(TORCH_SPEC + "\n")
    return path


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """The test suite on the dia-tiny preset (CUDA tests skip without a GPU)."""
    _install(session, "test")
    session.run("pytest", "-q", *session.posargs, env={"DIA_BENCH_CACHE": os.path.join(session.create_tmp(), "cache")})


@nox.session(python=PYTHON)
def bench(session: nox.Session) -> None:
    """The main job: the `default` suite (gpu with CUDA, else cpu) on this machine.

    `nox -s bench -- --suite smoke` picks another suite; other arguments go to `dia-bench sweep`.
    """
    _install(session)
    args = list(session.posargs)
    suite = "default"
    if "--suite" in args:
        i = args.index("--suite")
        suite = args[i + 1]
        del args[i:i + 2]
    session.run("dia-bench", "env")
    session.run("dia-bench", "sweep", suite, *args)


# descript-audio-codec imports torchaudio, and a torchaudio build loads beside its own torch release
# only: beside the CPU torch 2.13 above pip picks torchaudio 2.11, which fails to load. torch 2.9.1
# with torchaudio 2.9.1 works; from PyPI that torch is a CUDA build, so the venv takes about 8 GB
# (first run about 4 minutes here, later runs under 1). Not a default session.
DESCRIPT_TORCH = ("torch==2.9.1", "torchaudio==2.9.*")


@nox.session(python=PYTHON)
def descript(session: nox.Session) -> None:
    """The descript codec backend against transformers' DacModel, and a dia-tiny cell with it."""
    session.install(*DESCRIPT_TORCH)
    path = os.path.join(session.create_tmp(), "descript-constraint.txt")
    with open(path, "w") as fh:
        fh.write("\n".join(DESCRIPT_TORCH) + "\n")
    session.install("-e", ".[dac,test]", f"--constraint={path}")
    session.run("pytest", "-q", "-rs", "-m", "descript", "tests/test_descript.py", *session.posargs,
                env={"DIA_BENCH_CACHE": os.path.join(session.create_tmp(), "cache")})


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "harness", "optimizations", "reports", "suites", "tests", "noxfile.py")
