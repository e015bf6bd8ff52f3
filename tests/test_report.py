"""Reports from a real dia-tiny run: HTML, Markdown, recommendations, and a real browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from dia_bench.harness.analysis import results
from tests.conftest import cli, run_cli
from tests.test_sweep import TINY_SUITE, write_suite

REPO = Path(__file__).resolve().parent.parent
ARTIFACTS = REPO / "test-artifacts"
HOSTILE = '<script>document.title="pwned"</script><img src=x onerror=alert(1)>'


@pytest.fixture(scope="module")
def report_run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("report")
    out = tmp / "run"
    # int8=dynamic: a technique the guide has figures for, measured here on dia-tiny.
    # baseline_every = 1: the baseline again between cfg=0 and int8 (tf32 is skipped on cpu).
    text = TINY_SUITE.replace("fidelity = false", "fidelity = true\nbaseline_every = 1") + 'int8 = ["dynamic"]\n'
    result = cli("sweep", str(write_suite(tmp, text)), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    return out


@pytest.fixture()
def hostile_run(report_run, tmp_path) -> Path:
    """The same run with hostile text where a shared record could carry it."""
    copy = tmp_path / "hostile"
    shutil.copytree(report_run, copy)
    for p in (copy / "cells").glob("*.json"):
        rec = json.loads(p.read_text())
        rec["description"] = HOSTILE + rec["description"]
        rec["plugins"] = [HOSTILE] + rec["plugins"] if rec["status"] == "ok" else rec["plugins"]
        if rec["status"] != "ok":
            rec["reason"] = HOSTILE
        p.write_text(json.dumps(rec))
    return copy


def test_sweep_leaves_an_html_report_and_a_markdown_summary(report_run):
    html = (report_run / "report.html").read_text()
    assert "Was the guide right?" in html and "timings are real, the audio is noise" in html
    md = (report_run / "summary.md").read_text()
    assert "| cell | status | RTF [95% CI]" in md
    # The machine's read kernels beside its memory: the fp32 product an fp32 step calls among them, and the
    # best of them, the roofline's bandwidth, at 100% of itself.
    for page in (html, md):
        assert "fp32 matvec" in page and "read kernels" in page and "(100%)" in page
    # Every ok record carries the fp32 kernel's share, which the answers weigh the baseline against.
    df = results.load([report_run])
    assert df.loc[df["status"] == "ok", "fp32_matvec_share"].between(0, 1).all()


def test_a_baseline_held_by_its_fp32_kernel_is_said_beside_the_answer():
    """MKL's fp32 product for two rows read a quarter of the memory's rate on a Zen 5, and the fp32
    baseline's step a fifth: the answer's speedups are then partly against that kernel, and say so; a
    baseline near its roofline, or a fast kernel, says nothing."""
    import pandas as pd

    from dia_bench.reports.answers import baseline_kernel_note

    where = {"machine": "AMD EPYC", "device": "cpu", "preset": "dia-1.6b", "seconds": 0.25}

    def rows(fraction, share):
        return pd.DataFrame([{**where, "role": role, "status": "ok", "fraction_of_bandwidth": fraction,
                              "fp32_matvec_share": share} for role in ("baseline-start", "baseline-end")]
                            + [{**where, "role": "cell", "status": "ok", "fraction_of_bandwidth": 0.9,
                                "fp32_matvec_share": share}])
    note = baseline_kernel_note(rows(0.19, 0.24), where)
    assert "at 19% of the memory's rate" in note and "at 24% of it here" in note and "onednn" in note
    assert baseline_kernel_note(rows(0.19, 0.9), where) is None  # the kernel is fast: something else holds it
    assert baseline_kernel_note(rows(0.7, 0.24), where) is None  # near its roofline anyway
    assert baseline_kernel_note(rows(0.19, None), where) is None  # a machine measured before the kernel
    assert baseline_kernel_note(rows(0.19, 0.24), {**where, "seconds": 2.0}) is None  # no baseline of that length


def test_report_sections_charts_and_verdicts(report_run, tmp_path):
    out = tmp_path / "r.html"
    result = cli("report", str(report_run), "-o", str(out))
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    for section in ("Machines and versions", "Best configuration per device", "Was the guide right?",
                    "Hardware tables", "Published Dia numbers", "All cells", "Charts"):
        assert section in html
    for chart in ("RTF per configuration", "Speedup against baseline", "Peak memory", "Speed against fidelity",
                  "Where the time goes", "Decode step latency"):
        assert f"<strong>{chart}</strong>" in html
    # dia-tiny's speedups are measured and shown, but never set against the guide's 1.6B figures: the
    # claims it leaves unmeasured are named in one line, not a row each.
    assert "None of the guide&#39;s claims was measured here" in html and "only on dia-tiny" in html
    assert "Not measured here" in html and "INT8 dynamic quantization" in html
    assert "<td>reproduced</td>" not in html and "not applicable on cpu" not in html
    assert "does not apply to cpu" in html  # the skipped tf32 cell keeps its reason
    # Self-contained: nothing is fetched from anywhere when the page opens.
    assert "http://" not in html.replace("http://www.w3.org", "") and "https://" not in html
    assert 'src="data:image/svg+xml;base64,' in html


def test_markdown_report(report_run, tmp_path):
    out = tmp_path / "r.md"
    assert cli("report", str(report_run), "--markdown", "-o", str(out)).returncode == 0
    text = out.read_text()
    assert "baseline drift" in text and "furthest of 3 baseline measurements" in text
    assert text.count("/baseline/") == 3 and "(again, 1)" in text


def test_recommend_merges_runs(report_run, tmp_path):
    out = tmp_path / "rec.html"
    result = cli("recommend", str(report_run), str(report_run), "-o", str(out))
    assert result.returncode == 0, result.stderr
    html = out.read_text()
    # The guide's hardware tables are for the 1.6B model: a dia-tiny run is never held against them.
    assert "faster than real time" in html and "tables are for dia-1.6b, this is dia-tiny" in html
    md = tmp_path / "rec.md"
    assert cli("recommend", str(report_run), "--markdown", "-o", str(md)).returncode == 0
    assert "| machine | device |" in md.read_text()


def test_report_of_something_that_is_not_a_run_is_a_usage_error(tmp_path):
    result = run_cli("report", str(tmp_path))
    assert result.returncode == 2 and "not a dia-bench run directory" in result.stderr


def test_hostile_strings_are_escaped(hostile_run, tmp_path):
    out = tmp_path / "hostile.html"
    assert cli("report", str(hostile_run), "-o", str(out)).returncode == 0
    html = out.read_text()
    # One script, the report's own sorting, and a policy that lets that script alone run (by its hash).
    assert html.count("<script") == 1 and HOSTILE not in html
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/]+=*'\">", html)
    assert "onerror=alert" not in html.replace("onerror=alert(1)&gt;", "")
    assert "&lt;script&gt;" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def _headless(browser: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1200,3000", *args], capture_output=True, text=True, timeout=120)


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (.ci/run installs Debian's)")
def test_report_in_a_real_browser(report_run, hostile_run, tmp_path):
    browser = _chromium()
    ARTIFACTS.mkdir(exist_ok=True)
    page = tmp_path / "report.html"
    assert cli("report", str(report_run), "-o", str(page)).returncode == 0
    dom = _headless(browser, "--dump-dom", page.as_uri())
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert "Was the guide right?" in dom.stdout
    assert dom.stdout.count('src="data:image/svg+xml') >= 5
    shot = ARTIFACTS / "report.png"
    result = _headless(browser, f"--screenshot={shot}", page.as_uri())
    assert result.returncode == 0 and shot.stat().st_size > 20_000
    from PIL import Image  # matplotlib brings pillow

    image = Image.open(shot).convert("L")
    lo, hi = image.getextrema()
    assert hi - lo > 100  # not a blank page: text and charts were painted

    hostile_page = tmp_path / "hostile.html"
    assert cli("report", str(hostile_run), "-o", str(hostile_page)).returncode == 0
    hostile = _headless(browser, "--dump-dom", hostile_page.as_uri())
    assert "<title>dia-bench report</title>" in hostile.stdout  # the injected script never ran
    assert "&lt;script&gt;document.title" in hostile.stdout
    _headless(browser, f"--screenshot={ARTIFACTS / 'report-hostile.png'}", hostile_page.as_uri())


def test_real_weights_get_an_audio_player(tiny_pipeline, tmp_path):
    """Weights from directories count as real: the report then embeds what each configuration sounds like."""
    from transformers import DacModel

    from dia_bench.harness.presets import get_preset

    pipe, weights = tiny_pipeline
    model_dir, codec_dir = tmp_path / "dia", tmp_path / "dac"
    pipe.model.save_pretrained(model_dir)
    DacModel.from_pretrained(weights["codec"]["path"]).save_pretrained(codec_dir)
    assert get_preset("dia-tiny")
    text = TINY_SUITE.replace('design = "one-at-a-time"',
                              f'design = "one-at-a-time"\nweights = "{model_dir}"\ncodec_weights = "{codec_dir}"')
    out = tmp_path / "run"
    result = cli("sweep", str(write_suite(tmp_path, text.replace('tf32 = [true]', ''))), "--out", str(out),
                     "--quiet")
    assert result.returncode == 0, result.stderr
    html = (out / "report.html").read_text()
    assert "real weights from a local directory" in html
    assert html.count('<audio controls preload="none" src="data:audio/wav;base64,') == 3


def test_a_guide_expectation_without_a_value_takes_every_value_of_its_plugin():
    from dia_bench.reports.verdicts import _names

    assert _names("compile=default", ["compile"]) and _names("compile=max-autotune", ["compile"])
    assert not _names("compile=default+int8=dynamic", ["compile"])  # a stack is not compile alone
    assert _names("dtype=bf16", ["dtype=bf16", "dtype=fp16"]) and not _names("dtype=bf16", ["dtype=fp16"])
    assert not _names("compiled=x", ["compile"])


def _recommended(md: str) -> list[str]:
    rows = [ln for ln in md.splitlines() if ln.startswith("| Intel") or ln.startswith("| AMD") or
            (ln.startswith("| ") and "| cpu |" in ln)]
    return [r.split(" | ")[4] for r in rows]


def test_recommendations_hold_back_what_changes_the_sampling(report_run, tmp_path):
    """cfg=0 is exact arithmetic and changes what is sampled: it is never recommended at the default
    bar, and when it is the fastest it is listed with what it trades. A looser bar is the user's call."""
    from dia_bench.harness.analysis import quality, results

    df = results.ok_cells(results.load(report_run))
    md = tmp_path / "rec.md"
    assert cli("recommend", str(report_run), "--markdown", "-o", str(md)).returncode == 0
    text = md.read_text()
    assert f"total variation distance of {quality.DEFAULT_MAX_TOTAL_VARIATION:g}" in text
    recommended = _recommended(text)
    assert recommended and "cfg=0" not in recommended
    speedup = {r["plugins"]: (1.0 if r["plugins"] == "baseline" else r["speedup"]) for _, r in df.iterrows()}
    if speedup["cfg=0"] > speedup[recommended[0]]:
        assert "cfg=0:" in text and "it changes what is sampled" in text
    loose = tmp_path / "loose.md"
    assert cli("recommend", str(report_run), "--markdown", "--max-tv", "1", "-o", str(loose)).returncode == 0
    # Without a bar, the fastest cell; but only if it beat the baseline beyond noise.
    fastest = df.sort_values("rtf").iloc[0]
    expected = fastest["plugins"] if fastest["significant"] is True or fastest["plugins"] == "baseline" else "baseline"
    assert _recommended(loose.read_text())[0] == expected
    if expected == "baseline" and fastest["plugins"] != "baseline":
        assert "no plugin beat the baseline beyond noise" in loose.read_text()
    html = (report_run / "report.html").read_text()
    assert "Quality bar" in html and "codec on the same codes" in html and "identical audio" not in html


