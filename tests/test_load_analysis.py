"""Load runs read back: `compare` of two load runs (rate by rate, beyond both intervals and the process
term, with a gate), `history` over load runs and `recommend` with a load run beside a sweep, in text,
Markdown and JSON. One real dia-tiny load run is made; its copies are rewritten to what a slower machine
or a later commit would have recorded, and say so. Nothing asserts on a measured time."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path

import pytest

from dia_bench.harness import cli
from dia_bench.harness.analysis import load_runs

QUIET = {"variance": 0.02 ** 2, "df": 4.0, "source": "a quiet machine (test)"}


@pytest.fixture(scope="module")
def load_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("load")
    code = cli.main(["load", "--preset", "dia-tiny", "--device", "cpu", "--seconds", "0.25", "--timeout", "120",
                     "--rates", "2,4", "--requests", "6", "--texts", "short", "--target-ttfa", "30",
                     "--criterion", "estimate", "--out", str(out)])
    assert code == cli.EXIT_OK
    return out


def assert_usage_error(code: int, capsys, *needles: str) -> None:
    assert code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dia-bench: error:") and "Traceback" not in err, err
    for needle in needles:
        assert needle in lines[0], lines[0]


def _rewrite(src: Path, dst: Path, change) -> Path:
    shutil.copytree(src, dst)
    doc = json.loads((dst / "load.json").read_text())
    change(doc)
    (dst / "load.json").write_text(json.dumps(doc))
    return dst


def _estimates(doc: dict):
    for run in doc["rates"]:
        for measure in ("ttfa_s", "latency_s"):
            yield from run["summary"]["quantiles"][measure].values()


def _slower(doc: dict) -> None:
    """Every quantile's whole interval four times above the old one's top, on a quiet machine."""
    doc["process_prior"] = QUIET
    doc["started_at"] = "2099-01-01T00:00:00+00:00"
    for e in _estimates(doc):
        if e["value"] is not None and not e["censored"]:
            top = e["high"] if e["high"] is not None else e["value"]
            e["value"], e["low"], e["high"] = 4 * top, 4 * top, None if e["high"] is None else 5 * top


def test_a_load_run_against_its_own_copy_changes_nothing(load_dir, tmp_path, capsys):
    copy_dir = _rewrite(load_dir, tmp_path / "again", lambda d: d.update(started_at="2099-01-01T00:00:00+00:00"))
    code = cli.main(["compare", str(load_dir), str(copy_dir), "--fail-on", "any-change", "--format", "json"])
    doc = json.loads(capsys.readouterr().out)
    assert code == cli.EXIT_OK
    assert doc["format"] == "dia-bench-load-compare" and not doc["gate"]["failing"]
    assert {r["rate"] for r in doc["rates"]} == {2.0, 4.0}
    assert {r["verdict"] for r in doc["rates"]} <= {"within noise", "not measured"}
    assert "within noise" in {r["verdict"] for r in doc["rates"]}


def test_compare_calls_a_slower_load_run_and_the_gate_fails(load_dir, tmp_path, capsys):
    slow = _rewrite(load_dir, tmp_path / "slow", _slower)
    code = cli.main(["compare", str(load_dir), str(slow), "--max-regression", "10"])
    out = capsys.readouterr()
    assert code == cli.EXIT_FAILED
    assert "slower" in out.out and "p50 TTFA" in out.out
    assert "failed --fail-on regression" in out.err
    # The same change the other way round is faster, and `regression` lets it pass.
    assert cli.main(["compare", str(slow), str(load_dir), "--max-regression", "10", "--format", "markdown"]) \
        == cli.EXIT_OK
    md = capsys.readouterr().out
    assert "| faster |" in md and "Gate (`--fail-on regression`, threshold 10%): passed" in md


def test_the_process_term_keeps_a_change_within_noise(load_dir, tmp_path, capsys):
    """The same fourfold move, on a machine whose processes differ by a factor of e a process: within noise."""
    def noisy(doc: dict) -> None:
        _slower(doc)
        doc["process_prior"] = {"variance": 1.0, "df": 4.0, "source": "a very noisy machine (test)"}

    slow = _rewrite(load_dir, tmp_path / "noisy", noisy)
    assert cli.main(["compare", str(load_dir), str(slow), "--fail-on", "regression", "--format", "json"]) \
        == cli.EXIT_OK
    doc = json.loads(capsys.readouterr().out)
    assert "slower" not in {r["verdict"] for r in doc["rates"]}
    assert "very noisy" in doc["new"]["process_prior"]


def test_a_request_past_the_timeout_is_slower_and_fails_the_gate(load_dir, tmp_path, capsys):
    def timed_out(doc: dict) -> None:
        summary = doc["rates"][0]["summary"]
        summary["counts"]["ok"] -= 1
        summary["counts"]["timeout"] += 1
        summary["quantiles"]["latency_s"]["p95"].update(value=None, high=None, censored=True)

    late = _rewrite(load_dir, tmp_path / "late", timed_out)
    assert cli.main(["compare", str(load_dir), str(late), "--fail-on", "regression"]) == cli.EXIT_FAILED
    err = capsys.readouterr().err
    assert "p95 latency at 2 req/s: slower (past the timeout)" in err
    assert "2 req/s: 1 request(s) did not complete (before: 0)" in err


def test_compare_refuses_a_load_run_against_a_sweep_run(load_dir, tmp_path, capsys):
    sweep_dir = tmp_path / "sweep"
    sweep_dir.mkdir()
    (sweep_dir / "run.json").write_text(json.dumps({"schema_version": 1}))
    code = cli.main(["compare", str(load_dir), str(sweep_dir)])
    assert_usage_error(code, capsys, "is a load run", "compare two load runs")


def test_history_follows_load_runs_in_time_order(load_dir, tmp_path, capsys):
    slow = _rewrite(load_dir, tmp_path / "runs" / "b-slow", _slower)
    shutil.copytree(load_dir, tmp_path / "runs" / "a-first")
    out = tmp_path / "history.json"
    assert cli.main(["history", str(tmp_path / "runs"), "--format", "json", "-o", str(out)]) == cli.EXIT_OK
    doc = json.loads(out.read_text())
    (line,) = doc["load_lines"]
    assert line["runs"] == 2 and line["description"].startswith("dia-tiny baseline on cpu")
    first, second = line["points"]
    assert first["since_before"] == "-" and Path(second["path"]) == slow.resolve()
    assert "slower" in second["since_before"]
    md = tmp_path / "history.md"
    assert cli.main(["history", str(tmp_path / "runs"), "--markdown", "-o", str(md)]) == cli.EXIT_OK
    text = md.read_text()
    assert "## Under load" in text and "## Change points" not in text  # no sweep run given
    html = tmp_path / "history.html"
    assert cli.main(["history", str(tmp_path / "runs"), "-o", str(html)]) == cli.EXIT_OK
    assert "Under load" in html.read_text()


def test_a_damaged_load_json_is_one_line_and_exit_2(load_dir, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "load.json").write_text('{"kind": "something else"}')
    assert_usage_error(cli.main(["history", str(load_dir), str(bad)]), capsys, "not a dia-bench load record",
                       "dia-bench load")
    assert_usage_error(cli.main(["recommend", str(bad)]), capsys, "not a dia-bench load record", "dia-bench load")


def test_recommend_says_what_a_machine_holds_under_load(load_dir, tmp_path, capsys):
    held = copy.deepcopy(json.loads((load_dir / "load.json").read_text()))
    out = tmp_path / "recommend.json"
    assert cli.main(["recommend", str(load_dir), "--format", "json", "-o", str(out)]) == cli.EXIT_OK
    doc = json.loads(out.read_text())
    (row,) = doc["under_load"]
    assert row["preset"] == "dia-tiny" and row["held_rps"] == held["max_rate"]["max_rps"]
    assert row["answer"].startswith("holds") and "p95 TTFA <= 30 s" in row["answer"]
    assert "codec decoded" in row["includes"] and "chunks of" in row["includes"]
    assert row["quality"] == "reference"  # the baseline is the fp32 reference itself
    md = tmp_path / "recommend.md"
    assert cli.main(["recommend", str(load_dir), "--markdown", "-o", str(md)]) == cli.EXIT_OK
    assert "## Under load" in md.read_text()
    html = tmp_path / "recommend.html"
    assert cli.main(["recommend", str(load_dir), "-o", str(html)]) == cli.EXIT_OK
    assert "Under load" in html.read_text()


def test_a_load_run_reads_back_with_its_names(load_dir):
    run = load_runs.read(load_dir / "load.json")
    assert run.machine_name and run.preset == "dia-tiny" and run.plugins == "baseline"
    assert run.process_prior.variance > 0 and run.started_at.year >= 2026
    assert set(run.summaries()) == {2.0, 4.0}


def test_a_load_runs_readme_reruns_it_and_report_draws_its_page(load_dir, tmp_path):
    import shlex

    out = tmp_path / "README.md"
    assert cli.main(["readme", str(load_dir), "--out", str(out)]) == cli.EXIT_OK
    text = out.read_text()
    run = load_runs.read(load_dir)
    assert text.startswith("<!-- Generated by `dia-bench readme` from load.json")
    assert f"Holds **{run.held if run.max_rate['max_rps'] is not None else 'none'}**" in text
    (command,) = [ln for ln in text.splitlines() if ln.startswith("dia-bench load ")]
    args = cli.build_parser().parse_args(shlex.split(command)[1:])
    c = run.configuration
    assert (args.preset, args.device, args.seconds, args.requests, args.target_ttfa, args.criterion) == \
        (c["preset"], c["device"], c["seconds"], c["requests"], c["target_ttfa_s"], c["criterion"])
    assert [float(r) for r in args.rates.split(",")] == c["rates"] and args.texts == "short"
    page = tmp_path / "page.html"
    assert cli.main(["report", str(load_dir), "-o", str(page)]) == cli.EXIT_OK
    assert "Holds" in page.read_text() or "None of the offered rates" in page.read_text()
