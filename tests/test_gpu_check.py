"""The GPU check prepared on CPU: the GPU suites, per-cell batch sizes and limits, .ci/gpu-check."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dia_bench.harness.driver.expand import expand
from dia_bench.harness.driver.suite import SUITES_DIR, parse_suite
from dia_bench.harness.env import cores_label
from tests.conftest import run_cli

REPO = Path(__file__).resolve().parent.parent
GPU_CHECK = REPO / ".ci" / "gpu-check"
# Every GPU plugin of the optimization guide, on dia-1.6b against the fp32 baseline of the same run.
GUIDE_CELLS = [
    ["tf32"], ["dtype=bf16"], ["dtype=fp16"], ["autocast=bf16"], ["autocast=fp16"],
    *(["dtype=bf16", f"sdpa={b}"] for b in ("flash", "efficient", "cudnn", "math")),
    ["cudnn-benchmark"], ["channels-last"], ["dtype=bf16", "int8=torchao-weight"], ["dtype=bf16", "cfg=0"],
    ["dtype=bf16", "compile"], ["dtype=bf16", "engine=static", "compile=reduce-overhead"],
]
REQUIRED_CELLS = [
    [], ["tf32"], ["dtype=bf16"], ["dtype=bf16", "sdpa=flash"], ["dtype=bf16", "compile"],
    ["dtype=bf16", "int8=torchao-weight"], ["dtype=bf16", "cfg=0"],
    # The GPU figures: the static engine eager, and its step in a CUDA graph.
    ["dtype=bf16", "engine=static"], ["dtype=bf16", "engine=static", "compile=reduce-overhead"],
]


def _one_line_usage_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


def test_the_guide_suite_runs_every_gpu_plugin_of_the_guide_ordered_for_a_deadline():
    suite = parse_suite(SUITES_DIR / "gpu-guide.toml")
    assert suite.presets == ["dia-1.6b"] and suite.devices == ["cuda"] and suite.seconds == [2.0]
    assert suite.batch == [1] and suite.repeats >= 3 and suite.texts == ["medium"]
    planned = expand(suite, this_machine=False)  # as on the GPU machine: here every cell would be skipped
    roles = [p.role for p in planned]
    assert roles[0] == "baseline-start" and roles[-1] == "baseline-end" and "baseline-mid" in roles
    cells = [p.cell.plugins for p in planned if p.role == "cell"]
    assert sorted(map(sorted, cells)) == sorted(map(sorted, GUIDE_CELLS))
    # Eager bf16 first (every other figure is read beside it); a cold compile, the least predictable
    # cell, after the eager headline cells; the codec-only settings last.
    assert cells[0] == ["dtype=bf16"] and cells[-1] == ["channels-last"]
    first_compiled = next(i for i, c in enumerate(cells) if any(s.startswith("compile") for s in c))
    assert {"tf32", "dtype=fp16"} <= {c[-1] for c in cells[:first_compiled]}
    # Each cell has a limit, the compiled ones their own longer one; none eats a lent GPU's 15 minutes.
    limits = {tuple(p.cell.plugins): p.timeout_s or suite.timeout_s for p in planned}
    assert all(60 <= t <= 300 for t in limits.values())
    assert limits[("dtype=bf16", "compile")] > suite.timeout_s


def test_gpu_quick_suite_has_the_cells_the_issue_asks_for():
    suite = parse_suite(SUITES_DIR / "gpu-quick.toml")
    assert suite.presets == ["dia-1.6b"] and suite.devices == ["cuda"]
    assert suite.warmup == 1 and suite.repeats == 3 and suite.time_budget_s is None
    assert 60 <= suite.timeout_s <= 240  # one hung cell must not eat a lent GPU's 15 minutes
    assert all(1 <= s <= 3 for s in suite.seconds) and suite.batch == [1]
    planned = [p for p in expand(suite) if p.role in ("baseline-start", "cell")]
    at_batch_1 = sorted(sorted(p.cell.plugins) for p in planned if p.cell.batch == 1)
    for cell in REQUIRED_CELLS:
        assert sorted(cell) in at_batch_1, cell
    at_batch_8 = [p.cell.plugins for p in planned if p.cell.batch == 8]
    assert at_batch_8 == [["dtype=bf16"]]  # one cell at batch 8, not every cell multiplied by it
    at_batch_16 = [p.cell.plugins for p in planned if p.cell.batch == 16]
    assert at_batch_16 == [["dtype=bf16", "engine=static", "compile=reduce-overhead"]]


PER_CELL_BATCH = """
[suite]
description = "per-cell batch"
presets = ["dia-tiny"]
devices = ["cpu"]
seconds = [0.2]
batch = [1]
design = "explicit"
cells = [["cfg=0"], {plugins = ["cfg=0"], batch = [2, 4]}, {batch = 3}]
"""


def test_a_cell_table_runs_at_its_own_batch_sizes(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text(PER_CELL_BATCH)
    planned = expand(parse_suite(path))
    got = [(p.role, p.cell.plugins, p.cell.batch) for p in planned]
    assert got == [
        ("baseline-start", [], 1), ("baseline-start", [], 3),  # the suite's baseline, and the listed one
        ("cell", ["cfg=0"], 1), ("cell", ["cfg=0"], 2), ("cell", ["cfg=0"], 4),
        ("baseline-end", [], 1), ("baseline-end", [], 3),
    ]


@pytest.mark.parametrize("cells, needles", [
    ('[{plugins = ["cfg=0"], batches = 2}]', ["unknown key 'batches'", "did you mean 'batch'"]),
    ('[{plugins = ["cfg=0"]}]', ["needs batch = N or timeout_s = S"]),
    ('[{plugins = ["cfg=0"], timeout_s = 0}]', ["timeout_s = 0", "> 0"]),
    ('[{plugins = ["cfg=0"], timeout_s = "long"}]', ["timeout_s = 'long'"]),
    ('[{plugins = ["cfg=0"], batch = 0}]', ["batch = 0", "integer >= 1"]),
    ('[{plugins = ["cfg=0"], batch = [true]}]', ["integer >= 1"]),
    ('[{plugins = "cfg=0", batch = 2}]', ["cells must be lists"]),
    ('[{plugins = ["warp=9"], batch = 2}]', ["unknown plugin 'warp'"]),
])
def test_bad_cell_tables_are_one_line_errors(tmp_path, cells, needles):
    path = tmp_path / "bad.toml"
    path.write_text(PER_CELL_BATCH.replace(PER_CELL_BATCH.split("cells = ")[1], cells + "\n"))
    _one_line_usage_error(run_cli("sweep", str(path), "--list"), str(path), *needles)


def test_a_cell_table_gives_that_cell_its_own_limit(tmp_path):
    """A cell whose own timeout_s is too short for it is stopped and recorded as timed out at that limit,
    while the suite's limit holds for the others."""
    path = tmp_path / "s.toml"
    path.write_text(PER_CELL_BATCH.replace(PER_CELL_BATCH.split("cells = ")[1],
                                           '[["cfg=0"], {plugins = ["cfg=0", "threads=1"], timeout_s = 0.5}]\n'))
    planned = expand(parse_suite(path))
    assert [(p.cell.plugins, p.timeout_s) for p in planned] == [
        ([], None), (["cfg=0"], None), (["cfg=0", "threads=1"], 0.5), ([], None)]
    out = tmp_path / "run"
    run_cli("sweep", str(path), "--out", str(out), "--quiet", "--only", "threads=1")
    from dia_bench.harness import rundir

    (rec,) = [r for r in rundir.records(out) if "threads=1" in r["plugins"]]
    assert rec["status"] == "failed" and rec["reason"].startswith("timed out after 0.5 s"), rec["reason"]


