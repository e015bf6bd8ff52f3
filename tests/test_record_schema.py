"""The record as a type: docs/record.md generated from it, and real records checked against it."""

from __future__ import annotations

import json
from pathlib import Path

from dia_bench.harness import record_schema, rundir
from dia_bench.harness.cell import Cell
from tests.conftest import cli

REPO = Path(__file__).resolve().parent.parent
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
