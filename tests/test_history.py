"""History across commits and the CI gate: change points on a known story, compare for CI.

The story (tests/history_story.py): one real dia-tiny run rewritten to 12 commits on each of two
machines; 20% slower from commit 7 on one machine, noise elsewhere, torch upgraded at commit 9 on
both with no effect on speed.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from dia_bench.harness import rundir
from dia_bench.harness.analysis import changepoints, comparison
from dia_bench.reports import history
from tests import history_story as story
from tests.conftest import cli, run_cli
from tests.test_cli_errors import _assert_usage_error
from tests.test_report import HOSTILE


@pytest.fixture(scope="module")
def story_runs(tiny_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("story") / "runs"
    story.make_story(tiny_run, out)
    return out


def _series(root: Path):
    return history.build(rundir.find([root]))


# The change-point logic alone, on numbers of known truth.

def _series_of(rng, n: int, step_at: int | None = None, step: float = 1.2, run_sd: float = 0.015,
               repeat_sd: float = 0.01, repeats: int = 3) -> list[list[float]]:
    out = []
    for i in range(n):
        level = (step if step_at is not None and i >= step_at else 1.0) * np.exp(rng.normal(0, run_sd))
        out.append(list(level * np.exp(rng.normal(0, repeat_sd, repeats))))
    return out


def test_a_step_is_found_where_it_is_with_its_interval():
    steps = changepoints.detect(_series_of(np.random.default_rng(1), 12, step_at=6))
    assert [(s.before, s.index) for s in steps] == [(5, 6)]
    assert steps[0].low < 1.2 < steps[0].high and steps[0].low > 1.1
    # The case CI cares about most: only the newest run is slower.
    last = changepoints.detect(_series_of(np.random.default_rng(2), 12, step_at=11))
    assert [s.index for s in last] == [11] and last[0].runs_after == 1
    # Two steps, one up and one down.
    both = changepoints.detect(_series_of(np.random.default_rng(3), 24, step_at=8)[:16]
                               + _series_of(np.random.default_rng(4), 8))
    assert [s.index for s in both] == [8, 16] and both[0].ratio > 1 > both[1].ratio


def test_run_to_run_noise_makes_no_steps():
    """Tight repeats (0.3%) on a machine whose speed moves 3% from run to run: pooling the repeats
    would call that noise significant in about one series in five; the run-noise model must not."""
    false = sum(bool(changepoints.detect(_series_of(np.random.default_rng(s), 30, run_sd=0.03, repeat_sd=0.003)))
                for s in range(100))
    assert false <= 5, false


def test_small_or_unmeasured_changes_are_not_steps():
    # A 3% step is significant with 1% noise, but below the 5% a step must reach.
    rng = np.random.default_rng(5)
    assert changepoints.detect(_series_of(rng, 12, step_at=6, step=1.03, run_sd=0.002, repeat_sd=0.002)) == []
    assert [s.index for s in changepoints.detect(_series_of(rng, 12, step_at=6, step=1.03, run_sd=0.002,
                                                            repeat_sd=0.002), min_effect=0.01)] == [6]
    # Two repeats give no interval: no step is claimed, however large.
    assert changepoints.detect(_series_of(rng, 12, step_at=6, step=2.0, repeats=2)) == []
    # Nor below five runs, where the run-to-run noise is unknown; from five on, a large step shows.
    assert changepoints.detect(_series_of(rng, 4, step_at=2, step=2.0)) == []
    assert [s.index for s in changepoints.detect(_series_of(rng, 5, step_at=2, step=2.0))] == [2]


# The story, through the command line.

def test_history_finds_the_step_at_commit_7_only(story_runs, tmp_path):
    page = tmp_path / "history.html"
    result = cli("history", str(story_runs), "-o", str(page))
    assert result.returncode == 0, result.stderr
    assert "history of 24 run(s)" in result.stdout
    runs, series = _series(story_runs)
    assert [r.commit for r in runs[::2]] == [story.commit(i)[:12] for i in range(1, 13)]  # by date, not by name
    stepped = [line for line in series if line.steps]
    slow = [line for line in series if line.machine.startswith(story.SLOW_MACHINE)]
    assert len(slow) == 2 and stepped == slow  # both configurations on the slow machine, nothing on the other
    for line in slow:
        (s,) = line.steps
        assert s.after.run.commit == story.commit(story.STEP_AT)[:12]
        assert history.commit_range(s) == f"{story.commit(6)[:12]}..{story.commit(7)[:12]}"
        assert s.step.low < story.STEP < s.step.high and s.step.low > 1.1
        assert s.changed == []  # nothing but the code changed between commits 6 and 7
    # The torch upgrade at commit 9 changed nothing: it is no step, though every run after it says so.
    assert all(s.after.run.versions()["torch"] == story.torch_version(7) for line in series for s in line.steps)
    html = page.read_text()
    assert html.count(f"<code>{story.commit(6)[:12]}..{story.commit(7)[:12]}</code>") == 2
    assert "2.14.0+cpu" in html and html.count('src="data:image/svg+xml;base64,') == 4
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html


def test_machines_are_never_one_line(story_runs, tmp_path):
    _, series = _series(story_runs)
    assert len(series) == 4
    for line in series:
        machines = {comparison.machine_label(p.run.machine) for p in line.points}
        assert machines == {line.machine} and len(line.points) == 12
    quiet = [line for line in series if line.machine.startswith(story.MACHINES[1])]
    assert quiet and all(not line.steps for line in quiet)


def test_markdown_history(story_runs, tmp_path):
    out = tmp_path / "h.md"
    result = cli("history", str(story_runs), "--markdown", "-o", str(out))
    assert result.returncode == 0, result.stderr
    text = out.read_text()
    rows = [ln for ln in text.split("## Configurations")[0].splitlines() if ln.startswith("| Story")]
    assert len(rows) == 2 and all(f"{story.commit(6)[:12]}..{story.commit(7)[:12]}" in r for r in rows)
    changes = [float(r.split(" | ")[4].split("%")[0]) for r in rows]
    assert all(15 < c < 25 for c in changes), changes  # the story's +20%


def test_a_step_names_the_versions_that_changed_and_hostile_text_is_escaped(story_runs, tmp_path):
    runs = tmp_path / "hostile"
    shutil.copytree(story_runs, runs)
    for d in runs.iterdir():
        meta = json.loads((d / "run.json").read_text())
        software = meta["machine"]["software"]
        if software["git_commit"] == story.commit(7) and meta["machine"]["cpu"]["model"] == story.SLOW_MACHINE:
            software["git_subject"] = HOSTILE
            software["torch"] = HOSTILE + "|x\n"
            (d / "run.json").write_text(json.dumps(meta))
    _, series = _series(runs)
    (s,) = next(line for line in series if line.steps).steps
    assert s.changed == [f"torch: {story.torch_version(6)} -> {HOSTILE}|x\n"]
    page, md = tmp_path / "h.html", tmp_path / "h.md"
    assert cli("history", str(runs), "-o", str(page)).returncode == 0
    assert cli("history", str(runs), "--markdown", "-o", str(md)).returncode == 0
    for text in (page.read_text(), md.read_text()):
        assert "<script>" not in text and "<img" not in text.replace('<img alt="RTF', "")
        assert "&lt;script&gt;" in text
    step_rows = [ln for ln in md.read_text().split("## Configurations")[0].splitlines() if ln.startswith("| Story")]
    assert len(step_rows) == 2 and all(ln.count(" | ") == 5 for ln in step_rows)  # `|` stayed in its cell
    assert "torch: 2.13.0+cpu -&gt; &lt;script&gt;" in step_rows[0]


def test_history_takes_nested_folders_and_single_runs(story_runs, tiny_run, tmp_path):
    nested = tmp_path / "artifacts" / "run-1"
    nested.mkdir(parents=True)
    shutil.copytree(story_runs / next(iter(sorted(p.name for p in story_runs.iterdir()))), nested / "bench")
    out = tmp_path / "h.md"
    result = cli("history", str(tmp_path / "artifacts"), str(tiny_run / "run.json"), str(tiny_run),
                     "--markdown", "-o", str(out))
    assert result.returncode == 0, result.stderr
    assert "history of 2 run(s)" in result.stdout


def test_history_input_errors(story_runs, tmp_path):
    _assert_usage_error(run_cli("history", str(tmp_path / "nope")), "does not exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    _assert_usage_error(run_cli("history", str(empty)), "holds no dia-bench run directory", "dia-bench sweep")
    (empty / "notes.txt").write_text("x")
    _assert_usage_error(run_cli("history", str(empty / "notes.txt")), "is a file")
    _assert_usage_error(run_cli("history", str(story_runs), "-o", "/proc/nope/h.html"), "-o", "cannot create")
    _assert_usage_error(run_cli("history", str(story_runs), "-o", str(tmp_path)), "-o", "is a directory")
    _assert_usage_error(run_cli("history", str(story_runs), "--min-step", "-1"), "--min-step", "percentage")


# compare for CI: Markdown and JSON tables, and the gate.

def _runs_of(root: Path, machine: str, i: int) -> Path:
    return next(d for d in sorted(root.iterdir()) if d.name.endswith(f"-m{story.MACHINES.index(machine)}-c{i}"))


def test_compare_markdown_and_json_gate_a_regression(story_runs):
    before = _runs_of(story_runs, story.SLOW_MACHINE, 6)
    after = _runs_of(story_runs, story.SLOW_MACHINE, 7)
    md = cli("compare", str(before), str(after), "--format", "markdown", "--max-regression", "10")
    assert md.returncode == 1
    # Both configurations and the baseline measured again at the end.
    assert "| cell | base RTF |" in md.stdout and md.stdout.count("**slower**") == 3
    assert "Gate (`--fail-on regression`, threshold 10%): **failed**: 3 cell(s)" in md.stdout
    assert "regressed by more than 10%" in md.stderr
    js = cli("compare", str(before), str(after), "--format", "json", "--max-regression", "25")
    assert js.returncode == 0, js.stderr
    data = json.loads(js.stdout)
    assert {c["verdict"] for c in data["cells"]} == {"slower"} and data["gate"]["failing"] == []
    assert all(15 < c["change_pct"] < 25 and c["speedup_low"] < c["speedup_high"] for c in data["cells"])
    # Without a gate, compare reports and exits 0, as before.
    assert cli("compare", str(before), str(after)).returncode == 0


def test_fail_on_any_change_catches_a_speedup_and_a_status_change(story_runs, tmp_path):
    slow = _runs_of(story_runs, story.SLOW_MACHINE, 7)
    fast = _runs_of(story_runs, story.SLOW_MACHINE, 6)
    assert cli("compare", str(slow), str(fast), "--fail-on", "regression").returncode == 0
    changed = cli("compare", str(slow), str(fast), "--fail-on", "any-change", "--format", "markdown")
    assert changed.returncode == 1 and "cell(s) changed by more than 0%" in changed.stderr
    # A cell that measured before and fails now has no times to compare: it is still a regression.
    broken = tmp_path / "broken"
    shutil.copytree(fast, broken)
    cell = next(p for p in (broken / "cells").glob("*.json") if json.loads(p.read_text())["plugins"] == ["cfg=0"])
    rec = json.loads(cell.read_text())
    rec.update(status="failed", reason="worker killed by signal 9 (out of memory?)")
    cell.write_text(json.dumps(rec))
    result = cli("compare", str(fast), str(broken), "--max-regression", "10", "--format", "json")
    assert result.returncode == 1
    data = json.loads(result.stdout)
    assert data["status_changes"] == [{"key": rec["key"], "description": rec["description"], "base": "ok",
                                       "new": "failed"}]
    assert data["gate"]["failing"] == [rec["description"]]


def test_compare_format_and_fail_on_are_checked(story_runs):
    a, b = _runs_of(story_runs, story.SLOW_MACHINE, 1), _runs_of(story_runs, story.SLOW_MACHINE, 2)
    _assert_usage_error(run_cli("compare", str(a), str(b), "--format", "html"), "--format", "invalid choice")
    _assert_usage_error(run_cli("compare", str(a), str(b), "--fail-on", "slower"), "--fail-on", "invalid choice")
