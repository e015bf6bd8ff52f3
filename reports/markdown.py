"""A compact Markdown summary of one or more runs, for a CI job page."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dia_bench.harness import rundir, stats
from dia_bench.harness.analysis import quality, results
from dia_bench.reports import answers, figures
from dia_bench.reports import stacks as stack_table

WEIGHTS = {"synthetic": "synthetic weights: timings are real, audio is noise",
           "local": "real weights (local directory)", "hf-cache": "real weights (Hugging Face cache)"}


def render(run_dirs: Iterable[Path], max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> str:
    run_dirs = [Path(d) for d in run_dirs]
    df = results.load(run_dirs)
    lines = ["# dia-bench summary", ""]
    if df.empty:
        return "\n".join([*lines, "No cells recorded."])
    lines += answers.markdown(df, max_tv)
    lines += ["## The cells", ""]
    for (host, device_name, node), _ in df.groupby(["hostname", "device_name", "node_name"], dropna=False):
        lines.append(f"- machine: {host}, {device_name}" + (f", Ray node {node}" if isinstance(node, str) else ""))
    lines += figures.memory_lines(rec for d in run_dirs for rec in rundir.records(d))
    # On a cluster a cell may share its node: its time is then not the node's alone.
    for _, r in df[df["beside"].map(bool)].iterrows():
        lines.append(f"- measured beside other cells on its node: {r['description']} (beside {', '.join(r['beside'])})")
    if note := quality.unmeasured_note(df, max_tv):
        lines.append(f"- **{note}**")
    sources = sorted(s for s in df["weights_source"].dropna().unique())
    lines += [f"- weights: {', '.join(WEIGHTS.get(s, s) for s in sources) or 'unknown'}",
              "- RTF = compute / audio (lower is better), geometric mean of the repeats; x real time = audio / "
              "compute; long-form RTF = compute per second of audio at the measured request's mean decode step "
              "(longer audio costs more: each step's attention reads a longer cache), + its fixed cost; "
              f"speedup against the baseline of the same device, length and batch, interpolated to when the cell "
              f"ran; 95% intervals: {stats.METHOD}, none below 3 repeats (* = beyond noise)",
              *(f"- noise between processes, {n}" for n in results.process_notes(df)),
              f"- quality: `passes` when the sampled distributions stay within a mean total variation of {max_tv:g} "
              "from the fp32 reference's (teacher-forced on the run's shared history); `exact` when the plugins "
              "change no arithmetic; `unjudged` when it does not pass but moves no further than the reference's own "
              "weights do under a fraction of bf16's rounding; `unmeasured` without fidelity. Only `passes` and "
              "`exact` are recommended",
              "- roofline: the decode step's bytes (weights and the attention caches it must read) over the machine's "
              "measured bandwidth, scaled by probes just before and after the repeats (? = they differed by over 10%; "
              "! = the step read faster than that: the figure is wrong, not the step fast)",
              ""]
    lines.append("| cell | status | RTF [95% CI] | long-form RTF [95% CI] | x real time | speedup | step p50 ms | "
                 "roofline | peak RSS MB | quality | fidelity |")
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for _, r in answers.compare_order(df).iterrows():
        if r["status"] == "ok":
            speed = figures.speedup(r)
            fixed = "" if r["fixed_seconds"] is None else f" + {r['fixed_seconds']:.2f} s"
            rtf = figures.interval(r["rtf"], r["rtf_ci_low"], r["rtf_ci_high"], ".3f")
            if r.get("disturbed"):
                rtf += f" ({r['disturbed']})"
            long_form = figures.interval(r["long_form_rtf"], r["long_form_rtf_low"], r["long_form_rtf_high"], ".3f")
            lines.append(f"| {answers.cell_name(r)} | ok | {rtf} | {long_form}{fixed} | "
                         f"{figures.number(r['xrt'], '.3f')} "
                         f"| {speed} | {figures.number(r['step_p50_ms'], '.1f')} | {figures.roofline(r)} | "
                         f"{figures.number(r['peak_rss_mb'], '.0f')} | "
                         f"{quality.assess(r, max_tv)['status']} | {quality.fidelity_text(r)} |")
        else:
            reason = str(r["reason"] or "").replace("|", "/")
            lines.append(f"| {r['description']} | {r['status']} | {reason} | | | | | | | | |")
    drift = results.baseline_drift(df)
    if not drift.empty:
        lines.append("")
        for _, d in drift.iterrows():
            lines.append(f"- baseline drift {results.drift_text(d)}")
    if stack_table.is_stack_set(run_dirs, df):
        lines += ["", *stack_table.markdown(stack_table.build(run_dirs, df))]
    return "\n".join(lines) + "\n"


def write(run_dirs: Iterable[Path], output: Path, max_tv: float = quality.DEFAULT_MAX_TOTAL_VARIATION) -> Path:
    output.write_text(render(run_dirs, max_tv))
    return output



