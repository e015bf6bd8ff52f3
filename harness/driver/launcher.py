"""Launches a cell in its own Python process and survives whatever happens to it.

A crash, an out-of-memory kill or a timeout in the child becomes a `failed` record with the
reason; the parent carries on.

Each cell's process is forked from a server that imported torch and transformers once
(harness/worker/preload.py): a fresh interpreter spends about 5 s of a core on those imports, more
than a dia-tiny cell measures. The fork is still a process of its own per cell, with nothing of an
earlier cell in it; where imports would have seen another environment it becomes a fresh interpreter
(harness/worker/forked.py). CPU cells only, on Ray too (one server per Ray worker, which dies with it);
`DIA_BENCH_FORK=0` starts every cell in a fresh interpreter.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from dia_bench.harness import lifetime
from dia_bench.harness.caches import COLD_ENV, compile_cache_dir
from dia_bench.harness.cell import Cell
from dia_bench.harness.driver.forkserver import ForkedWorker, fork_worker
from dia_bench.harness.jsonio import read_json, write_json_atomic
from dia_bench.harness.record import PROGRESS_PREFIX, not_ok

ProgressFn = Callable[[dict[str, Any]], None]
FORK_ENV = "DIA_BENCH_FORK"  # "0": every cell in a fresh interpreter


def _signal_reason(code: int) -> str:
    sig = -code
    try:
        name = signal.Signals(sig).name
    except ValueError:
        name = f"signal {sig}"
    if sig == signal.SIGKILL:
        return f"worker killed by {name} (out of memory?)"
    return f"worker crashed with {name}"


def inductor_cache_dir(env: dict[str, str], scratch: Path) -> str:
    """Where a worker's compiled kernels live: dia-bench's versioned cache, or with --cold an empty
    directory under `scratch` (the worker's own temp dir, removed with it). torch sets
    TORCHINDUCTOR_CACHE_DIR to its own default in any process that compiled once, so an inherited
    value says nothing about what the user wanted."""
    if env.get(COLD_ENV):
        return tempfile.mkdtemp(prefix="dia-bench-cold-inductor-", dir=scratch)
    return str(compile_cache_dir())


def forkable(cell: Cell, env: dict[str, str]) -> bool:
    """Whether the cell may be forked from the fork server: not on a GPU, where CUDA does not survive a
    fork once a process has touched it, and whether importing transformers checks for a GPU is not a
    promise (CUDA cells start fresh, and their imports are a small part of their time anyway). On Ray
    too, where the server dies with its Ray worker and each fork with the server."""
    return sys.platform == "linux" and env.get(FORK_ENV) != "0" and not cell.device.startswith("cuda")


def _start_worker(argv: list[str], env: dict[str, str], fork: bool, die_with_parent: bool):
    """The cell's process: forked from the preloaded server where it can be, else a fresh interpreter."""
    if fork:
        forked = fork_worker(argv, env, die_with_parent)
        if forked is not None:
            return forked
    return subprocess.Popen(
        [sys.executable, "-m", "dia_bench.harness.worker", *argv],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,  # its own process group, so a timeout kills compile workers too
        preexec_fn=lifetime.die_with_parent if die_with_parent and sys.platform == "linux" else None,
    )


def _kill_group(proc) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:  # a fork killed before it made its own group
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)


def run_isolated(cell: Cell, timeout_s: float | None = None, on_progress: ProgressFn | None = None,
                 extra_env: dict[str, str] | None = None, die_with_parent: bool = False) -> dict[str, Any]:
    """Run `cell` in a process of its own and return its record (failed if the worker died).

    die_with_parent: a Ray worker can be killed outright (its node or driver lost); the cell's worker,
    in a session of its own, would otherwise go on measuring beside the cells that follow.
    """
    with tempfile.TemporaryDirectory(prefix="dia-bench-cell-") as tmp:
        cell_path = Path(tmp) / "cell.json"
        record_path = Path(tmp) / "record.json"
        write_json_atomic(cell_path, cell.to_dict())
        env = dict(os.environ, PYTHONUNBUFFERED="1", **(extra_env or {}))
        env["TORCHINDUCTOR_CACHE_DIR"] = inductor_cache_dir(env, Path(tmp))
        start = time.monotonic()
        proc = _start_worker([str(cell_path), str(record_path)], env, forkable(cell, env),
                             die_with_parent)
        tail: deque[str] = deque(maxlen=40)

        def pump_stderr() -> None:
            for line in proc.stderr:
                if line.startswith(PROGRESS_PREFIX):
                    if on_progress:
                        with contextlib.suppress(json.JSONDecodeError):
                            on_progress(json.loads(line[len(PROGRESS_PREFIX):]))
                else:
                    tail.append(line.rstrip())

        def pump_stdout() -> None:
            for line in proc.stdout:
                tail.append(line.rstrip())

        readers = [threading.Thread(target=f, daemon=True) for f in (pump_stderr, pump_stdout)]
        for r in readers:
            r.start()
        timed_out = False
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            timed_out = True
            _kill_group(proc)
            proc.wait()
        except BaseException:  # Ctrl-C in the parent: take the child down with it
            _kill_group(proc)
            proc.wait()
            raise
        for r in readers:
            r.join(timeout=5)
        if isinstance(proc, ForkedWorker):
            proc.close()
        wall = time.monotonic() - start
        stderr_tail = "\n".join(tail)

        if timed_out:
            rec = not_ok(cell, "failed", f"timed out after {timeout_s:g} s", stderr_tail=stderr_tail)
        elif record_path.is_file():
            rec = read_json(record_path)
            if proc.returncode != 0 and rec.get("status") == "ok":
                rec.update(status="failed", reason=f"worker exited with status {proc.returncode}")
        elif proc.returncode < 0:
            rec = not_ok(cell, "failed", _signal_reason(proc.returncode), stderr_tail=stderr_tail)
        else:
            last = next((ln for ln in reversed(tail) if ln.strip()), "")
            rec = not_ok(cell, "failed", f"worker exited with status {proc.returncode}: {last}"[:500],
                         stderr_tail=stderr_tail)
        rec["worker_wall_seconds"] = round(wall, 3)
        rec["worker_exit_code"] = proc.returncode
        return rec