def _gpu_check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(GPU_CHECK), *args], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL,
                          env={**os.environ, "GPU_CHECK_PYTHON": sys.executable, **(env or {})})


def test_gpu_check_rehearsal_lists_the_suite_on_cpu_and_dia_tiny():
    result = _gpu_check("--rehearse", "--part", "sweep", "--list")
    assert result.returncode == 0, result.stderr
    cells = [ln for ln in result.stdout.splitlines() if "/cpu/" in ln]
    assert len(cells) == len(GUIDE_CELLS) + 3, result.stdout  # and the baselines: first, once between, last
    assert all(ln.split()[1].startswith("dia-tiny/cpu/") for ln in cells), result.stdout
    tf32 = next(ln for ln in cells if "/tf32/" in ln)
    assert "skipped: " in tf32 and "does not apply to cpu" in tf32  # recorded as skipped, not an error


def test_gpu_check_engine_part_lists_the_step_bench_and_its_variants():
    result = _gpu_check("--part", "engine", "--list", env={"ENGINE_VARIANTS": "base fused+autotune"})
    assert result.returncode == 0, result.stderr
    assert "engine-step (tests/bench/gpu_step.py: variants base fused+autotune" in result.stdout, result.stdout
    assert "pytest-cuda" not in result.stdout and "sweep" not in result.stdout


