"""The fork server: one interpreter that imports torch and transformers once and forks a process per
cell from there.

    python -m dia_bench.harness.worker.forked FD

FD is one end of a SOCK_SEQPACKET socket pair whose other end the launcher holds
(harness/driver/forkserver.py). Each request carries the cell's argv, environment and working
directory as JSON, and the write ends of its stdout and stderr pipes; the server answers `{"pid": N}`
when it has forked and `{"pid": N, "exit": code}` when that child has ended (negative: the signal).
It ends when the launcher closes its end.

The server imported under its own environment. Some settings are read once, at import (OpenMP's thread
count, for one): a cell whose environment differs there, after its plugins set theirs, cannot run in
the fork and replaces it with a fresh interpreter (same process, same output streams), which is how
every cell started before the fork server existed (harness/import_env.py says which variables count).
"""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import signal
import socket
import sys
import traceback
from typing import Any

from dia_bench.harness.import_env import differs_at_import
from dia_bench.harness.lifetime import die_with_parent

# Set in a fresh interpreter that replaced a fork: why it did.
REPLACED_ENV = "DIA_BENCH_WORKER_REPLACED_FORK"
MAX_REQUEST = 1 << 20

_imported_under: dict[str, str] | None = None  # in a forked worker: the environment its imports saw


def replace_if_imports_differ(argv: list[str]) -> None:
    """In a forked worker whose environment now differs where imports read it: become a fresh
    interpreter running the same cell. Elsewhere, nothing."""
    if _imported_under is None:
        return
    changed = differs_at_import(_imported_under, dict(os.environ))
    if not changed:
        return
    os.environ[REPLACED_ENV] = ",".join(changed)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "dia_bench.harness.worker", *argv])


def how_started() -> dict[str, Any]:
    """For the record: forked from the preloaded server, or a fresh interpreter and why."""
    if _imported_under is not None:
        return {"process": "forked", "note": "torch and transformers imported once, by the fork server"}
    replaced = os.environ.get(REPLACED_ENV)
    if replaced:
        return {"process": "fresh", "note": f"replaced its fork: {replaced} differ from the fork server's"}
    if os.environ.get("DIA_BENCH_FORK") == "0":
        return {"process": "fresh", "note": "a new interpreter: DIA_BENCH_FORK=0"}
    return {"process": "fresh", "note": "a new interpreter: a CUDA cell, a platform without the fork server, or "
                                        "a run outside a sweep"}


def _child(request: dict[str, Any], out_fd: int, err_fd: int) -> None:
    """The forked cell: its own session and streams, the cell's environment, then the worker's main.
    Never returns."""
    global _imported_under
    code = 1
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        os.setsid()  # its own process group, so that a timeout kills compile workers too
        if request.get("die_with_server"):
            # On Ray the launcher's process can be killed outright; this server dies with it (it was started
            # that way), and the cell with this server, rather than measure on beside the cells that follow.
            die_with_parent()
            if os.getppid() != request["server"]:  # the server died before the setting took
                os._exit(1)
        if request.get("cores") and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, request["cores"])  # the launcher's cores now, not the server's at its start
        os.dup2(out_fd, 1)
        os.dup2(err_fd, 2)
        os.close(out_fd)
        os.close(err_fd)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115 (the process's own stream)
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        _imported_under = dict(os.environ)
        os.environ.clear()
        os.environ.update(request["env"])
        os.chdir(request["cwd"])
        from dia_bench.harness.worker.__main__ import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:  # the child must reach os._exit, whatever happened
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):  # a closed stream: nothing left to say
                stream.flush()
        os._exit(code)


def serve(sock: socket.socket) -> None:
    children: set[int] = set()
    # Ctrl-C reaches the launcher's process group: the launcher decides what happens to the cell, and
    # this server ends when the launcher closes its socket.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # a handler, so that the wakeup fd is written
    signal.set_wakeup_fd(wake_w)
    selector = selectors.DefaultSelector()
    selector.register(sock, selectors.EVENT_READ)
    selector.register(wake_r, selectors.EVENT_READ)
    sock.sendall(json.dumps({"ready": os.getpid()}).encode())
    while True:
        for key, _ in selector.select():
            if key.fileobj is sock:
                message, fds, _, _ = socket.recv_fds(sock, MAX_REQUEST, 2)
                if not message:  # the launcher is gone
                    return
                request = {**json.loads(message), "server": os.getpid()}
                pid = os.fork()
                if pid == 0:
                    sock.close()
                    os.close(wake_r)
                    os.close(wake_w)
                    _child(request, *fds)
                for fd in fds:
                    os.close(fd)
                children.add(pid)
                sock.sendall(json.dumps({"pid": pid}).encode())
            else:
                with contextlib.suppress(BlockingIOError):  # drain the wakeups, then reap every child that ended
                    while os.read(wake_r, 4096):
                        pass
                for pid in list(children):
                    done, status = os.waitpid(pid, os.WNOHANG)
                    if done:
                        children.discard(pid)
                        sock.sendall(json.dumps({"pid": pid, "exit": os.waitstatus_to_exitcode(status)}).encode())


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    import dia_bench.harness.worker.preload  # noqa: F401 (the point of the server)

    serve(sock)


if __name__ == "__main__":
    # Through the package's own module, not this `__main__` copy: the worker asks that one how it started.
    from dia_bench.harness.worker.forked import main as package_main

    package_main()