def test_quality_bar_must_be_a_distance(report_run):
    result = run_cli("recommend", str(report_run), "--max-tv", "5")
    assert result.returncode == 2 and "total variation distance" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_verdicts_do_not_crown_the_noisiest_candidate():
    import pandas as pd

    from dia_bench.reports.verdicts import _verdict, pick

    cells = pd.DataFrame([
        {"description": "tight", "plugins": "compile=default", "batch": 1, "seconds": 5.0, "repeats_seconds": [1] * 5,
         "speedup": 1.2, "speedup_low": 1.15, "speedup_high": 1.25},
        {"description": "noisy", "plugins": "compile=max-autotune", "batch": 1, "seconds": 5.0,
         "repeats_seconds": [1] * 3, "speedup": 1.9, "speedup_low": 0.9, "speedup_high": 3.5},
        {"description": "short", "plugins": "compile=default", "batch": 1, "seconds": 0.5, "repeats_seconds": [1] * 9,
         "speedup": 1.6, "speedup_low": 1.55, "speedup_high": 1.65},
    ])
    assert pick(cells)["description"] == "tight"  # longest audio, default value, most repeats: not the fastest
    assert _verdict(0.9, 3.5, 1.5, 2.0).startswith("inconclusive")  # touching the range proves nothing
    assert _verdict(1.55, 1.9, 1.5, 2.0) == "reproduced"
    assert _verdict(1.15, 1.25, 1.5, 2.0) == "below"
    assert _verdict(None, None, 1.5, 2.0) == "too few repeats for a verdict"


