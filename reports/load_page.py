"""The page of a load run (`dia-bench load`'s load.json): time to first audio and latency against the
offered request rate, the throughput the machine kept up, and the highest rate that met the target;
and the same figures as the table `dia-bench load` prints."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt

from dia_bench import harness
from dia_bench.reports.charts import legend_below, svg_uri
from dia_bench.reports.figures import ms_text
from dia_bench.reports.pages import environment, inline_script

QUANTILE_COLOURS = {"p50": "#4c72b0", "p95": "#dd8452", "p99": "#c44e52"}


def _points(summaries: list[dict[str, Any]], measure: str, p: str) -> tuple[list, list, list, list]:
    """Rates, values and the interval's distances below and above; a censored quantile (past the timeout)
    and one whose interval has no upper side are left to the table, which says why."""
    x, y, below, above = [], [], [], []
    for s in summaries:
        e = s["quantiles"][measure][p]
        if e["censored"] or e["value"] is None:
            continue
        x.append(s["offered_rps"])
        y.append(e["value"])
        below.append(e["value"] - (e["low"] if e["low"] is not None else e["value"]))
        above.append((e["high"] if e["high"] is not None else e["value"]) - e["value"])
    return x, y, below, above


def latency_by_rate(doc: dict[str, Any]) -> str | None:
    """Three panels against the offered rate: TTFA and end-to-end latency quantiles (95% intervals as
    bars, the target as a line), and the audio seconds served per second."""
    summaries = sorted((r["summary"] for r in doc["rates"]), key=lambda s: s["offered_rps"])
    if not summaries:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.4))
    for ax, (measure, title) in zip(axes, (("ttfa_s", "time to first audio (s)"), ("latency_s", "latency (s)")),
                                    strict=False):
        for p, colour in QUANTILE_COLOURS.items():
            x, y, below, above = _points(summaries, measure, p)
            if x:
                ax.errorbar(x, y, yerr=[below, above], color=colour, marker="o", capsize=3, label=p)
        if measure == "ttfa_s" and doc["max_rate"].get("target_ttfa_s"):
            ax.axhline(doc["max_rate"]["target_ttfa_s"], color="#888", linestyle=":", label="target")
        ax.set_title(title)
        ax.set_xlabel("offered requests / s")
        ax.set_ylim(bottom=0)
        legend_below(ax)
    rates = [s["offered_rps"] for s in summaries]
    axes[2].plot(rates, [s["audio_throughput"] for s in summaries], marker="o", color="#55a868")
    axes[2].set_title("audio seconds served / s")
    axes[2].set_xlabel("offered requests / s")
    axes[2].set_ylim(bottom=0)
    fig.tight_layout()
    return svg_uri(fig)


def _answer(doc: dict[str, Any]) -> str:
    m = doc["max_rate"]
    bound = f"p{m['quantile'] * 100:g} time to first audio <= {m['target_ttfa_s']:g} s"
    if m["max_rps"] is None:
        return f"None of the offered rates met {bound}."
    return f"Holds {m['max_rps']:g} requests/s at {bound}."


def render(doc: dict[str, Any], source: str) -> str:
    machine = doc["machine"]
    return environment().get_template("load.html.j2").render(
        title="dia-bench load", answer=_answer(doc), method=doc["max_rate"]["method"],
        steps=[f"{s['summary']['offered_rps']:g} req/s: {'pass' if s['passed'] else 'fail'}, {s['reason']}"
               for s in doc["max_rate"]["steps"]],
        chart=latency_by_rate(doc), rows=_rows(doc), includes=doc["includes"],
        configuration={k: v for k, v in doc["configuration"].items() if k != "texts"},
        texts=doc["configuration"].get("texts") or {},
        machine=machine.get("device_name") or (machine.get("cpu") or {}).get("model") or "?",
        version=harness.__version__, source=source, sortable=inline_script("_sortable.js.j2"),
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"))


def _rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for run in sorted(doc["rates"], key=lambda r: r["summary"]["offered_rps"]):
        s = run["summary"]
        q = s["quantiles"]
        rows.append({"rate": f"{s['offered_rps']:g}", "achieved": f"{s['achieved_rps']:.3g}",
                     "ttfa": [ms_text(q["ttfa_s"][p]) for p in ("p50", "p95", "p99")],
                     "latency": [ms_text(q["latency_s"][p]) for p in ("p50", "p95", "p99")],
                     "audio": f"{s['audio_throughput']:.3g}", "counts": s["counts"]})
    return rows


def write(load_json: Path, output: Path) -> Path:
    import json

    output.write_text(render(json.loads(load_json.read_text()), str(load_json)), encoding="utf-8")
    return output


def table(doc: dict[str, Any]) -> str:
    """The readable summary: a row per rate, quantiles in ms with their 95% intervals."""
    header = ["rate/s", "p50 TTFA", "p95 TTFA", "p99 TTFA", "p50 latency", "p95 latency", "p99 latency",
              "audio s/s", "ok", "timeout", "dropped", "error"]
    rows = [header]
    for run in doc["rates"]:
        s = run["summary"]
        q = s["quantiles"]
        rows.append([f"{s['offered_rps']:g}",
                     *(ms_text(q["ttfa_s"][p]) for p in ("p50", "p95", "p99")),
                     *(ms_text(q["latency_s"][p]) for p in ("p50", "p95", "p99")),
                     f"{s['audio_throughput']:.3g}",
                     *(str(s["counts"][k]) for k in ("ok", "timeout", "dropped", "error"))])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    m = doc["max_rate"]
    answer = "none of the rates" if m["max_rps"] is None else f"{m['max_rps']:g} req/s"
    lines += ["times in ms from the send, [95% interval] (? where too few requests bound that side)",
              f"max rate: {answer} (p{m['quantile'] * 100:g} TTFA <= {m['target_ttfa_s']:g} s)",
              f"method: {m['method']}"]
    lines += [f"  {step['summary']['offered_rps']:g} req/s: {'pass' if step['passed'] else 'fail'}, "
              f"{step['reason']}" for step in m["steps"]]
    return "\n".join(lines)
