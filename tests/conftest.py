"""Shared fixtures: the real pipeline on the dia-tiny preset, real torch and transformers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# Synthetic weights and caches go to one place per test session unless the caller chose one.
if "DIA_BENCH_CACHE" not in os.environ:
    import tempfile

    os.environ["DIA_BENCH_CACHE"] = tempfile.mkdtemp(prefix="dia-bench-test-cache-")

from dia_bench.harness.cell import Cell

TINY = dict(preset="dia-tiny", device="cpu", seconds=0.25, warmup=0, repeats=1)


@pytest.fixture(autouse=True)
def _own_process_noise_history(tmp_path_factory, monkeypatch) -> None:
    """Every test starts from the default prior: the machine's history of noise between processes
    would otherwise be whatever earlier tests' sweeps left in it, and a verdict would depend on the order."""
    from dia_bench.harness.process_noise import HISTORY_ENV

    monkeypatch.setenv(HISTORY_ENV, str(tmp_path_factory.mktemp("history") / "process-noise.json"))


def quiet_machine(run_dir: Path) -> None:
    """Says in a run's run.json that it started from the history of a machine whose processes differ by
    2%: for a test whose records it rewrote to a quiet machine's, so that a 2x change must stand out
    (dia-tiny's own default prior, 25%, rightly hides much of one)."""
    import json

    meta_path = run_dir / "run.json"
    meta = json.loads(meta_path.read_text())
    meta["process_noise_prior"] = {kind: {"variance": 0.02 ** 2, "df": 40.0, "source": "a quiet machine's history"}
                                   for kind in meta.get("process_noise_prior") or {}}
    meta_path.write_text(json.dumps(meta))


def tiny_cell(**kw) -> Cell:
    return Cell(**{**TINY, **kw})


def run_cli(*args: str, env: dict | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """The real command line in its own process, as a user runs it."""
    return subprocess.run([sys.executable, "-m", "dia_bench.harness.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})}, stdin=subprocess.DEVNULL)


def needs_cpu(*flags: str) -> None:
    """Skip the calling test where this CPU lacks any of `flags` (as /proc/cpuinfo spells them), naming
    them and the CPU: a kernel path built for instructions the CPU does not have would die of SIGILL."""
    from dia_bench.harness.env import cpu_info

    cpu = cpu_info()
    missing = [f for f in flags if f not in cpu["flags"]]
    if missing:
        pytest.skip(f"needs the CPU feature(s) {', '.join(missing)}, which this {cpu['model']} lacks")


def cli(*args: str) -> subprocess.CompletedProcess:
    """The command line's own code in this process: the same parsing, checks, output and exit status as
    `run_cli` without a new interpreter, and its cells fork from this process's fork server (a new
    interpreter and fork server cost about 8 s of a core each time). For tests of what a command
    produces; what a separate process prints and exits with on bad input is `run_cli`'s to test."""
    import contextlib
    import io
    import signal

    from dia_bench.harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    term = signal.getsignal(signal.SIGTERM)  # main() unwinds on SIGTERM; pytest's own handling comes back
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(args))
            except SystemExit as exc:  # argparse's --help
                code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        signal.signal(signal.SIGTERM, term)
    return subprocess.CompletedProcess(["dia-bench", *args], code, out.getvalue(), err.getvalue())


# One mark does both jobs: `pytest -m cuda` selects these tests, and they skip where there is no GPU.
requires_cuda = pytest.mark.cuda


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if any(item.get_closest_marker("cuda") for item in items) and not __import__("torch").cuda.is_available():
        skip = pytest.mark.skip(reason="needs a CUDA GPU; this machine has none")
        for item in items:
            if item.get_closest_marker("cuda"):
                item.add_marker(skip)


@pytest.fixture(scope="session")
def tiny_pipeline():
    from dia_bench.harness.worker.measure import load_pipeline

    pipe, weights = load_pipeline(tiny_cell())
    return pipe, weights


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    """One real sweep of the tiny suite (tests/test_sweep.py), shared read-only: tests that change a run
    change a copy."""
    from dia_bench.harness.process_noise import HISTORY_ENV
    from tests.test_sweep import write_suite

    tmp = tmp_path_factory.mktemp("sweep")
    out = tmp / "run"
    # Made before any test's own empty history is set (a session fixture comes first): give it one too.
    before = os.environ.get(HISTORY_ENV)
    os.environ[HISTORY_ENV] = str(tmp / "process-noise.json")
    try:
        result = cli("sweep", str(write_suite(tmp)), "--out", str(out), "--quiet")
    finally:
        if before is None:
            os.environ.pop(HISTORY_ENV, None)
        else:
            os.environ[HISTORY_ENV] = before
    assert result.returncode == 0, result.stderr
    assert "speedup vs baseline" in result.stdout and "baseline drift" in result.stdout
    return out