def _as_stack(run: Path, dest: Path, stack: str, torch_version: str, time_scale: float) -> Path:
    """A copy of a real run as if measured under another software stack, `time_scale` times as long."""
    shutil.copytree(run, dest)
    meta = json.loads((dest / "run.json").read_text())
    meta["machine"]["software"].update(stack=stack, torch=torch_version)
    (dest / "run.json").write_text(json.dumps(meta))
    for p in (dest / "cells").glob("*.json"):
        rec = json.loads(p.read_text())
        if "software" in (rec.get("env") or {}):
            rec["env"]["software"].update(stack=stack, torch=torch_version)
        rec["repeats_seconds"] = [t * time_scale for t in rec.get("repeats_seconds") or []]
        p.write_text(json.dumps(rec))
    return dest


def test_runs_under_several_stacks_render_as_one_table(report_run, tmp_path):
    old = _as_stack(report_run, tmp_path / "a", "torch-2.13", "2.13.0+cpu", 1.0)
    new = _as_stack(report_run, tmp_path / "b", "torch-2.8-" + HOSTILE, "2.8.0+cu128", 0.5)
    md = tmp_path / "stacks.md"
    assert cli("report", "--markdown", str(old), str(new), "-o", str(md)).returncode == 0
    text = md.read_text()
    section = text[text.index("## Across software stacks"):]
    header = next(ln for ln in section.splitlines() if ln.startswith("| cell |"))
    assert header.startswith("| cell | torch-2.13 | torch-2.8-")
    rows = [ln for ln in section.splitlines() if ln.startswith("| ") and not ln.startswith("| cell")]
    ok = [ln for ln in rows if "own baseline" in ln]
    assert ok, section
    # Every measured cell runs twice as fast under the second stack, against its own first-stack repeats.
    for line in ok:
        ref, other = line.split(" | ")[1:3]
        assert "vs torch-2.13 reference" in ref
        assert "vs torch-2.13 2.00x [" in other, line
    assert "- differs: torch-2.13 -> torch-2.8-" in section and "torch: 2.13.0+cpu -> 2.8.0+cu128" in section
    # Skipped cells keep their reason in each column.
    assert any("skipped:" in ln for ln in rows)
    html = tmp_path / "stacks.html"
    assert cli("report", str(old), str(new), "-o", str(html)).returncode == 0
    page = html.read_text()
    assert "Across software stacks" in page and HOSTILE not in page
    # One run alone is no stack comparison.
    one = tmp_path / "one.md"
    assert cli("report", "--markdown", str(old), "-o", str(one)).returncode == 0
    assert "Across software stacks" not in one.read_text()


