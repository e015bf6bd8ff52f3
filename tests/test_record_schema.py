"""The record as a type: docs/record.md generated from it, real records checked against it, and
`dia-bench upgrade` bringing older run directories to the current schema in place."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from dia_bench.harness import record_schema, rundir
from dia_bench.harness.analysis import results
from dia_bench.harness.cell import Cell
from dia_bench.harness.cli import _shown
from tests.conftest import cli, run_cli

REPO = Path(__file__).resolve().parent.parent
# What a schema 2 roofline lacked before the caches were counted (and the bandwidth probes were added).
LATER_ROOFLINE_FIELDS = ("cache_bytes_per_step", "bytes_per_step", "bandwidth_cached_gbps", "bandwidth_drift",
                         "bandwidth_probes_gbps", "bandwidth_unsteady", "bandwidth_cached_steady", "fraction_range")


def as_schema_2(run: Path, dest: Path) -> Path:
    """A copy of a real run as schema 2 wrote it before the caches were counted: every version 2, and each
    roofline's fraction the weights alone, under `fraction_of_bandwidth`."""
    shutil.copytree(run, dest)
    meta = json.loads((dest / "run.json").read_text())
    meta["schema_version"] = 2
    (dest / "run.json").write_text(json.dumps(meta))
    for p in (dest / "cells").glob("*.json"):
        rec = json.loads(p.read_text())
        rec["schema_version"] = 2
        if roof := rec.get("roofline"):
            roof["fraction_of_bandwidth"] = roof.pop("weights_fraction_of_bandwidth")
            for name in LATER_ROOFLINE_FIELDS:
                roof.pop(name)
        p.write_text(json.dumps(rec))
    return dest


def _files(run: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(run)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(run.rglob("*"))
            if p.is_file()}


def _types() -> list[type]:
    seen: list[type] = []

    def walk(td: type) -> None:
        if td not in seen:
            seen.append(td)
            for _, tp, _, _ in record_schema.fields(td):
                for inner in record_schema._nested(tp):
                    walk(inner)

    walk(record_schema.Record)
    walk(record_schema.RunMeta)
    return seen


def test_docs_record_md_is_what_dia_bench_schema_writes():
    result = cli("schema")
    assert result.returncode == 0, result.stderr
    assert (REPO / "docs" / "record.md").read_text() == result.stdout, \
        "docs/record.md is out of date: run `dia-bench schema -o docs/record.md`"
    assert f"# The record (schema_version {record_schema.SCHEMA_VERSION})" in result.stdout
    for version, _ in record_schema.HISTORY:
        assert f"- **{version}**: " in result.stdout


def test_every_field_says_what_it_holds_when_it_is_none_and_when_it_is_present():
    for td in _types():
        for name, tp, doc, required in record_schema.fields(td):
            where = f"{td.__name__}.{name}"
            assert doc.what.strip(), where
            nullable = record_schema._is_union(tp) and type(None) in tp.__args__
            assert bool(doc.none) == nullable, f"{where}: a None-when text exactly where None is allowed"
            assert required or doc.present, f"{where}: not in every record, so it says when it is"


def test_the_cell_type_names_every_field_of_a_cell():
    declared = {name for name, _, _, _ in record_schema.fields(record_schema.CellSpec)}
    assert declared == set(Cell().to_dict())


def test_the_records_of_a_real_sweep_are_of_the_type(tiny_run):
    recs = rundir.records(tiny_run)
    assert {r["status"] for r in recs} == {"ok", "skipped"}
    for rec in recs:
        assert record_schema.problems(rec) == [], rec["description"]
    assert record_schema.problems(rundir.read_meta(tiny_run), record_schema.RunMeta, "run") == []


def test_problems_names_each_difference(tiny_run):
    rec = next(r for r in rundir.records(tiny_run) if r["status"] == "ok")
    rec = json.loads(json.dumps(rec))
    rec["speed"] = 3
    del rec["cell_id"]
    rec["rtf"] = "fast"
    rec["roofline"]["fraction_of_bandwidth"] = [0.5]
    rec["status"] = "done"
    found = record_schema.problems(rec)
    for needle in ("record.speed: not a field of Record", "record.cell_id: missing", "record.rtf: str",
                   "record.roofline.fraction_of_bandwidth: list", "record.status: 'done', not one of"):
        assert any(p.startswith(needle) for p in found), (needle, found)
    assert len(found) == 5, found


