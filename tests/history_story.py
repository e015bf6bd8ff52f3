"""Runs that tell a known story across commits, rewritten from one real dia-tiny run.

Every record keeps what the worker really measured (its structure, memory, stages, its median time
as the configuration's level); only the repeats are redrawn around that level. dia-tiny's own
repeats vary by +-30% between worker processes on a 2-core VM, far more than a real benchmark
machine, so they cannot carry a known 20% step: the story sets the noise instead (1% between repeats,
1.5% between runs, seeded). Each copy also gets its commit, message, date, torch version and machine.

`python -m tests.history_story REAL_RUN OUT --commits 100` writes the benchmark's runs.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import shutil
from pathlib import Path

import numpy as np

MACHINES = ("Story CPU A", "Story CPU B")
SLOW_MACHINE = MACHINES[0]
STEP_AT, STEP = 7, 1.20  # the first commit that is 20% slower, on SLOW_MACHINE only
TORCH_UPGRADE_AT = 9  # torch changes on both machines; speed does not
REPEAT_NOISE, RUN_NOISE = 0.01, 0.015
START = dt.datetime(2026, 1, 1, 9, 0, tzinfo=dt.timezone.utc)


def commit(i: int) -> str:
    return hashlib.sha1(f"story commit {i}".encode()).hexdigest()


def torch_version(i: int) -> str:
    return "2.14.0+cpu" if i >= TORCH_UPGRADE_AT else "2.13.0+cpu"


def _iso(t: dt.datetime) -> str:
    return t.isoformat(timespec="milliseconds")


def _shifted(value: str | None, shift: dt.timedelta) -> str | None:
    return _iso(dt.datetime.fromisoformat(value) + shift) if value else value


def rewrite(real: Path, out: Path, i: int, machine: str, factor: float, rng: np.random.Generator,
            when: dt.datetime, subject: str | None = None, torch: str | None = None) -> Path:
    """A copy of the real run as commit `i` on `machine`, every configuration `factor` x its level."""
    shutil.copytree(real, out)
    meta = json.loads((out / "run.json").read_text())
    software = {**meta["machine"]["software"], "git_commit": commit(i), "git_subject": subject or f"commit {i}",
                "torch": torch or torch_version(i)}
    meta["machine"] = {**meta["machine"], "cpu": {**meta["machine"]["cpu"], "model": machine},
                       "software": software}
    # Every time in the run moves by the same amount, so its cells keep their order and spacing.
    shift = when - dt.datetime.fromisoformat(meta["started_at"])
    for name in ("started_at", "finished_at"):
        meta[name] = _shifted(meta.get(name), shift)
    # The story's machine knows its own noise between processes, as a machine's history would.
    meta["process_noise_prior"] = {kind: {"variance": RUN_NOISE ** 2, "df": 20.0,
                                          "source": "the story machine's history"}
                                   for kind in meta.get("process_noise_prior") or {"cpu dia-tiny": None}}
    (out / "run.json").write_text(json.dumps(meta))
    run_level = factor * float(np.exp(rng.normal(0, RUN_NOISE)))
    levels: dict[str, float] = {}  # one level a configuration: its processes differ by the story's noise only
    for p in sorted((out / "cells").glob("*.json")):
        rec = json.loads(p.read_text())
        rec["env"] = {**rec.get("env", {}), "software": software,
                      "cpu": {**(rec.get("env") or {}).get("cpu", {}), "model": machine}, "device_name": machine}
        if rec["status"] == "ok":
            own = float(np.median(rec["repeats_seconds"])) * run_level
            level = levels.setdefault(rec["cell_id"], own) * float(np.exp(rng.normal(0, RUN_NOISE)))
            times = [level * float(np.exp(rng.normal(0, REPEAT_NOISE))) for _ in rec["repeats_seconds"]]
            rec["repeats_seconds"] = times
            rec["generation_seconds"] = float(np.median(times))
            rec["rtf"] = rec["generation_seconds"] / rec["audio_seconds"]
            rec["xrt"] = 1 / rec["rtf"]
        for name in ("started_at", "finished_at", "measured_from", "measured_until"):
            rec[name] = _shifted(rec.get(name), shift)
        p.write_text(json.dumps(rec))
    for extra in ("report.html", "summary.md"):
        (out / extra).unlink(missing_ok=True)
    return out


def make_story(real: Path, out: Path, commits: int = 12, seed: int = 0) -> list[Path]:
    """`commits` commits on each machine: 20% slower from STEP_AT on SLOW_MACHINE, noise elsewhere,
    torch upgraded at TORCH_UPGRADE_AT on both. Run directories are named so that their names do not
    sort in time order: history must order by date."""
    rng = np.random.default_rng(seed)
    runs = []
    for i in range(1, commits + 1):
        for m, machine in enumerate(MACHINES):
            factor = STEP if machine == SLOW_MACHINE and i >= STEP_AT else 1.0
            when = START + dt.timedelta(days=i, hours=m)
            name = f"{hashlib.sha1(f'{m}-{i}'.encode()).hexdigest()[:8]}-m{m}-c{i}"
            runs.append(rewrite(real, out / name, i, machine, factor, rng, when))
    return runs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("real_run")
    parser.add_argument("out")
    parser.add_argument("--commits", type=int, default=12, help="commits per machine (two machines)")
    args = parser.parse_args()
    runs = make_story(Path(args.real_run), Path(args.out), args.commits)
    print(f"{len(runs)} runs in {args.out}")


if __name__ == "__main__":
    main()