def test_a_repeat_far_slower_than_the_others_is_flagged(report_run, tmp_path):
    copy = tmp_path / "disturbed"
    shutil.copytree(report_run, copy)
    for p in (copy / "cells").glob("*.json"):
        rec = json.loads(p.read_text())
        if rec.get("role") == "baseline-start":
            rec["repeats_seconds"][-1] *= 4
            p.write_text(json.dumps(rec))
    md = tmp_path / "d.md"
    assert cli("report", "--markdown", str(copy), "-o", str(md)).returncode == 0
    flagged = [ln for ln in md.read_text().splitlines() if "repeats disagree" in ln]
    assert any("baseline" in ln and "(end)" not in ln and "slowest took" in ln for ln in flagged), flagged


def test_the_roofline_column_marks_unsteady_and_impossible_fractions():
    from dia_bench.reports import figures

    assert figures.roofline({"fraction_of_bandwidth": 0.57, "bandwidth_unsteady": False}) == "57%"
    assert figures.roofline({"fraction_of_bandwidth": 0.64, "bandwidth_unsteady": True}) == "64% ?"
    # Faster than the measured bandwidth: the figure is wrong, and the cell says so instead of boasting.
    assert figures.roofline({"fraction_of_bandwidth": 1.09, "roofline_problem": True}) == "109% !"
    assert figures.roofline({"weights_fraction_of_bandwidth": 0.7}) == "70% (weights only)"