def test_gpu_check_host_cpu_part_runs_the_long_form_cpu_suite_pinned():
    result = _gpu_check("--rehearse", "--part", "host-cpu", "--cores", "0", "--list")
    assert result.returncode == 0, result.stderr
    assert "sweep pinned to cores 0 (taskset)" in result.stdout, result.stdout
    cells = [ln for ln in result.stdout.splitlines() if "dia-tiny/cpu/" in ln]
    assert cells and all("int4=8da4w-128+engine=static+compile" in ln for ln in cells), result.stdout


@pytest.mark.skipif(shutil.which("taskset") is None or len(os.sched_getaffinity(0)) < 2,
                    reason="needs taskset and two cores to pin one")
def test_a_pinned_process_records_the_cores_it_could_use():
    one = sorted(os.sched_getaffinity(0))[0]
    out = subprocess.run(["taskset", "-c", str(one), sys.executable, "-m", "dia_bench.harness.cli", "env", "--json"],
                         capture_output=True, text=True, timeout=120, check=True).stdout
    cpu = json.loads(out)["cpu"]
    assert cpu["usable_cores"] == 1
    assert cores_label(cpu) == f"1 of {cpu['physical_cores']} cores (pinned)"
    assert cores_label({**cpu, "usable_cores": cpu["logical_cores"]}) == f"{cpu['physical_cores']} cores"


def test_the_step_bench_refuses_an_unknown_variant_in_one_line():
    result = subprocess.run([sys.executable, "-m", "tests.bench.gpu_step", "--variant", "fused+warp"],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2 and "variant 'fused+warp': knobs are autotune, base, cdt, fused" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("args, needle", [
    (["--part", "nightly"], "--part 'nightly'"),
    (["--deadline", "soon"], "--deadline 'soon'"),
    (["--gpu"], "unknown argument '--gpu'"),
    (["--resume", "/nonexistent/run"], "--resume '/nonexistent/run': no run.json there"),
    (["--part", "host-cpu", "--cores", "first-two"], "--cores 'first-two'"),
])
def test_gpu_check_bad_arguments_are_one_line_errors(args, needle):
    _one_line_usage_error(_gpu_check(*args), needle)


def test_cuda_marker_selects_the_cuda_tests():
    # .ci/gpu-check runs `pytest -m cuda`: the mark must select them (and they skip here without a GPU).
    result = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-m", "cuda",
                             "-p", "no:cacheprovider", str(REPO / "tests" / "test_plugins.py")],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    selected = [ln for ln in result.stdout.splitlines() if "::" in ln]
    assert len(selected) >= 2 and all("cuda" in ln for ln in selected), result.stdout


def test_a_commit_named_in_the_environment_wins_over_the_travelled_git():
    # A copy of the tree on another machine may carry a .git whose HEAD is not the commit it was copied from.
    named = {"DIA_BENCH_GIT_COMMIT": "0123abcd", "DIA_BENCH_GIT_SUBJECT": "copied"}
    out = subprocess.run([sys.executable, "-m", "dia_bench.harness.cli", "env", "--json"], capture_output=True,
                         text=True, timeout=120, check=True, cwd=REPO, env={**os.environ, **named}).stdout
    software = json.loads(out)["software"]
    assert (software["git_commit"], software["git_subject"]) == ("0123abcd", "copied")
