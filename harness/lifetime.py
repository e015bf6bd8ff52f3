"""A process that must not outlive the one that started it (Linux; elsewhere nothing)."""

from __future__ import annotations

import contextlib
import signal


def die_with_parent() -> None:
    """SIGKILL this process when its parent ends: for a child started before exec, or right after fork.
    A Ray worker can be killed outright, and a cell it started would otherwise measure on beside the
    cells that follow."""
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
