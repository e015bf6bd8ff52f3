"""`dia-bench load` and `dia-bench serve` on dia-tiny: a load run accounts for every request in a strict-JSON
load.json, bad input is one line and exit 2 before anything loads, and `serve` needs the `serve` extra (its
loopback test skips without it). Request counts are small and nothing asserts on a measured time."""

from __future__ import annotations

import json
import os
import select
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dia_bench.harness import cli, serving
from dia_bench.harness.serving.records import STATUSES

TINY = ["--preset", "dia-tiny", "--device", "cpu", "--seconds", "0.25", "--timeout", "120"]


def _strict(path: Path) -> dict:
    def refuse(token: str) -> None:
        raise AssertionError(f"{path} holds {token}, which is not JSON")

    return json.loads(path.read_text(), parse_constant=refuse)


def _check_complete(doc: dict, rates: list[float], requests: int) -> None:
    assert [r["offered_rps"] for r in doc["rates"]] == rates
    for run in doc["rates"]:
        records = run["records"]
        assert [r["index"] for r in records] == list(range(requests))
        assert all(r["status"] in STATUSES for r in records)
        summary = run["summary"]
        assert summary["requests"] == requests
        assert sum(summary["counts"].values()) == requests
        assert {"ttfa_s", "latency_s"} <= set(summary["quantiles"])
        p95 = summary["quantiles"]["ttfa_s"]["p95"]
        assert {"value", "low", "high", "confidence", "censored"} <= set(p95)
    max_rate = doc["max_rate"]
    assert "max_rps" in max_rate and max_rate["method"].startswith("stepped rates")
    assert len(max_rate["steps"]) >= 1
    assert doc["machine"]["cpu"]
    assert doc["includes"]["codec"] is True


def test_load_on_dia_tiny_writes_a_complete_load_json(tmp_path, capsys):
    code = cli.main(["load", *TINY, "--rates", "1,0.5", "--requests", "3", "--texts", "short,medium",
                     "--seed", "3", "--target-ttfa", "30", "--criterion", "estimate", "--batch", "2",
                     "--max-wait-ms", "5", "--chunk-frames", "8", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert code == cli.EXIT_OK
    doc = _strict(tmp_path / "load.json")
    _check_complete(doc, [0.5, 1.0], 3)
    config, includes = doc["configuration"], doc["includes"]
    assert config["preset"] == "dia-tiny" and config["target"] == "engine"
    assert set(config["texts"]) == {"short", "medium"}
    assert (config["max_batch"], config["max_wait_s"], config["chunk_frames"]) == (2, 0.005, 8)
    assert includes["chunk_frames"] == 8 and "up to 2 request(s)" in includes["batch_policy"]
    assert doc["max_rate"]["criterion"] == "estimate"
    assert "p95 TTFA" in out and "max rate:" in out and "method:" in out
    # The page beside it: the answer in a sentence, the chart against the rate, a row per rate.
    page = (tmp_path / "load.html").read_text()
    answer = ("None of the offered rates met" if doc["max_rate"]["max_rps"] is None
              else f"Holds {doc['max_rate']['max_rps']:g} requests/s at p95 time to first audio &lt;= 30 s")
    assert answer in page and page.count("data:image/svg+xml") == 1, page[:2000]
    assert page.count('<tr><td class="n">0.5</td>') == 1 and page.count('<tr><td class="n">1</td>') == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


BAD = {
    "a rate of zero": (["--rates", "0,1", "--requests", "2"], "--rates"),
    "a negative rate": (["--rates=-1", "--requests", "2"], "--rates"),
    "a rate that is no number": (["--rates", "1,fast", "--requests", "2"], "--rates"),
    "no texts": (["--rates", "1", "--requests", "2", "--texts", ","], "--texts"),
    "an unknown text": (["--rates", "1", "--requests", "2", "--texts", "short,epic"], "epic"),
    "a count and a duration": (["--rates", "1", "--requests", "2", "--duration", "3"], "--requests"),
    "neither count nor duration": (["--rates", "1"], "--requests"),
    "an unreachable url": (["--rates", "1", "--requests", "2", "--url",
                            f"http://127.0.0.1:{_closed_port()}/v1/speech"], "--url"),
    "plugins for a remote server": (["--rates", "1", "--requests", "2", "--opt", "threads=auto", "--url",
                                     "http://127.0.0.1:9/v1/speech"], "--opt"),
}


@pytest.mark.parametrize("argv,names", BAD.values(), ids=BAD.keys())
def test_bad_load_input_is_one_line_and_exit_2(argv, names, tmp_path, capsys):
    assert cli.main(["load", *argv, "--out", str(tmp_path / "out")]) == cli.EXIT_USAGE
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dia-bench: error:"), captured.err
    assert names in lines[0] and "Traceback" not in captured.err
    assert not (tmp_path / "out" / "load.json").exists()


@pytest.mark.parametrize("argv", [["serve", "--preset", "dia-tiny", "--port", "0"],
                                  ["load", "--rates", "1", "--requests", "1", "--url", "http://127.0.0.1:9/v1/speech"]],
                         ids=["serve", "load --url"])
def test_without_the_serve_extra_the_http_commands_name_the_install(argv, tmp_path, monkeypatch, capsys):
    # A None entry makes the import fail as if the package were not installed.
    monkeypatch.setitem(sys.modules, "starlette", None)
    monkeypatch.delitem(sys.modules, "dia_bench.harness.serving.web", raising=False)
    monkeypatch.delattr(serving, "web", raising=False)  # else `from ... import web` finds it without importing
    out = ["--out", str(tmp_path)] if argv[0] == "load" else []
    assert cli.main([*argv, *out]) == cli.EXIT_USAGE
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'dia-bench[serve]'" in err[0]


def _read_url(proc: subprocess.Popen, deadline: float) -> str:
    while time.monotonic() < deadline:
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            line = proc.stdout.readline()
            if not line:
                break
            if " at http://" in line:
                return line.split(" at ", 1)[1].split(";", 1)[0].strip()
    proc.kill()
    raise AssertionError(f"dia-bench serve printed no URL: {proc.stderr.read()}")


def test_serve_answers_a_load_run_over_http(tmp_path, capsys):
    for name in ("starlette", "uvicorn", "httpx"):
        pytest.importorskip(name, reason="the `serve` extra is not installed (pip install -e '.[serve]')")
    proc = subprocess.Popen([sys.executable, "-m", "dia_bench.harness.cli", "serve", "--preset", "dia-tiny",
                             "--device", "cpu", "--port", "0", "--chunk-frames", "8"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        url = _read_url(proc, time.monotonic() + 300)
        code = cli.main(["load", "--url", url, "--rates", "2", "--requests", "2", "--seconds", "0.25",
                         "--timeout", "120", "--out", str(tmp_path)])
        assert code == cli.EXIT_OK, capsys.readouterr().err
        doc = _strict(tmp_path / "load.json")
        _check_complete(doc, [2.0], 2)
        assert doc["configuration"]["target"] == "http" and doc["configuration"]["url"] == url
        assert [r["status"] for r in doc["rates"][0]["records"]] == ["ok", "ok"]
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