def _answer_row(plugins: str, repeats: list[float], **extra) -> dict:
    import math

    return {"plugins": plugins, "repeats_seconds": repeats, "audio_seconds": 1.0, "status": "ok", "run": "r",
            "role": "baseline-start" if plugins == "baseline" else "cell", "seconds": 1.0, "batch": 1,
            "rtf": math.exp(sum(map(math.log, repeats)) / len(repeats)), "significant": True,
            "total_variation": None if plugins == "baseline" else 0.01, "fidelity_error": None, **extra}


def test_a_winner_is_declared_only_where_it_beats_the_runner_up():
    """Two plugins stacked whose point estimate is lower but within noise of one plugin alone: the simpler
    configuration is recommended, and the note says which faster ones it is tied with."""
    import pandas as pd

    from dia_bench.reports.verdicts import best_eligible, tie_note

    base = _answer_row("baseline", [2.0, 2.02, 1.98])
    one = _answer_row("dtype=bf16", [1.00, 1.04, 0.97])
    two = _answer_row("dtype=bf16+engine=static", [0.99, 1.03, 0.96])
    group = pd.DataFrame([base, one, two])
    chosen = best_eligible(group, 0.05)
    assert chosen["plugins"] == "dtype=bf16"
    assert "tied with dtype=bf16+engine=static" in tie_note(group, chosen, 0.05)
    # Beyond noise, the faster one wins and nothing is tied with it.
    group = pd.DataFrame([base, one, _answer_row("dtype=bf16+engine=static", [0.50, 0.51, 0.49])])
    chosen = best_eligible(group, 0.05)
    assert chosen["plugins"] == "dtype=bf16+engine=static" and tie_note(group, chosen, 0.05) is None


