"""`dia-bench recommend`: the hardware table the guide should have had, from runs on many machines."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench import harness
from dia_bench.harness.analysis import load_runs, quality, results
from dia_bench.reports import figures
from dia_bench.reports.history import idle_ttfa_text, md_cell
from dia_bench.reports.pages import environment, inline_script
from dia_bench.reports.verdicts import best_eligible, hardware_rows, not_beaten_note, tie_note

UNVERIFIED_SHOWN = 3  # the fastest few make the point; every cell is in the report


def _speedup(r: pd.Series) -> float:
    return 1.0 if r["plugins"] == "baseline" or r["speedup"] is None or r["speedup"] != r["speedup"] \
        else float(r["speedup"])


def _faster(group: pd.DataFrame, best: pd.Series) -> pd.DataFrame:
    """Cells with a higher speedup than the recommendation (against the baseline as fast as the machine
    was then)."""
    return group[group.apply(_speedup, axis=1) > _speedup(best)] if not group.empty else group


def _unverified(group: pd.DataFrame, best: pd.Series, max_tv: float) -> list[str]:
    """Faster cells whose quality no one checked (fidelity off, or weights that cannot judge it): shown
    apart, never recommended, with the reason."""
    out = []
    faster = _faster(group[quality.unverified(group, max_tv)], best).sort_values("rtf")
    for _, r in faster.head(UNVERIFIED_SHOWN).iterrows():
        low, high = r["speedup_low"], r["speedup_high"]
        interval = f" [{low:.2f}, {high:.2f}]" if low is not None and low == low else ""
        out.append(f"{r['plugins']}: {_speedup(r):.2f}x{interval} against the baseline (the recommendation: "
                   f"{_speedup(best):.2f}x); {quality.assess(r, max_tv)['why']}")
    if len(faster) > UNVERIFIED_SHOWN:
        out.append(f"and {len(faster) - UNVERIFIED_SHOWN} more, slower than these (the report lists every cell)")
    return out


def _trades(group: pd.DataFrame, best: pd.Series, max_tv: float) -> list[str]:
    """Faster cells that failed the quality bar, each with what it would cost."""
    out = []
    held = _faster(group[quality.statuses(group, max_tv) == "fails"], best)
    for _, r in held.sort_values("rtf").iterrows():
        low, high = r["speedup_low"], r["speedup_high"]
        interval = f" [{low:.2f}, {high:.2f}]" if low is not None and low == low else ""
        out.append(f"{r['plugins']}: {_speedup(r):.2f}x{interval} against the baseline (the recommendation: "
                   f"{_speedup(best):.2f}x), but {quality.assess(r, max_tv)['why']}")
    return out


def _throughput(allowed: pd.DataFrame, max_tv: float) -> dict[str, Any] | None:
    """The other question: the most audio per second of compute at any batch size (a server's), answered
    apart from a single request's latency. None where only batch 1 was measured."""
    if set(allowed["batch"].fillna(1).astype(int)) <= {1}:
        return None
    best = best_eligible(allowed, max_tv)
    if best is None:
        return None
    return {"settings": best["plugins"], "batch": int(best["batch"]), "rtf": best["rtf"],
            "rtf_low": best["rtf_ci_low"], "rtf_high": best["rtf_ci_high"], "xrt": best["xrt"],
            "note": tie_note(allowed, best, max_tv)}


def recommendations(df: pd.DataFrame, max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> list[dict[str, Any]]:
    """Per machine, device, model and audio length: the fastest configuration that clears the quality
    bar, what it allows, and the faster ones that trade quality for speed."""
    ok = results.ok_cells(df)
    guide = {(h["machine"], h["device"], h["preset"]): h for h in hardware_rows(df, max_tv)}
    rows = []
    # One row a machine: a node of a cluster counts as one (results' `machine`); the guide knows CPU models.
    for (machine, device_name, device, preset, seconds), g in ok.groupby(["machine", "device_name", "device", "preset",
                                                                          "seconds"]):
        allowed = g[quality.eligible(g, max_tv)]
        if allowed.empty:
            continue
        single = allowed[allowed["batch"] == 1]
        pool = single if not single.empty else allowed
        best = best_eligible(pool, max_tv)
        # A stream keeps up when a request's audio takes less compute than its own length.
        per_request = allowed.assign(stream_rtf=allowed["generation_seconds"] / allowed["seconds"])
        keeping_up = per_request[per_request["stream_rtf"] < 1]
        largest = int(keeping_up["batch"].max()) if not keeping_up.empty else None
        h = guide.get((device_name, str(device).split(":")[0], preset), {})
        assessed = quality.assess(best, max_tv)
        rows.append({
            "machine": machine, "device": device, "preset": preset, "seconds": seconds,
            "settings": best["plugins"], "rtf": best["rtf"], "rtf_low": best["rtf_ci_low"],
            "rtf_high": best["rtf_ci_high"], "xrt": best["xrt"], "faster_than_real_time": bool(best["rtf"] < 1),
            "long_form_rtf": best["long_form_rtf"], "long_form_low": best["long_form_rtf_low"],
            "long_form_high": best["long_form_rtf_high"], "fixed_seconds": best["fixed_seconds"],
            "largest_real_time_batch": largest, "batches_measured": sorted(int(b) for b in g["batch"].unique()),
            "peak_rss_mb": best["peak_rss_mb"], "peak_vram_mb": best["peak_vram_mb"],
            "quality": assessed["status"], "quality_why": assessed["why"],
            "note": not_beaten_note(pool, best, max_tv) or tie_note(pool, best, max_tv),
            "throughput": _throughput(allowed, max_tv),
            "trades": _trades(g, best, max_tv),
            "unverified": _unverified(g, best, max_tv),
            "guide": h.get("guide"), "guide_range": h.get("guide_range"),
            "verdict": h.get("verdict", "not comparable: other hardware"),
            "weights": best["weights_source"],
        })
    return rows


def _plugin_set(plugins: str, device: str) -> frozenset[str]:
    """A configuration's plugins as the registry orders and spells them, so that `compile` and
    `compile=default` are one plugin; as written where the registry cannot resolve them."""
    from dia_bench.optimizations.registry import resolve

    specs = [] if plugins == "baseline" else plugins.split("+")
    try:
        return frozenset(resolve(specs, device).specs)
    except Exception:  # a plugin this version does not know: compare the names as recorded
        return frozenset(specs)


def _judged(run: load_runs.LoadRun, df: pd.DataFrame, max_tv: float) -> dict[str, str]:
    """The quality of a load run's configuration, from a sweep cell of the same plugins, model and machine
    among the runs given; a load run measures none itself."""
    if run.plugins == "baseline" and run.configuration.get("target") != "http":
        return {"status": "reference", "why": "the unoptimized fp32 reference itself"}
    if run.configuration.get("target") == "http":
        return {"status": "unjudged", "why": "a server's own configuration: judge it with a sweep of its settings"}
    if not df.empty:
        ok = results.ok_cells(df)
        device = str(run.device).split(":")[0]
        wanted = _plugin_set(run.plugins, device)
        same = ok[(ok["device_name"] == run.machine_name) & (ok["preset"] == run.preset)
                  & (ok["device"].astype(str).str.split(":").str[0] == device)]
        same = same[[_plugin_set(p, device) == wanted for p in same["plugins"]]]
        if not same.empty:
            assessed = quality.assess(same.iloc[0], max_tv)
            return {"status": assessed["status"], "why": f"{assessed['why']} (sweep {Path(same.iloc[0]['run']).name})"}
    return {"status": "unjudged", "why": "not judged: a load run measures no quality; give a sweep run of these "
                                         "plugins, with fidelity, beside it"}


def _held_key(run: load_runs.LoadRun) -> tuple[float, float]:
    idle = load_runs.idle_ttfa(run) or {}
    value = idle.get("value")
    return (-(run.max_rate.get("max_rps") or 0.0), value if value is not None else float("inf"))


def serving(load_dirs: Iterable[Path], df: pd.DataFrame,
            max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> list[dict[str, Any]]:
    """Per machine and model, each load run's answer to "how many requests a second does it hold at the
    target": the highest first, with what the figure includes and whether its quality was judged."""
    rows = []
    for run in sorted((load_runs.read(Path(d)) for d in load_dirs),
                      key=lambda r: (r.machine_name, str(r.preset), _held_key(r))):
        idle = load_runs.idle_ttfa(run)
        judged = _judged(run, df, max_tv)
        rows.append({
            "machine": run.machine_name if run.configuration.get("target") != "http"
            else f"{run.configuration.get('url')} (from {run.machine_name})",
            "device": run.device, "preset": run.preset or "-", "settings": run.plugins
            if run.configuration.get("target") != "http" else "the server's own",
            "held_rps": run.max_rate.get("max_rps"), "target": run.target_text,
            "answer": f"holds {run.held} at {run.target_text}" if run.max_rate.get("max_rps") is not None
            else f"holds none of the rates tried ({', '.join(f'{r:g}' for r in sorted(run.summaries()))} req/s) "
                 f"at {run.target_text}",
            "idle_ttfa": None if idle is None else {k: idle.get(k) for k in ("rate", "value", "low", "high",
                                                                            "censored")},
            "idle_ttfa_text": idle_ttfa_text(run),
            "texts": run.texts, "seconds": run.configuration.get("seconds"), "includes": run.includes,
            "quality": judged["status"], "quality_why": judged["why"], "weights": run.weights or "-",
            "run": str(run.path)})
    return rows


def _display(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        out.append({**r, "rtf_text": figures.interval(r["rtf"], r["rtf_low"], r["rtf_high"]),
                    "long_form_text": figures.interval(r["long_form_rtf"], r["long_form_low"], r["long_form_high"]),
                    "fixed_text": figures.number(r["fixed_seconds"], ".2f", " s"),
                    "xrt_text": figures.number(r["xrt"], ".2f", "x"), "rss": figures.number(r["peak_rss_mb"], ".0f"),
                    "vram": figures.number(r["peak_vram_mb"], ".0f"),
                    "largest": "none" if r["largest_real_time_batch"] is None else str(r["largest_real_time_batch"]),
                    "batches": ", ".join(map(str, r["batches_measured"])),
                    "throughput": r["throughput"] and {
                        **r["throughput"],
                        "rtf_text": figures.interval(r["throughput"]["rtf"], r["throughput"]["rtf_low"],
                                                     r["throughput"]["rtf_high"]),
                        "xrt_text": figures.number(r["throughput"]["xrt"], ".2f", "x")}})
    return out


def render(run_dirs: Iterable[Path], max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION,
           load_dirs: Iterable[Path] = ()) -> str:
    run_dirs, load_dirs = list(run_dirs), list(load_dirs)
    df = results.load([Path(d) for d in run_dirs])
    rows = _display(recommendations(df, max_tv)) if not df.empty else []
    return environment().get_template("recommend.html.j2").render(
        title="dia-bench hardware recommendations", rows=rows, version=harness.__version__, max_tv=max_tv,
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        runs=[str(d) for d in run_dirs + load_dirs], sortable=inline_script("_sortable.js.j2"),
        serving=serving(load_dirs, df, max_tv), has_runs=bool(run_dirs))


def _serving_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = ["", "## Under load", "",
             "How many requests a second each machine held at the load run's time-to-first-audio target "
             "(`dia-bench load`: open-loop Poisson arrivals, each rate in turn), highest first per machine.", "",
             "| machine | device | model | settings | held | p50 TTFA, quiet [95% CI] | texts | audio s | includes | "
             "quality | weights |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append("| " + " | ".join(md_cell(v) for v in (
            r["machine"], r["device"], r["preset"], r["settings"], r["answer"], r["idle_ttfa_text"], r["texts"],
            figures.number(r["seconds"], "g"), r["includes"], r["quality_why"], r["weights"])) + " |")
    return lines


def render_markdown(run_dirs: Iterable[Path], max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION,
                    load_dirs: Iterable[Path] = ()) -> str:
    run_dirs = list(run_dirs)
    df = results.load([Path(d) for d in run_dirs])
    served = serving(load_dirs, df, max_tv)
    if not run_dirs:
        return "\n".join(["# dia-bench hardware recommendations", *_serving_markdown(served)]) + "\n"
    rows = _display(recommendations(df, max_tv)) if not df.empty else []
    lines = ["# dia-bench hardware recommendations", "",
             f"Recommended, for one request at a time: the fastest configuration whose sampled distributions stay "
             f"within a mean total variation distance of {max_tv:g} from the fp32 reference (`--max-tv`), where "
             "it beats the runner-up beyond noise; else the simplest of those tied. RTF = compute / audio. "
             "Long-form RTF: the cost per second of audio at the measured request's mean decode step (longer "
             "audio costs more: each step's attention reads a longer cache); fixed: "
             "the cost of a request beyond that.", "",
             "| machine | device | model | audio s | recommended settings | quality | RTF [95% CI] | long-form RTF "
             "[95% CI] | fixed s | x real time | largest real-time batch | peak RSS MB | peak VRAM MB | guide | "
             "verdict |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['machine']} | {r['device']} | {r['preset']} | {r['seconds']:g} | {r['settings']} | "
                     f"{r['quality_why']} | {r['rtf_text']} | {r['long_form_text']} | {r['fixed_text']} | "
                     f"{r['xrt_text']} | {r['largest']} (of {r['batches']}) | {r['rss']} | {r['vram']} | "
                     f"{r['guide_range'] or '-'} | {r['verdict']} |")
    served = [r for r in rows if r["throughput"]]
    if served:
        lines += ["", "Throughput, a separate question: the most audio per second of compute at any batch size "
                  "measured (aggregate RTF over the batch's requests), for a server rather than one listener.", "",
                  "| machine | device | audio s | settings | batch | aggregate RTF [95% CI] | x real time |",
                  "|---|---|---|---|---|---|---|"]
        for r in served:
            t = r["throughput"]
            lines.append(f"| {r['machine']} | {r['device']} | {r['seconds']:g} | {t['settings']} | {t['batch']} | "
                         f"{figures.interval(t['rtf'], t['rtf_low'], t['rtf_high'])} | "
                         f"{figures.number(t['xrt'], '.2f', 'x')} |")
    notes = [r for r in rows if r["note"]]
    if notes:
        lines += [""] + [f"- {r['machine']} {r['device']} {r['seconds']:g} s: {r['note']}" for r in notes]
    unverified = [(r, t) for r in rows for t in r["unverified"]]
    if unverified:
        lines += ["", "Fastest, quality not verified (not recommended until a run judges it):", ""]
        lines += [f"- {r['machine']} {r['device']} {r['seconds']:g} s: {t}" for r, t in unverified]
    trades = [(r, t) for r in rows for t in r["trades"]]
    if trades:
        lines += ["", "Faster, but held back by the quality bar:", ""]
        lines += [f"- {r['machine']} {r['device']} {r['seconds']:g} s: {t}" for r, t in trades]
    if served:
        lines += _serving_markdown(served)
    return "\n".join(lines) + "\n"


def write(run_dirs: Iterable[Path], output: Path, markdown: bool = False,
          max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION, load_dirs: Iterable[Path] = ()) -> Path:
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(render_markdown(run_dirs, max_tv, load_dirs) if markdown else
                      render(run_dirs, max_tv, load_dirs), encoding="utf-8")
    return output