def test_upgrade_brings_a_schema_2_run_forward_and_keeps_the_originals(tiny_run, tmp_path):
    runs = tmp_path / "runs"
    old = as_schema_2(tiny_run, runs / "old").resolve()
    current = runs / "current"
    shutil.copytree(tiny_run, current)
    originals = {p.name: p.read_bytes() for p in (old / "cells").glob("*.json")}
    before = {p.name: json.loads(b) for p, b in ((old / "cells" / n, b) for n, b in originals.items())}

    result = cli("upgrade", str(runs))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 2, result.stdout  # one line per run directory
    shown = _shown(old)  # relative where the run lies under the working directory (CI's temp dir does)
    (changed,) = [ln for ln in lines if ln.startswith(f"{shown}:")]
    assert "schema 2 -> 3" in changed and "4 record(s) rewritten" in changed
    assert f"originals in {shown}/.backup-v2/" in changed
    assert "roofline.fraction_of_bandwidth -> weights_fraction_of_bandwidth" in changed
    (same,) = [ln for ln in lines if ln is not changed]
    assert "already schema 3, nothing changed" in same

    backup = old / ".backup-v2"
    assert {p.name: p.read_bytes() for p in (backup / "cells").glob("*.json")} == originals
    assert json.loads((backup / "run.json").read_text())["schema_version"] == 2
    meta = rundir.read_meta(old)
    assert meta["schema_version"] == 3
    assert record_schema.problems(meta, record_schema.RunMeta, "run") == []
    measured = 0
    for p in (old / "cells").glob("*.json"):
        rec = json.loads(p.read_text())
        assert rec["schema_version"] == 3 and record_schema.problems(rec) == [], p.name
        if roof := rec.get("roofline"):
            measured += 1
            assert roof["weights_fraction_of_bandwidth"] == before[p.name]["roofline"]["fraction_of_bandwidth"]
            for name in ("fraction_of_bandwidth", "fraction_range", "achieved_bandwidth_gbps", "floor_step_ms",
                         "cache_bytes_per_step", "bytes_per_step"):
                assert roof[name] is None, name
    assert measured == 3
    df = results.load(old)
    ok = df[df["status"] == "ok"]
    assert ok["fraction_of_bandwidth"].isna().all() and ok["weights_fraction_of_bandwidth"].notna().all()
    assert cli("report", str(old), "-o", str(tmp_path / "report.html")).returncode == 0


def test_upgrade_twice_changes_nothing_the_second_time(tiny_run, tmp_path):
    old = as_schema_2(tiny_run, tmp_path / "old").resolve()
    assert cli("upgrade", str(old)).returncode == 0
    files = _files(old)
    again = cli("upgrade", str(old))
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip() == f"{_shown(old)}: already schema 3, nothing changed"
    assert _files(old) == files  # bytes and modification times


def test_reading_a_run_before_upgrading_it_says_how(tiny_run, tmp_path):
    old = as_schema_2(tiny_run, tmp_path / "old").resolve()
    result = run_cli("report", str(old), "-o", str(tmp_path / "r.html"))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("dia-bench: error:")
    assert f"run `dia-bench upgrade {old}` first" in lines[0] and "schema 2" in lines[0]
    assert not (tmp_path / "r.html").exists()


@pytest.mark.parametrize("version, needles", [
    (99, ["schema 99", "newer than this dia-bench", "upgrade dia-bench"]),
    (1, ["schema 1", "can neither read nor upgrade", "measure the suite again"]),
    ("2", ["no schema_version ('2')"]),
])
def test_upgrade_refuses_what_it_cannot_bring_forward(tiny_run, tmp_path, version, needles):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    meta = json.loads((run / "run.json").read_text())
    meta["schema_version"] = version
    (run / "run.json").write_text(json.dumps(meta))
    files = _files(run)
    result = cli("upgrade", str(run))
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert _files(run) == files


def test_upgrade_refuses_a_record_it_cannot_bring_forward_before_changing_anything(tiny_run, tmp_path):
    old = as_schema_2(tiny_run, tmp_path / "old").resolve()
    odd = next((old / "cells").glob("*.json"))
    rec = json.loads(odd.read_text())
    rec["schema_version"] = 1
    odd.write_text(json.dumps(rec))
    files = _files(old)
    result = cli("upgrade", str(old))
    assert result.returncode == 2 and f"{odd} holds a record of schema 1" in result.stderr, result.stderr
    assert "nothing was changed" in result.stderr
    assert _files(old) == files and not (old / ".backup-v2").exists()