def test_a_cell_that_beat_its_drifting_baseline_is_recommended_as_its_row_says():
    """The table's speedup compares a cell with the baseline measured around it in time; the
    recommendation uses that same comparison, not the raw one against the first baseline alone, so
    a cell the table calls significantly faster is not passed over for the baseline."""
    import pandas as pd

    from dia_bench.reports.verdicts import beats, best_eligible, not_beaten_note

    base = _answer_row("baseline", [2.0, 1.0, 3.0])
    cell = _answer_row("dtype=bf16", [1.5, 1.5, 1.5], speedup=1.3)
    group = pd.DataFrame([base, cell])
    assert beats(group.iloc[1], group.iloc[0]) and not beats(group.iloc[0], group.iloc[1])
    assert best_eligible(group, 0.05)["plugins"] == "dtype=bf16"
    # The same repeats, judged not faster beyond noise by the row: the baseline, and the note says why.
    group = pd.DataFrame([base, {**cell, "significant": False, "speedup_low": 0.9, "speedup_high": 1.8}])
    chosen = best_eligible(group, 0.05)
    assert chosen["plugins"] == "baseline"
    assert "no plugin beat the baseline beyond noise" in not_beaten_note(group, chosen, 0.05)


FIRST_SCREEN = """<!DOCTYPE html><html><body>
<iframe id="f" src="report.html" SANDBOX style="width:1366px;height:768px;border:0"></iframe>
<pre id="out">not loaded</pre>
<script>
document.getElementById('f').onload = function () {
  var d = document.getElementById('f').contentDocument;
  var configs = Array.from(d.querySelectorAll('.answers code.config'));
  var charts = Array.from(d.querySelectorAll('figure img'));
  var cells = d.getElementById('cells');
  var heads = Array.from(cells.tHead.rows[0].cells);
  var xrt = heads.findIndex(function (h) { return h.textContent.trim() === 'x real time'; });
  function rows() {
    return Array.from(cells.tBodies[0].rows).map(function (r) {
      return [r.cells[0].textContent, r.cells[1].textContent.trim(), r.cells[xrt].textContent.trim()]; });
  }
  var found = {
    scrollWidth: d.documentElement.scrollWidth, clientWidth: d.documentElement.clientWidth,
    configs: configs.map(function (c) { return [c.textContent, c.getBoundingClientRect().bottom]; }),
    tables: d.querySelectorAll('table').length, sortable: d.querySelectorAll('table.sortable').length,
    buttons: d.querySelectorAll('th button').length,
    charts: charts.filter(function (i) { return i.src.indexOf('data:image/svg+xml') === 0; }).length,
    drawn: charts.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length,
    rows: rows(), clicked: []};
  var button = heads[xrt].querySelector('button');
  if (button) {
    button.click(); found.clicked.push(rows());
    button.click(); found.clicked.push(rows());
  }
  document.getElementById('out').textContent = JSON.stringify(found);
};
</script></body></html>"""


def _first_screen(browser: str, folder: Path, scripts: bool) -> dict:
    """What a page beside the report (folder/report.html) measures in it at 1366x768. Without scripts the
    report's frame is sandboxed without allow-scripts, which runs no script in that frame (its sorting
    included) while the page beside it, of the same origin, can still read its layout. Chromium's own
    switch (--blink-settings=scriptEnabled=false) cannot serve: headless Chromium reads a page for
    --dump-dom and --screenshot by script, and with it prints nothing."""
    sandbox = "" if scripts else 'sandbox="allow-same-origin"'
    (folder / "measure.html").write_text(FIRST_SCREEN.replace("SANDBOX", sandbox))
    # Chromium lets file pages read each other with the first flag.
    dom = _headless(browser, "--allow-file-access-from-files", "--virtual-time-budget=5000", "--dump-dom",
                    (folder / "measure.html").as_uri())
    return json.loads(re.search(r'<pre id="out">([^<]*)</pre>', dom.stdout).group(1))


