"""Suites, expansion, sweeps with resume, statistics, compare and export: on dia-tiny."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dia_bench.harness import rundir
from dia_bench.harness.analysis import results
from dia_bench.harness.driver.expand import expand, plugin_combinations
from dia_bench.harness.driver.suite import parse_suite
from tests.conftest import cli, quiet_machine, run_cli

TINY_SUITE = """
[suite]
description = "test suite"
presets = ["dia-tiny"]
devices = ["cpu"]
texts = ["short"]
seconds = [0.2]
warmup = 0
repeats = 3
fidelity = false
design = "one-at-a-time"

[plugins]
cfg = ["0"]
tf32 = [true]
"""


def write_suite(tmp_path: Path, text: str = TINY_SUITE, name: str = "tiny") -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text)
    return path


def _usage_error(result, *needles: str) -> None:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    for n in needles:
        assert n in lines[0], lines[0]


@pytest.mark.parametrize("design, plugins, expected", [
    ("one-at-a-time", {"cfg": ["0", "3"], "int8": ["dynamic"]}, [[], ["cfg=0"], ["cfg=3"], ["int8=dynamic"]]),
    ("full", {"cfg": ["0"], "int8": ["dynamic"]}, [[], ["int8=dynamic"], ["cfg=0"], ["cfg=0", "int8=dynamic"]]),
    ("leave-one-out", {"cfg": ["0"], "int8": ["dynamic"], "threads": ["1"]},
     [["cfg=0", "int8=dynamic", "threads=1"], ["int8=dynamic", "threads=1"], ["cfg=0", "threads=1"],
      ["cfg=0", "int8=dynamic"]]),
])
def test_matrix_designs(tmp_path, design, plugins, expected):
    body = "\n".join(f"{k} = {json.dumps(v)}" for k, v in plugins.items())
    suite = parse_suite(write_suite(tmp_path, TINY_SUITE.split("[plugins]")[0].replace(
        "one-at-a-time", design) + "[plugins]\n" + body))
    assert plugin_combinations(suite) == expected


def test_expansion_keeps_what_cannot_run_as_skipped_and_brackets_with_baselines(tmp_path):
    planned = expand(parse_suite(write_suite(tmp_path)))
    roles = [p.role for p in planned]
    assert roles[0] == "baseline-start" and roles[-1] == "baseline-end"
    tf32 = next(p for p in planned if p.cell.plugins == ["tf32"])
    assert "does not apply to cpu" in tf32.skip_reason
    assert len({p.key for p in planned}) == len(planned)


def test_explicit_cells_and_available_devices(tmp_path):
    text = TINY_SUITE.replace('devices = ["cpu"]', 'devices = ["available"]').replace(
        'design = "one-at-a-time"', 'design = "explicit"\ncells = [["cfg=0"], ["cfg=0", "int8=dynamic"]]')
    planned = expand(parse_suite(write_suite(tmp_path, text.split("[plugins]")[0])))
    assert {p.cell.device for p in planned} >= {"cpu"}
    assert [p.cell.plugins for p in planned if p.cell.device == "cpu"] == [
        [], ["cfg=0"], ["cfg=0", "int8=dynamic"], []]


@pytest.mark.parametrize("mutate, needles", [
    (lambda s: s.replace("repeats = 3", "repeets = 3"), ["unknown key 'repeets'", "did you mean 'repeats'"]),
    (lambda s: s.replace("repeats = 3", "repeats = 3 3"), ["not valid TOML", "line"]),
    (lambda s: s.replace('cfg = ["0"]', 'warp = ["9"]'), ["[plugins]", "unknown plugin 'warp'"]),
    (lambda s: s.replace('cfg = ["0"]', 'int8 = ["int3"]'), ["no value 'int3'"]),
    (lambda s: s.replace('devices = ["cpu"]', 'devices = ["tpu"]'), ["unknown device 'tpu'"]),
    (lambda s: s.replace('texts = ["short"]', 'texts = ["epic"]'), ["unknown text 'epic'"]),
    (lambda s: s.replace('design = "one-at-a-time"', 'design = "random"'), ["design = 'random'"]),
    (lambda s: s.replace("repeats = 3", 'repeats = "3"'), ["repeats", "wrong type"]),
])
def test_bad_suite_files_are_one_line_errors(tmp_path, mutate, needles):
    path = write_suite(tmp_path, mutate(TINY_SUITE))
    _usage_error(run_cli("sweep", str(path), "--out", str(tmp_path / "run")), str(path), *needles)
    assert not (tmp_path / "run").exists()  # nothing ran


def test_unknown_suite_name():
    _usage_error(run_cli("sweep", "nightly"), "unknown suite 'nightly'", "smoke")


def test_shipped_suites_parse():
    from dia_bench.harness.driver.suite import SUITES_DIR, suite_names

    for name in suite_names():
        suite = parse_suite(SUITES_DIR / f"{name}.toml")
        assert suite.description


def test_sweep_writes_a_run_directory_with_every_cell(tiny_run):
    meta = rundir.read_meta(tiny_run)
    assert meta["suite"]["name"] == "tiny" and meta["finished_at"] and meta["machine"]["cpu"]
    df = results.load(tiny_run)
    assert list(df["role"]) == ["baseline-start", "cell", "cell", "baseline-end"]  # in the order they ran
    assert set(df["status"]) == {"ok", "skipped"}
    ok = df[df["status"] == "ok"]
    assert (ok["rtf_ci_low"] <= ok["rtf"]).all() and (ok["rtf"] <= ok["rtf_ci_high"]).all()
    base = ok[ok["role"] == "baseline-start"].iloc[0]
    assert base["speedup"] == pytest.approx(1.0)
    cfg0 = ok[ok["plugins"] == "cfg=0"].iloc[0]
    assert cfg0["speedup_low"] <= cfg0["speedup"] <= cfg0["speedup_high"]
    drift = results.baseline_drift(df)
    assert len(drift) == 1 and drift.iloc[0]["drift_pct"] is not None
    # A sweep cut before its end baseline: the drift is unknown, and said to be.
    cut = results.baseline_drift(df[df["role"] != "baseline-end"])
    assert len(cut) == 1 and cut.iloc[0]["end_rtf"] is None and cut.iloc[0]["drift_pct"] is None
    assert "drift unknown" in results.drift_text(cut.iloc[0])


def test_results_load_merges_many_runs(tiny_run):
    df = results.load([tiny_run, tiny_run])
    assert len(df) == 8


def test_resume_runs_only_what_is_missing(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    records = sorted((copy / "cells").glob("*.json"))
    before = {p.name: p.stat().st_mtime_ns for p in records}
    records[0].unlink()
    suite = Path(rundir.read_meta(copy)["suite"]["path"])
    result = cli("sweep", str(suite), "--out", str(copy), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (copy / "cells").glob("*.json")}
    assert set(after) == set(before)
    changed = [n for n in after if after[n] != before.get(n)]
    assert changed == [records[0].name]


def test_retry_failed_measures_failed_cells_again_and_nothing_else(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    target = next(p for p in sorted((copy / "cells").glob("*.json")) if json.loads(p.read_text())["role"] == "cell"
                  and json.loads(p.read_text())["status"] == "ok")
    rec = json.loads(target.read_text())
    target.write_text(json.dumps({**rec, "status": "failed", "reason": "lost on node x"}))
    before = {p.name: p.stat().st_mtime_ns for p in (copy / "cells").glob("*.json")}
    suite = Path(rundir.read_meta(copy)["suite"]["path"])
    result = cli("sweep", str(suite), "--out", str(copy), "--retry-failed", "--quiet")
    assert result.returncode == 0, result.stderr
    after = {p.name: p.stat().st_mtime_ns for p in (copy / "cells").glob("*.json")}
    assert [n for n in after if after[n] != before[n]] == [target.name]
    assert json.loads(target.read_text())["status"] == "ok"


@pytest.mark.parametrize("damage", ["cut short", "empty", "not a record"])
def test_an_unreadable_record_is_named_and_measured_again_on_resume(tiny_run, tmp_path, damage):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(tiny_run, copy)
    victim = sorted((copy / "cells").glob("*.json"))[1]
    text = victim.read_text()
    victim.write_text({"cut short": text[: len(text) // 2], "empty": "", "not a record": "[1, 2]"}[damage])
    # Every reader names the file and why, and says how to get the cell back.
    for args in (["report", "--markdown", str(copy), "-o", str(tmp_path / "r.md")],
                 ["export", str(copy), "-o", str(tmp_path / "e.json")]):
        result = run_cli(*args)  # a process of its own: each process names an unreadable file once
        assert result.returncode == 0, result.stderr
        line = next(ln for ln in result.stderr.splitlines() if victim.name in ln)
        assert "cannot be read" in line and "--resume" in line
    assert victim.stem not in rundir.done_keys(copy)
    suite = Path(rundir.read_meta(copy)["suite"]["path"])
    result = cli("sweep", str(suite), "--out", str(copy), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    assert "set aside" in result.stderr
    kept = list((copy / "cells" / rundir.UNREADABLE_DIR).glob(f"{victim.stem}.*.json"))
    assert len(kept) == 1 and kept[0].read_text() == {"cut short": text[: len(text) // 2], "empty": "",
                                                      "not a record": "[1, 2]"}[damage]
    records, bad = rundir.scan(copy)
    assert not bad and len(records) == len(list((tiny_run / "cells").glob("*.json")))
    assert json.loads(victim.read_text())["status"] in ("ok", "skipped")


def test_records_are_readable_by_others_like_any_result_file(tiny_run):
    for p in (tiny_run / "cells").glob("*.json"):
        mode = p.stat().st_mode & 0o777
        assert mode & 0o044 == 0o044 & ~_umask(), oct(mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_resume_refuses_another_suite_and_non_runs(tiny_run, tmp_path):
    other = write_suite(tmp_path, TINY_SUITE.replace("repeats = 3", "repeats = 2"), name="other")
    _usage_error(run_cli("sweep", str(other), "--out", str(tiny_run), "--resume"), "refusing to mix")
    _usage_error(run_cli("sweep", str(other), "--out", str(tmp_path), "--resume"), "not a dia-bench run directory")
    _usage_error(run_cli("sweep", str(other), "--out", str(tiny_run)), "already holds a run", "--resume")


def test_resume_refuses_a_newer_schema(tiny_run, tmp_path):
    import shutil

    copy = tmp_path / "newer"
    shutil.copytree(tiny_run, copy)
    meta = json.loads((copy / "run.json").read_text())
    meta["schema_version"] = 99
    (copy / "run.json").write_text(json.dumps(meta))
    _usage_error(run_cli("sweep", meta["suite"]["path"], "--out", str(copy), "--resume"), "schema 99",
                 "upgrade dia-bench")


def test_a_killed_sweep_loses_at_most_the_running_cell(tmp_path):
    suite = write_suite(tmp_path)
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "dia_bench.harness.cli", "sweep", str(suite), "--out", str(out),
                             "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and len(list((out / "cells").glob("*.json"))) < 1:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    kept = {p.name for p in (out / "cells").glob("*.json")}
    assert kept
    for p in (out / "cells").glob("*.json"):
        json.loads(p.read_text())  # every record on disk is whole
    result = cli("sweep", str(suite), "--out", str(out), "--resume", "--quiet")
    assert result.returncode == 0, result.stderr
    df = results.load(out)
    assert len(df) == 4 and df["key"].is_unique


def test_compare_flags_only_significant_regressions(tiny_run, tmp_path):
    import shutil

    def rewritten(name: str, factor: float) -> Path:
        """The run's records with each cell's repeats set to its median x (0.99, 1, 1.01) x factor: a
        dia-tiny run's own repeats can spread so widely on a busy 2-core VM that even a 2x change is
        inside the interval, and that would test the VM, not compare."""
        out = tmp_path / name
        shutil.copytree(tiny_run, out)
        medians: dict[str, float] = {}
        for p in sorted((out / "cells").glob("*.json")):
            rec = json.loads(p.read_text())
            if rec["status"] == "ok":
                # One median per configuration: the baseline's start and end processes then agree, so
                # the run's own estimate of the noise between processes is the quiet machine's too.
                own = sorted(rec["repeats_seconds"])[len(rec["repeats_seconds"]) // 2]
                mid = medians.setdefault(rec["cell_id"], own)
                rec["repeats_seconds"] = [mid * k * factor for k in (0.99, 1.0, 1.01)]
                rec["generation_seconds"] = mid * factor
                rec["rtf"] = mid * factor / rec["audio_seconds"]
                p.write_text(json.dumps(rec))
        quiet_machine(out)
        return out

    steady, copy = rewritten("steady", 1.0), rewritten("copy", 1.0)  # the same measurements: nothing regressed
    same = cli("compare", str(steady), str(copy), "--max-regression", "5")
    assert same.returncode == 0, same.stderr
    slower = rewritten("slower", 2.0)  # every repeat doubled: a real 2x regression in the data compare reads
    bad = cli("compare", str(steady), str(slower), "--max-regression", "10")
    assert bad.returncode == 1, (bad.stdout, bad.stderr)
    assert "regressed by more than 10%" in bad.stderr and "slower" in bad.stdout
    lenient = cli("compare", str(steady), str(slower), "--max-regression", "150")
    assert lenient.returncode == 0
    assert "differ in more than the code" not in same.stderr + lenient.stderr


def test_compare_names_what_changed_besides_the_code(tiny_run, tmp_path):
    import shutil

    other = tmp_path / "other-machine"
    shutil.copytree(tiny_run, other)
    meta = json.loads((other / "run.json").read_text())
    meta["machine"]["cpu"]["model"] = "Some Other CPU"
    meta["machine"]["software"]["torch"] = "9.9.9"
    (other / "run.json").write_text(json.dumps(meta))
    result = cli("compare", str(tiny_run), str(other))
    assert result.returncode == 0, result.stderr
    assert "differ in more than the code" in result.stderr
    assert "-> Some Other CPU" in result.stderr and "torch: " in result.stderr and "-> 9.9.9" in result.stderr


def test_export_pytest_benchmark_is_read_by_pytest_benchmark(tiny_run, tmp_path):
    out = tmp_path / "0001_export.json"
    result = cli("export", str(tiny_run), "--format", "pytest-benchmark", "-o", str(out))
    assert result.returncode == 0, result.stderr
    data = json.loads(out.read_text())
    assert len(data["benchmarks"]) == 3
    assert {"median", "iqr", "rounds", "data"} <= set(data["benchmarks"][0]["stats"])
    cmp = subprocess.run([sys.executable, "-c", "import sys; from pytest_benchmark.cli import main; sys.exit(main())",
                          "compare", str(out)],
                         capture_output=True, text=True)
    assert cmp.returncode == 0, cmp.stderr
    assert "baseline" in cmp.stdout


def test_baseline_every_repeats_the_baseline_between_cells(tmp_path):
    text = TINY_SUITE.replace("[plugins]", "baseline_every = 2\n[plugins]").replace(
        'tf32 = [true]', 'tf32 = [true]\nsdpa = ["math"]\nint8 = ["dynamic"]\nthreads = ["1"]')
    planned = expand(parse_suite(write_suite(tmp_path, text)))
    # tf32 is skipped on cpu: it does not count towards the two cells between baselines.
    assert [p.cell.plugins[0] if p.role == "cell" else p.role for p in planned] == [
        "baseline-start", "cfg=0", "tf32", "sdpa=math", "baseline-mid", "int8=dynamic", "threads=1", "baseline-end"]
    assert len({p.key for p in planned}) == len(planned)
    mids = [p for p in planned if p.role == "baseline-mid"]
    assert all(p.cell.cell_id == planned[0].cell.cell_id for p in mids)
    _usage_error(run_cli("sweep", str(write_suite(tmp_path, text.replace("baseline_every = 2", "baseline_every = -1"),
                                                  name="neg")), "--list"), "baseline_every")


def test_an_explicit_suite_may_go_without_the_baseline(tmp_path):
    """`baseline = false`: only the listed cells, for suites whose baseline would cost more than they do;
    refused where the design forms the baseline itself, or the cells list it anyway."""
    explicit = TINY_SUITE.replace('design = "one-at-a-time"', 'design = "explicit"\ncells = [["cfg=0"]]').replace(
        '[plugins]\ncfg = ["0"]\ntf32 = [true]\n', "")
    assert [p.role for p in expand(parse_suite(write_suite(tmp_path, explicit)))] == [
        "baseline-start", "cell", "baseline-end"]
    without = explicit.replace('design = "explicit"', 'design = "explicit"\nbaseline = false')
    planned = expand(parse_suite(write_suite(tmp_path, without, name="without")))
    assert [(p.role, p.cell.plugins) for p in planned] == [("cell", ["cfg=0"])]
    for name, text, needle in (
            ("design", TINY_SUITE.replace('design = "one-at-a-time"', 'design = "one-at-a-time"\nbaseline = false'),
             "needs design"),
            ("listed", without.replace('[["cfg=0"]]', '[[], ["cfg=0"]]'), "drop one"),
            ("every", without.replace("baseline = false", "baseline = false\nbaseline_every = 1"), "baseline_every")):
        _usage_error(run_cli("sweep", str(write_suite(tmp_path, text, name=name)), "--list"), "baseline = false",
                     needle)


def test_speedup_compares_with_the_baseline_as_fast_as_the_machine_was_then(tiny_run, tmp_path):
    """A machine that got 2x slower during the run: the end baseline is slower, a cell run halfway
    through is compared with the baseline interpolated to its time, not with the fast start."""
    import shutil

    copy = tmp_path / "drifted"
    shutil.copytree(tiny_run, copy)
    recs = {p: json.loads(p.read_text()) for p in (copy / "cells").glob("*.json")}
    by_role = {r.get("role"): p for p, r in recs.items() if r["status"] == "ok" and r["plugins"] != ["cfg=0"]}
    cell_p = next(p for p, r in recs.items() if r["plugins"] == ["cfg=0"])
    # A quiet machine's spread (1%) around the real baseline's median: a 2x drift must stand out of it.
    median = sorted(recs[by_role["baseline-start"]]["repeats_seconds"])[1]
    base = [median, 1.01 * median, 0.99 * median]
    # The machine slows down linearly to half speed; the cell, run halfway, is exactly as fast as the
    # baseline was then (1.5x the start's times).
    changes = [(by_role["baseline-start"], "00:00", base), (cell_p, "10:00", [1.5 * t for t in base]),
               (by_role["baseline-end"], "20:00", [2 * t for t in base])]
    quiet_machine(copy)
    for path, minute, times in changes:
        rec = recs[path]
        rec["measured_from"] = f"2026-01-01T00:{minute}.000+00:00"
        rec["measured_until"] = f"2026-01-01T00:{minute[:3]}10.000+00:00"
        rec["repeats_seconds"] = times
        path.write_text(json.dumps(rec))
    df = results.load(copy)
    row = df[df["plugins"] == "cfg=0"].iloc[0]
    assert row["speedup"] == pytest.approx(1.0)
    assert row["baseline_ref"] == "baseline-start..baseline-end @0.50"
    assert not row["significant"]
    ended = df[df["role"] == "baseline-end"].iloc[0]
    assert ended["speedup"] == pytest.approx(0.5)  # the drift itself stays visible
    drift = results.baseline_drift(df).iloc[0]
    assert drift["drift_pct"] == pytest.approx(100.0) and drift["significant"]


def test_list_leaves_machine_checks_to_the_nodes_under_ray(tmp_path):
    # A GPU no machine has: this machine skips the CUDA cells (no CUDA, or not that GPU); under Ray the
    # node that runs them decides, so they are listed as runnable. Needs no Ray: --list connects to nothing.
    suite = write_suite(tmp_path, TINY_SUITE.replace('devices = ["cpu"]', 'devices = ["cpu", "cuda"]\n'
                                                     'gpu_model = "NOSUCHGPU"'))
    local = run_cli("sweep", str(suite), "--list")
    on_ray = run_cli("sweep", str(suite), "--list", "--executor", "ray")
    assert local.returncode == 0 and on_ray.returncode == 0, (local.stderr, on_ray.stderr)
    cuda_local = [ln for ln in local.stdout.splitlines() if "/cuda(NOSUCHGPU)/" in ln]
    cuda_ray = [ln for ln in on_ray.stdout.splitlines() if "/cuda(NOSUCHGPU)/" in ln]
    assert cuda_local and all("[skipped:" in ln for ln in cuda_local), local.stdout
    # tf32 does not apply to a CPU anywhere: the driver still says so; the CUDA baseline is left to the node.
    assert [ln for ln in cuda_ray if "[skipped:" in ln] == [], on_ray.stdout
    assert any("/cpu/tf32/" in ln and "[skipped:" in ln for ln in on_ray.stdout.splitlines()), on_ray.stdout


def test_processes_measure_each_cell_in_rounds_of_worker_processes(tmp_path):
    """`processes = 2`: every cell runs twice, a whole round at a time; the report has one row per
    configuration whose interval rests on both processes, and the run records what it measured of
    the noise between processes and the prior it started from."""
    from dia_bench.harness import process_noise

    text = TINY_SUITE.replace("repeats = 3", "repeats = 3\nprocesses = 2").replace("tf32 = [true]\n", "")
    text = text.replace("seconds = [0.2]", "seconds = [0.1]").replace('cfg = ["0"]', 'cfg = ["0"]\nsdpa = ["math"]')
    suite = write_suite(tmp_path, text)
    planned = expand(parse_suite(suite))
    assert [(p.role, p.cell.plugins) for p in planned] == [
        ("baseline-start", []), ("cell", ["cfg=0"]), ("cell", ["sdpa=math"]), ("baseline-mid", []),
        ("cell-process", ["cfg=0"]), ("cell-process", ["sdpa=math"]), ("baseline-end", [])]
    assert planned[4].key == planned[1].key + "@p2" and planned[3].key == planned[0].key + "@p2"
    out = tmp_path / "run"
    result = cli("sweep", str(suite), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    meta = rundir.read_meta(out)
    assert set(meta["process_noise_prior"]) == {"cpu dia-tiny", "cuda dia-tiny"}
    # The baseline's 3 processes (start, round 2, end) and each cell's 2.
    assert meta["process_noise"]["cpu dia-tiny"]["processes"] == 7
    df = results.load(out)
    cells = results.ok_cells(df)
    assert sorted(cells["plugins"]) == ["baseline", "cfg=0", "sdpa=math"]
    row = cells[cells["plugins"] == "cfg=0"].iloc[0]
    assert len(row["processes"]) == 2 and all(len(p) == 3 for p in row["processes"])
    assert row["rtf_ci_low"] < row["rtf"] < row["rtf_ci_high"]
    assert "measured in this run (7 processes)" in row["process_source"]
    history = json.loads(process_noise.history_path().read_text())
    assert any(r["run"] == str(out.resolve()) for runs in history.values() for r in runs.get("cpu dia-tiny", []))
    # The same run against a copy of itself: nothing changed, and the output says what the intervals hold.
    import shutil

    shutil.copytree(out, tmp_path / "copy")
    same = cli("compare", str(out), str(tmp_path / "copy"), "--fail-on", "regression")
    assert same.returncode == 0, same.stderr
    assert "intervals include the noise between processes" in same.stdout
