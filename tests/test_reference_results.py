"""reference-results/ holds curated run directories only, each readable at the current schema and with the
README.md `dia-bench readme` generates from it now; docs/results.md lists exactly them. The generator on a
fresh run: its text depends on the run alone, not on where the run lies."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from dia_bench.harness import record_schema, rundir
from dia_bench.harness.analysis import load_runs
from dia_bench.harness.serving import loadtest
from dia_bench.reports import load_readme, readme
from tests.conftest import cli

REPO = Path(__file__).resolve().parent.parent
REFERENCE = REPO / "reference-results"
RESULTS_PAGE = REPO / "docs" / "results.md"
KEPT = sorted(d for d in REFERENCE.iterdir() if d.is_dir())
SWEEPS = [d for d in KEPT if rundir.is_run_dir(d)]
LOADS = [d for d in KEPT if load_runs.is_load_dir(d)]
FIX = "dia-bench readme reference-results/* && dia-bench readme --index reference-results --out docs/results.md"


def test_there_are_reference_results():
    assert len(KEPT) >= 5
    assert not [p for p in REFERENCE.iterdir() if not p.is_dir()], "reference-results/ holds directories only"
    assert sorted(SWEEPS + LOADS) == KEPT, "each holds a sweep run (run.json) or a load run (load.json)"


@pytest.mark.parametrize("run", SWEEPS, ids=lambda d: d.name)
def test_each_reference_result_is_a_current_run_directory_with_its_generated_readme(run: Path):
    assert {p.name for p in run.iterdir()} == {"run.json", "cells", "README.md"}, \
        "a reference result holds run.json, cells/ and README.md alone"
    cells = list((run / "cells").iterdir())
    assert cells and all(p.suffix == ".json" and p.is_file() for p in cells)
    meta = rundir.read_meta(run)  # raises where the schema is not the current one
    assert meta["schema_version"] == record_schema.SCHEMA_VERSION
    assert record_schema.problems(meta, record_schema.RunMeta, "run") == []
    records, unreadable = rundir.scan(run)
    assert not unreadable and len(records) == len(cells)
    for rec in records:
        assert rec["schema_version"] == record_schema.SCHEMA_VERSION
        assert record_schema.problems(rec) == [], rec.get("key")
    assert (run / "README.md").read_text() == readme.render(run), f"README.md is out of date: {FIX}"
    # What users read names no tracker issue or work session: a suite's recorded description says what it measures.
    assert not re.search(r"\bissue\s*#?\d+|\bthis session\b", (run / "README.md").read_text(), re.I)


@pytest.mark.parametrize("run", LOADS, ids=lambda d: d.name)
def test_each_reference_load_run_is_current_with_its_generated_readme(run: Path):
    assert {p.name for p in run.iterdir()} == {"load.json", "README.md"}, \
        "a reference load run holds load.json and README.md alone (`dia-bench report` draws its page)"
    loaded = load_runs.read(run)
    assert loaded.doc["format_version"] == loadtest.FORMAT_VERSION
    assert loaded.summaries() and loaded.max_rate.get("method")
    assert (run / "README.md").read_text() == load_readme.render(run), f"README.md is out of date: {FIX}"


def test_the_results_page_lists_exactly_the_reference_results():
    text = RESULTS_PAGE.read_text()
    assert text == readme.index(REFERENCE, RESULTS_PAGE.parent), f"docs/results.md is out of date: {FIX}"
    linked = re.findall(r"\]\(\.\./reference-results/([^/]+)/README\.md\)", text)
    assert linked == [d.name for d in KEPT]


def test_a_readme_depends_on_the_run_alone(tiny_run, tmp_path):
    here, there = tmp_path / "a" / "run", tmp_path / "elsewhere" / "deeper" / "copy"
    for d in (here, there):
        shutil.copytree(tiny_run, d)
    result = cli("readme", str(here))
    assert result.returncode == 0, result.stderr
    text = (here / "README.md").read_text()
    assert text == readme.render(there)
    for path in (str(tmp_path), str(tiny_run.parent), str(Path.home())):
        assert path not in text
    for rec in rundir.records(here):
        assert f"| {rec['description']} | {rec['status']} |" in text
        if rec["status"] == "ok":  # and where its time went: long-form, the codec, the roofline
            codec = rec["stages"]["codec_decode_s"] / rec["audio_seconds"]
            assert (f"| {rec['description']} | {rec['long_form']['rtf']:.3f} [" in text
                    and f" | {rec['rtf_end_to_end']:.3f} | {codec:.3f} | " in text), rec["description"]
    assert "dia-bench sweep tiny.toml --out tiny-again" in text
    assert "> test suite" in text and "(fewer than 3 repeats" not in text  # the tiny suite runs 3 repeats


def test_readme_writes_where_asked_and_indexes_a_folder(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    shutil.copytree(tiny_run, runs / "one")
    out = tmp_path / "elsewhere" / "one.md"
    assert cli("readme", str(runs / "one"), "--out", str(out)).returncode == 0
    assert out.read_text() == readme.render(runs / "one") and not (runs / "one" / "README.md").exists()
    listed = cli("readme", "--index", str(runs), "--out", str(tmp_path / "index.md"))
    assert listed.returncode == 0, listed.stderr
    (line,) = [ln for ln in (tmp_path / "index.md").read_text().splitlines() if ln.startswith("- ")]
    assert line.startswith("- [one](runs/one/README.md): ") and "suite `tiny`" in line


@pytest.mark.parametrize("args, needle", [
    ([], "give a RUN_DIR (or --index PARENT)"),
    (["--index", "/nonexistent-dia-bench-folder"], "no such directory"),
    (["a", "b", "--out", "x.md"], "--out names one file"),
])
def test_readme_refuses_bad_arguments_in_one_line(args, needle):
    result = cli("readme", *args)
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], result.stderr
