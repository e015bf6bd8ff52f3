"""Which environment variables a process may have read at import: a cell forked from a server that
imported torch and transformers must see the same values there (harness/worker/forked.py), and the
launcher keeps one server per such environment (harness/driver/forkserver.py)."""

from __future__ import annotations

# Read when used, not at import: dia-bench's own settings, inductor's cache directory (torch looks it
# up at every compile), output buffering (a fork sets up its own streams) and pytest's test name.
# Everything else counts as read at import; a wrong guess there costs a fresh interpreter, not a
# wrong measurement.
LATE_READ_PREFIXES = ("DIA_BENCH_",)
LATE_READ = frozenset({"TORCHINDUCTOR_CACHE_DIR", "PYTHONUNBUFFERED", "PYTEST_CURRENT_TEST"})


def read_at_import(key: str) -> bool:
    return key not in LATE_READ and not key.startswith(LATE_READ_PREFIXES)


def import_signature(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """The part of an environment that imports may have read."""
    return tuple(sorted((k, v) for k, v in env.items() if read_at_import(k)))


def differs_at_import(imported_under: dict[str, str], now: dict[str, str]) -> list[str]:
    """The variables a module may have read at import whose value `now` differs from the import's."""
    keys = set(imported_under) | set(now)
    return sorted(k for k in keys if read_at_import(k) and imported_under.get(k) != now.get(k))
