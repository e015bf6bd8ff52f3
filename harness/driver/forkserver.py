"""The launcher's side of the fork server (harness/worker/forked.py): start it, ask it for a worker,
learn how that worker ended.

One server at a time, for one environment: a cell whose environment differs where imports read it
(harness/import_env.py) gets a new server. A server that cannot start, or dies, is not tried again in
this process; the launcher then starts fresh interpreters, as it always could.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import IO

from dia_bench.harness import lifetime
from dia_bench.harness.import_env import import_signature

SERVER = "dia_bench.harness.worker.forked"  # by name, as `python -m` runs it: the driver imports no worker code
MAX_REPLY = 1 << 16
READY_TIMEOUT_S = 300  # importing torch and transformers on a slow, busy machine


class ForkServerError(RuntimeError):
    pass


class ForkServer:
    def __init__(self, env: dict[str, str], die_with_parent: bool = False) -> None:
        self.signature = import_signature(env)
        self.die_with_parent = die_with_parent
        self._exits: dict[int, int] = {}
        self._lock = threading.Lock()
        self._sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen([sys.executable, "-m", SERVER, str(theirs.fileno())], env=env,
                                          pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL,
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                          preexec_fn=lifetime.die_with_parent if die_with_parent else None)
        finally:
            theirs.close()
        if "ready" not in self._receive(READY_TIMEOUT_S):
            raise ForkServerError("the fork server did not say it was ready")

    def _receive(self, timeout: float | None) -> dict:
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if not ready:
            raise TimeoutError
        message = self._sock.recv(MAX_REPLY)
        if not message:
            raise ForkServerError("the fork server ended")
        return json.loads(message)

    def _next(self, timeout: float | None) -> dict:
        """The next reply; a child's exit is kept for `wait_for`, whenever it comes."""
        reply = self._receive(timeout)
        if "exit" in reply:
            self._exits[reply["pid"]] = reply["exit"]
        return reply

    def fork(self, argv: list[str], env: dict[str, str]) -> ForkedWorker:
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            with self._lock:
                request = json.dumps({"argv": argv, "env": env, "cwd": os.getcwd(), "cores": _cores(),
                                      "die_with_server": self.die_with_parent}).encode()
                socket.send_fds(self._sock, [request], [out_w, err_w])
                while "exit" in (reply := self._next(60)):
                    pass
        except BaseException:
            os.close(out_r)
            os.close(err_r)
            raise
        finally:
            os.close(out_w)
            os.close(err_w)
        return ForkedWorker(self, reply["pid"], os.fdopen(out_r, errors="replace"), os.fdopen(err_r, errors="replace"))

    def wait_for(self, pid: int, timeout: float | None) -> int | None:
        """The child's exit code (negative: the signal), or None if it still runs after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while pid not in self._exits:
                left = None if deadline is None else max(deadline - time.monotonic(), 0)
                try:
                    self._next(left)
                except TimeoutError:
                    return None
                except ForkServerError:
                    return self._orphan_exit(pid, deadline)
            return self._exits.pop(pid)

    @staticmethod
    def _orphan_exit(pid: int, deadline: float | None) -> int | None:
        """The server died before the child: nobody can tell its exit code any more; wait until it is
        gone and call it a crash."""
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return -signal.SIGKILL
            if deadline is not None and time.monotonic() > deadline:
                return None
            time.sleep(0.2)

    def alive(self) -> bool:
        return self._proc.poll() is None

    def close(self) -> None:
        self._sock.close()  # the server's cue to end
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


def _cores() -> list[int] | None:
    return sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None


class ForkedWorker:
    """A forked cell, with the part of `subprocess.Popen` the launcher uses."""

    def __init__(self, server: ForkServer, pid: int, stdout: IO[str], stderr: IO[str]) -> None:
        self._server, self.pid, self.stdout, self.stderr = server, pid, stdout, stderr
        self.returncode: int | None = None

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            self.returncode = self._server.wait_for(self.pid, timeout)
            if self.returncode is None:
                raise subprocess.TimeoutExpired(f"forked worker {self.pid}", timeout or 0)
        return self.returncode

    def close(self) -> None:
        for stream in (self.stdout, self.stderr):
            stream.close()


_server: ForkServer | None = None
_broken = False


def fork_worker(argv: list[str], env: dict[str, str], die_with_parent: bool = False) -> ForkedWorker | None:
    """A worker forked from the server for this environment (started if needed), or None where no
    server can run: the caller starts a fresh interpreter. die_with_parent: the server dies with this
    process and the worker with the server (a Ray worker can be killed outright)."""
    global _server, _broken
    if _broken:
        return None
    try:
        if _server is not None and (_server.signature != import_signature(env) or not _server.alive()
                                    or _server.die_with_parent != die_with_parent):
            _server.close()
            _server = None
        if _server is None:
            _server = ForkServer(env, die_with_parent)
        return _server.fork(argv, env)
    except (OSError, ForkServerError, TimeoutError, ValueError):
        _broken = True
        if _server is not None:
            with contextlib.suppress(Exception):
                _server.close()
            _server = None
        return None


@atexit.register
def _close_server() -> None:
    if _server is not None:
        _server.close()
