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


@nox.session(python=PYTHON)
def lint(session: nox.Session) -> None:
    session.install("ruff>=0.5")
    session.run("ruff", "check", "harness", "optimizations", "reports", "suites", "tests", "noxfile.py")
