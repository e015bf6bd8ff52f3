"""Readable terminal output: a cell's record, the machine, the plugins."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from dia_bench.harness.env import pinned_cores
from dia_bench.reports import figures

WEIGHT_WORDS = {
    "synthetic": "synthetic weights (seeded random): timings are real, audio is noise",
    "local": "real weights from a local directory",
    "hf-cache": "real weights from the local Hugging Face cache",
}


def _console() -> Console:
    """Wide enough for the tables when output goes to a file or a CI log."""
    console = Console()
    return console if console.is_terminal else Console(width=160)


def _drift(roof: dict) -> str:
    drift = roof.get("bandwidth_drift")
    if drift is None:
        return ""
    return f", {roof['bandwidth_cached_gbps']:.1f} GB/s when cached, x{drift:.2f} by the probes beside the repeats"


def _fmt(value: Any, spec: str = ".3f", unit: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{unit}"


def print_record(rec: dict[str, Any], path: Path | None = None, console: Console | None = None) -> None:
    console = console or _console()
    title = f"{rec['preset']} on {rec['device']}"
    if rec.get("plugins"):
        title += " + " + ", ".join(rec["plugins"])
    if rec["status"] != "ok":
        # Reasons quote pip extras ('dia-bench[torchao]'), which rich would read as markup.
        console.print(f"[bold red]{rec['status']}[/]: {escape(title)}: {escape(str(rec.get('reason')))}")
        if path:
            console.print(f"record: {path}")
        return
    stages = rec["stages"]
    steps = stages.get("step_latency_ms", {})
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_row("audio", f"{rec['audio_seconds']:.2f} s ({rec['frames']} frames x {rec['batch']} request(s))")
    table.add_row("generation (median)", f"{rec['generation_seconds']:.3f} s over {len(rec['repeats_seconds'])} "
                  f"repeats (IQR {_fmt(rec.get('generation_iqr_seconds'))} s)")
    if adaptive := rec.get("adaptive"):
        achieved = adaptive.get("achieved_ci_pct")
        table.add_row("adaptive repeats", f"target +-{adaptive['target_ci_pct']:g}%: "
                      + ("reached" if adaptive["target_met"] else "NOT reached")
                      + f" after {adaptive['repeats_run']} repeats (interval +-"
                      + ("?" if achieved is None else f"{achieved:.2f}") + f"%; at most {adaptive['max_repeats']})")
    if rec.get("output_errors"):
        for name, error in rec["output_errors"].items():
            table.add_row(f"[red]{name} not written[/]", escape(error) + " (the measurement above stands)")
    table.add_row("RTF (compute/audio, lower is better)", f"{rec['rtf']:.3f}")
    table.add_row("x real time (audio/compute)", f"{rec['xrt']:.3f}x")
    lf = rec.get("long_form") or {}
    if lf.get("rtf") is not None:
        table.add_row("long-form RTF", f"{lf['rtf']:.3f} per second of audio + {lf['fixed_seconds']:.3f} s a request "
                      "(decode steps only; the fixed part is encoder, prefill and the delay pattern's 16 steps)")
    table.add_row("end to end, with codec", f"RTF {rec['rtf_end_to_end']:.3f} / {rec['xrt_end_to_end']:.3f}x")
    table.add_row("stages (median)", f"tokenize {_fmt(stages['tokenize_s'], '.4f')} s, encoder+prefill "
                  f"{_fmt(stages['encoder_prefill_s'])} s, decode {_fmt(stages['decode_s'])} s, "
                  f"codec {_fmt(stages['codec_decode_s'])} s")
    table.add_row("decode step", f"p50 {_fmt(steps.get('p50'), '.2f')} ms, p90 {_fmt(steps.get('p90'), '.2f')} ms, "
                  f"p99 {_fmt(steps.get('p99'), '.2f')} ms ({_fmt(rec.get('decode_steps_per_second'), '.1f')} "
                  "steps/s)")
    roof = rec.get("roofline") or {}
    if roof.get("fraction_of_bandwidth") is not None:
        caches = roof.get("cache_bytes_per_step")  # absent from records before the caches were counted
        read, alone = f"{roof['weight_bytes_per_step'] / 1e9:.3f} GB of weights", ""
        if caches is not None:
            read += f" + {caches / 1e9:.3f} GB of attention caches"
            alone = f", weights alone {roof['weights_fraction_of_bandwidth']:.0%}"
        table.add_row("roofline", f"{read} per step, {roof['achieved_bandwidth_gbps']:.1f} of "
                      f"{roof['measured_bandwidth_gbps']:.1f} GB/s ({roof['fraction_of_bandwidth']:.0%}"
                      f"{alone}; bandwidth: "
                      f"{roof.get('bandwidth_method') or 'sum'}{_drift(roof)})")
        if roof.get("bandwidth_unsteady"):
            span = roof.get("fraction_range")
            table.add_row("[yellow]bandwidth unsteady[/]", roof["bandwidth_unsteady"]
                          + (f" ({span[0]:.0%} to {span[1]:.0%})" if span else ""))
    if roof.get("problem"):
        table.add_row("[red]roofline problem[/]", roof["problem"])
    phases = (rec.get("memory") or {}).get("phases") or {}
    load_peak = (phases.get("load") or {}).get("peak_rss_mb")
    transform_peak = (phases.get("transform") or {}).get("peak_rss_mb")
    table.add_row("memory", f"peak RSS {rec['peak_rss_mb']:.0f} MB during the repeats"
                  + (f", peak VRAM {rec['peak_vram_mb']:.0f} MB" if rec.get("peak_vram_mb") is not None else "")
                  + (f" (load {load_peak:.0f} MB, transform {transform_peak:.0f} MB)"
                     if load_peak is not None and transform_peak is not None else ""))
    table.add_row("load / warmup", f"{rec['load_seconds']:.2f} s / "
                  + ", ".join(f"{w:.2f}" for w in rec.get("warmup_seconds", [])) + " s")
    table.add_row("weights", WEIGHT_WORDS.get(rec["weights"]["source"], rec["weights"]["source"]))
    if rec["weights"]["source"] == "synthetic" and rec["preset"] == "dia-1.6b":
        from dia_bench.harness.weights_dir import REAL_WEIGHTS_HINT

        table.add_row("", escape(REAL_WEIGHTS_HINT))
    for spec, note in (rec.get("plugin_notes") or {}).items():
        if note:
            table.add_row(f"plugin {spec}", note)
    fid = rec.get("fidelity")
    if fid and not fid.get("compared", True):
        table.add_row("fidelity vs fp32", fid.get("reason") or "not compared")
    elif fid and fid.get("sampled"):
        sampled, codec = fid["sampled"], ("identical" if fid.get("codec_same_codes_identical")
                                          else f"SNR {_fmt(fid.get('codec_same_codes_snr_db'), '.1f')} dB")
        table.add_row("fidelity vs fp32", f"sampled distributions: total variation {sampled['total_variation']:.4f}, "
                      f"top-1 agreement {sampled['top1_agreement']:.3f}, all 9 channels "
                      f"{_fmt(sampled.get('all_channels_top1_agreement'))}; codec on the same codes: {codec}")
        table.add_row("", f"history {fid['history']['id']} (the fp32 reference's own generation, teacher-forced)")
    if rec.get("profile"):
        table.add_row("profile", rec["profile"]["trace"])
    console.print(table)
    if path:
        console.print(f"record: {path}")


def print_env(info: dict[str, Any], as_json: bool = False) -> None:
    """`dia-bench env`: `info` is `env.collect` with the local weights under "weights"."""
    if as_json:
        print(json.dumps(info, indent=2))
        return
    console = _console()
    cpu = info["cpu"]
    pinned = f"; this process may use {pinned_cores(cpu)} (pinned)" if pinned_cores(cpu) else ""
    console.print(f"[bold]CPU[/]: {cpu['model']} ({cpu['arch']}), {cpu['physical_cores']} physical / "
                  f"{cpu['logical_cores']} logical cores{pinned}, {cpu['memory_gb']} GiB; torch uses "
                  f"{info['torch_threads']} threads")
    console.print("  features: " + ", ".join(f"{k}{'' if v else ' (no)'}" for k, v in cpu["features"].items()))
    if info["gpus"]:
        for g in info["gpus"]:
            console.print(f"[bold]GPU {g['index']}[/]: {g['name']}, capability {g['capability']}, "
                          f"{g['memory_gb']} GiB, driver {g['driver']}")
    else:
        console.print("[bold]GPU[/]: none (NVML found no NVIDIA driver)")
    sw = info["software"]
    console.print(f"[bold]software[/]: python {sw['python']}, torch {sw['torch']} (CUDA {sw['cuda']}), "
                  f"transformers {sw['transformers']}, dia-bench {sw['dia_bench']} ({sw['git_commit']})")
    console.print("[bold]weights on this machine[/]:")
    for w in info["weights"]:
        state = "available" if w["available"] else "not present"
        where = w.get("repo_id") or w["path"]
        console.print(f"  {w['preset']} {w['kind']}: {w['source']} {where}: {state}")
    real = [w for w in info["weights"] if w["preset"] == "dia-1.6b" and w["source"] != "synthetic" and w["available"]]
    if not real:
        from dia_bench.harness.weights_dir import REAL_WEIGHTS_HINT

        console.print(f"  no real dia-1.6b weights here, so runs use synthetic ones: {escape(REAL_WEIGHTS_HINT)}")


def print_plugins(device: str, as_json: bool = False) -> None:
    from dia_bench.optimizations.registry import all_plugins, device_type

    rows = []
    for plugin in all_plugins().values():
        applies = device_type(device) in plugin.devices
        reason = None if applies else f"does not apply to {device_type(device)}"
        if applies:
            reason = plugin.availability(plugin.value_on(None, device), device)
        rows.append({
            "name": plugin.name, "description": plugin.description,
            "values": list(plugin.values) if plugin.values else None,
            "default": plugin.value_on(None, device) if applies and plugin.values else plugin.default,
            "devices": sorted(plugin.devices), "guide_section": plugin.expectation.section,
            "guide_speedup": plugin.expectation.speedup, "available": reason is None, "reason": reason,
        })
    if as_json:
        print(json.dumps({"device": device, "plugins": rows}, indent=2))
        return
    table = Table(title=f"optimization plugins on {device}", title_justify="left")
    for col in ("plugin", "values", "available here", "guide says", "what it does"):
        table.add_column(col)
    for r in rows:
        speed = r["guide_speedup"]
        values = "|".join(r["values"] or []) or "-"
        if r["values"] and r["default"]:
            values += f" (bare: {r['default']})"
        table.add_row(r["name"], values,
                      "[green]yes[/]" if r["available"] else f"[red]no[/]: {r['reason']}",
                      f"{speed[0]:g}-{speed[1]:g}x" if speed else "-", r["description"])
    _console().print(table)


def print_sweep(run_dir: Path, console: Console | None = None) -> None:
    """The table that closes a sweep: every cell, its RTF with CI, speedup against its baseline, in the
    report's order (by device and model, the fastest first)."""
    from dia_bench.harness.analysis import results
    from dia_bench.reports.answers import cell_name, compare_order

    console = console or _console()
    df = results.load(run_dir)
    table = Table(title=f"{run_dir}", title_justify="left")
    for col in ("cell", "status", "RTF [95% CI]", "long-form RTF", "x real time", "speedup vs baseline",
                "peak RSS MB", "quality"):
        table.add_column(col)
    from dia_bench.harness import stats
    from dia_bench.harness.analysis import quality

    for _, r in compare_order(df).iterrows():
        if r["status"] == "ok":
            lf = "-" if r["long_form_rtf"] is None else figures.interval(
                r["long_form_rtf"], r["long_form_rtf_low"], r["long_form_rtf_high"])
            q = quality.assess(r)
            table.add_row(cell_name(r), "ok", figures.interval(r["rtf"], r["rtf_ci_low"], r["rtf_ci_high"]), lf,
                          f"{r['xrt']:.3f}x", figures.speedup(r), f"{r['peak_rss_mb']:.0f}",
                          q["status"] if q["status"] == "reference" else f"{q['status']}: {quality.fidelity_text(r)}")
        else:
            table.add_row(cell_name(r), r["status"], r["reason"] or "", "", "", "", "", "")
    console.print(table)
    drift = results.baseline_drift(df)
    for _, d in drift.iterrows():
        console.print(f"baseline drift {results.drift_text(d)}")
    for _, r in df[df["disturbed"].notna()].iterrows() if "disturbed" in df else []:
        console.print(f"[yellow]{escape(str(r['description']))}: {r['disturbed']}[/]")
    console.print(f"* = beyond the noise of repeats and processes (95% interval excludes 1; {stats.METHOD})")
    console.print(f"run directory: {run_dir}")


def print_compare(table, changes: list[dict[str, Any]] | None = None, console: Console | None = None) -> None:
    console = console or _console()
    for c in changes or []:
        console.print(f"status changed: {escape(str(c['description']))}: {c['base']} -> {c['new']}")
    if table.empty:
        console.print("no cells in common between the two runs")
        return
    out = Table(title="base -> new", title_justify="left")
    for col in ("cell", "base RTF", "new RTF", "change", "speedup [95% CI]", "verdict"):
        out.add_column(col)
    for _, r in table.iterrows():
        colour = {"faster": "green", "slower": "red"}.get(r["verdict"], "white")
        out.add_row(r["description"], f"{r['base_rtf']:.3f}", f"{r['new_rtf']:.3f}", f"{r['change_pct']:+.1f}%",
                    figures.speedup(r), f"[{colour}]{r['verdict']}[/]")
    console.print(out)
