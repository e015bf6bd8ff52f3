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
    """The main job: measure Dia on this machine. Extra arguments go to `dia-bench run`."""
    _install(session)
    session.run("dia-bench", "env")
    args = session.posargs or []
    session.run("dia-bench", "run", "--json", "bench-results/bench.json", *args)


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "harness", "optimizations", "reports", "suites", "tests", "noxfile.py")