def _xrt(text: str) -> float:
    return float(text.rstrip("x"))


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (.ci/run installs Debian's)")
@pytest.mark.parametrize("scripts", [True, False], ids=["scripts", "no-scripts"])
def test_the_first_screen_answers_and_nothing_scrolls_sideways(tmp_path, scripts):
    """At 1366x768, over the committed H200 and Zen 4 runs, with scripts and without: each device's
    recommended configuration is on the first screen, every table and chart is there, the page is no
    wider than the window, and the cells read by device, the fastest first. Sorting by a column is the
    script's, there only where scripts run."""
    from dia_bench.harness.analysis import results
    from dia_bench.reports import recommend

    runs = [REPO / "reference-results" / "2026-11-27-h200-gpu-engine",
            REPO / "reference-results" / "2026-11-28-zen4-engine-cpu"]
    page = tmp_path / "report.html"
    assert cli("report", *map(str, runs), "-o", str(page)).returncode == 0
    found = _first_screen(_chromium(), tmp_path, scripts)
    assert found["scrollWidth"] <= found["clientWidth"] == 1366, found
    expected = {r["settings"] for r in recommend.recommendations(results.load(runs))}
    first_screen = {text for text, bottom in found["configs"] if bottom <= 768}
    assert expected <= first_screen, found
    assert found["tables"] >= 6 and found["sortable"] >= 5, found
    assert found["charts"] >= 6 and found["drawn"] == found["charts"], found
    # By device (the description's second part), then the fastest first among the measured cells.
    ok = [(cell.split("/")[1], _xrt(xrt)) for cell, status, xrt in found["rows"] if status == "ok"]
    assert [d for d, _ in ok] == sorted(d for d, _ in ok) and {d for d, _ in ok} == {"cpu", "cuda"}
    for device in ("cpu", "cuda"):
        speeds = [x for d, x in ok if d == device]
        assert speeds == sorted(speeds, reverse=True)
    if scripts:
        assert found["buttons"] > 0
        ascending, descending = ([_xrt(x) for _, status, x in rows if status == "ok"] for rows in found["clicked"])
        assert ascending == sorted(ascending) and descending == sorted(ascending, reverse=True)
    else:
        assert found["buttons"] == 0 and found["clicked"] == []


WIDTH = """<!DOCTYPE html><html><body>
<iframe id="f" src="recommend.html" style="width:1366px;height:768px;border:0"></iframe>
<pre id="out">not loaded</pre>
<script>
document.getElementById('f').onload = function () {
  var d = document.getElementById('f').contentDocument;
  document.getElementById('out').textContent = JSON.stringify({
    scrollWidth: d.documentElement.scrollWidth, clientWidth: d.documentElement.clientWidth,
    sortable: d.querySelectorAll('table.sortable').length, buttons: d.querySelectorAll('th button').length});
};
</script></body></html>"""


@pytest.mark.skipif(_chromium() is None, reason="no chromium on this machine (.ci/run installs Debian's)")
def test_the_recommend_page_of_every_committed_run_fits_the_window_and_sorts(tmp_path):
    runs = sorted((REPO / "reference-results").glob("20*"))
    assert cli("recommend", *map(str, runs), "-o", str(tmp_path / "recommend.html")).returncode == 0
    (tmp_path / "measure.html").write_text(WIDTH)
    dom = _headless(_chromium(), "--allow-file-access-from-files", "--virtual-time-budget=5000", "--dump-dom",
                    (tmp_path / "measure.html").as_uri())
    found = json.loads(re.search(r'<pre id="out">([^<]*)</pre>', dom.stdout).group(1))
    assert found["scrollWidth"] <= found["clientWidth"] == 1366, found
    assert found["sortable"] >= 1 and found["buttons"] >= 17, found


FORTY_CELLS_MAX_BYTES = 2_000_000


def _forty_cell_run(tmp_path: Path) -> Path:
    """The committed Zen 4 engine run (21 records, all measured) made a 40-cell run: no committed run has
    40 cells. The missing ones are its configurations again under one more plugin each (`threads`, then
    `hugepages`), as a sweep with one more plugin axis would have: each copy keeps its record's timings,
    so every chart draws real spreads, and only their number and their names grow the page."""
    import copy
    import hashlib

    run = tmp_path / "forty"
    shutil.copytree(REPO / "reference-results" / "2026-11-28-zen4-engine-cpu", run)
    records = [json.loads(p.read_text()) for p in sorted((run / "cells").glob("*.json"))]
    cells = [r for r in records if r.get("role", "cell") == "cell"]
    for i in range(40 - len(records)):
        rec = copy.deepcopy(cells[i % len(cells)])
        extra = ("threads", "hugepages")[i // len(cells)]
        rec["plugins"] = [*rec["plugins"], extra]
        parts = rec["description"].split("/")
        parts[2] += f"+{extra}"
        rec["description"] = "/".join(parts)
        key = hashlib.sha256(f"{rec['key']}+{extra}".encode()).hexdigest()[:16]
        rec["key"] = rec["cell_id"] = rec["cell"]["cell_id"] = key
        rec["cell"]["plugins"] = rec["plugins"]
        (run / "cells" / f"{key}.json").write_text(json.dumps(rec))
    return run


def test_a_report_of_40_cells_stays_under_2_mb(tmp_path):
    """One file with every chart inside it, and it grows with the cells: a 40-cell run's page must still
    open quickly and attach to an issue."""
    from dia_bench.harness import rundir
    from dia_bench.reports import html

    run = _forty_cell_run(tmp_path)
    assert len(rundir.records(run)) == 40
    page = html.write([run], tmp_path / "report.html")
    size = page.stat().st_size
    assert size < FORTY_CELLS_MAX_BYTES, f"{size} bytes"
    text = page.read_text()
    # Every cell in the table, and every chart the run can have: RTF, speedup, memory, stages, step latency
    # and the guide's picture (it measured no fidelity and one length and batch, so not the other two).
    table = re.search(r'<table class="sortable" id="cells">.*?</table>', text, re.S).group(0)
    assert table.count("<tr>") == 1 + 40
    assert text.count('src="data:image/svg+xml;base64,') == 6


def test_the_table_closing_a_sweep_reads_fastest_first_like_the_report():
    """The terminal table lists the cells as the report does: the fastest first (one device, one model
    here), whatever order they ran in."""
    from rich.console import Console

    from dia_bench.reports.summary import print_sweep

    console = Console(record=True, width=400)
    print_sweep(REPO / "reference-results" / "2026-11-28-zen4-engine-cpu", console)
    rows = [ln.split("│") for ln in console.export_text().splitlines() if ln.startswith("│") and "│ ok " in ln]
    speeds = [float(cells[5].strip().rstrip("x")) for cells in rows]
    assert len(speeds) >= 5 and speeds == sorted(speeds, reverse=True), speeds


def test_a_first_screen_that_recommends_the_baseline_says_what_is_faster_and_why():
    """The default cpu suite on synthetic dia-1.6b, whose reference noise far below bf16's rounding moves
    past the bar: no precision change can be judged, so the answer is the baseline, and the first screen
    names the fastest unverified configuration and the fastest the bar held back (cfg=0, which changes
    what is sampled by design), each with why."""
    from dia_bench.harness.analysis import results
    from dia_bench.reports import answers

    df = results.load([REPO / "reference-results" / "2026-12-03-epyc-cpu"])
    [answer] = answers.devices(df, 0.05)
    assert answer["settings"] == "baseline", answer
    assert "engine=static" in answer["unverified"] and "synthetic weights" in answer["unverified"], answer
    assert answer["held_back"].startswith("cfg=0: ") and "changes what is sampled" in answer["held_back"], answer
    lines = answers.markdown(df, 0.05)
    assert any("fastest held back by the quality bar: cfg=0" in line for line in lines), lines
    assert any("fastest, quality not verified: " in line and "engine=static" in line for line in lines), lines
