"""Results as a pandas DataFrame: every cell of one or many run directories, with statistics."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pandas as pd

from dia_bench.harness import process_noise, rundir, stats

# Cells are compared against the baseline measured under the same conditions, on the same node (a Ray
# sweep measures each node's own baselines; a local run has one node, None).
BASELINE_KEYS = ("run", "node", "preset", "device", "seconds", "batch", "text_label")
BASELINE_ROLES = ("baseline-start", "baseline-mid", "baseline-end")
# The baseline measured again: a check on the machine, not another configuration.
REPEATED_BASELINE_ROLES = ("baseline-mid", "baseline-end")
# More processes of a configuration that has its own row (a suite's `processes = N`).
EXTRA_PROCESS_ROLES = ("cell-process",)
# What a table of configurations leaves out: each is measured again in another row's name.
NOT_A_CONFIGURATION = REPEATED_BASELINE_ROLES + EXTRA_PROCESS_ROLES


def _measured_at(rec: dict[str, Any]) -> pd.Timestamp:
    """The middle of the measured repeats (or of the whole worker, for records without that)."""
    pairs = (("measured_from", "measured_until"), ("started_at", "finished_at"))
    for a, b in pairs:
        if rec.get(a) and rec.get(b):
            start, end = pd.Timestamp(rec[a]), pd.Timestamp(rec[b])
            return start + (end - start) / 2
    return pd.NaT


def _node_name(node: dict[str, Any] | None) -> str | None:
    """How a report names a Ray node: host, address and the start of its id (two nodes may share a host)."""
    if not node:
        return None
    return f"{node.get('hostname')} {node.get('ip')} ({str(node.get('id'))[:8]})"


def read_kernels(roof: dict[str, Any]) -> tuple[float | None, dict[str, float]]:
    """A record roofline's read kernels that ran, in GB/s, and the best rate the machine's bandwidth was
    taken from (the cached figure, before the probes scaled it)."""
    kernels = {k: v for k, v in (roof.get("bandwidth_kernels") or {}).items() if v}
    return roof.get("bandwidth_cached_gbps") or max(kernels.values(), default=None), kernels


def _kernel_share(roof: dict[str, Any], kernel: str) -> float | None:
    best, kernels = read_kernels(roof)
    return kernels[kernel] / best if kernel in kernels and best else None


def _row(run: Path, meta: dict[str, Any], rec: dict[str, Any]) -> dict[str, Any]:
    cell = rec.get("cell", {})
    env = rec.get("env") or {}
    fid = rec.get("fidelity") or {}
    sampled = fid.get("sampled") or {}
    sensitivity = (fid.get("history") or {}).get("sensitivity") or {}
    lf = rec.get("long_form") or {}
    steps = (rec.get("stages") or {}).get("step_latency_ms") or {}
    roof = rec.get("roofline") or {}
    machine = meta.get("machine") or {}
    return {
        "run": str(run),
        "suite": (meta.get("suite") or {}).get("name"),
        "key": rec.get("key") or rec.get("cell_id"),
        "cell_id": rec.get("cell_id"),
        "role": rec.get("role", "cell"),
        "description": rec.get("description"),
        "status": rec.get("status"),
        "reason": rec.get("reason"),
        "preset": rec.get("preset"),
        "device": rec.get("device"),
        "device_name": env.get("device_name") or (machine.get("cpu") or {}).get("model"),
        "hostname": env.get("hostname") or machine.get("hostname"),
        "node": (rec.get("node") or {}).get("id"),
        "node_name": _node_name(rec.get("node")),
        "beside": rec.get("beside") or [],
        "executor": rec.get("executor"),
        "plugins": "+".join(rec.get("plugins") or []) or "baseline",
        "text_label": cell.get("label"),
        "seconds": cell.get("seconds"),
        "batch": rec.get("batch"),
        "frames": rec.get("frames"),
        "rtf": rec.get("rtf"),
        "xrt": rec.get("xrt"),
        "rtf_end_to_end": rec.get("rtf_end_to_end"),
        "generation_seconds": rec.get("generation_seconds"),
        "repeats_seconds": rec.get("repeats_seconds") or [],
        "measured_at": _measured_at(rec),
        "audio_seconds": rec.get("audio_seconds"),
        "warmup_seconds": sum(rec.get("warmup_seconds") or []) or None,
        "load_seconds": rec.get("load_seconds"),
        "worker_wall_seconds": rec.get("worker_wall_seconds"),
        "peak_rss_mb": rec.get("peak_rss_mb"),
        "peak_vram_mb": rec.get("peak_vram_mb"),
        "step_p50_ms": steps.get("p50"),
        "step_p90_ms": steps.get("p90"),
        "step_p99_ms": steps.get("p99"),
        "encoder_prefill_s": (rec.get("stages") or {}).get("encoder_prefill_s"),
        "decode_s": (rec.get("stages") or {}).get("decode_s"),
        "codec_decode_s": (rec.get("stages") or {}).get("codec_decode_s"),
        # Weights and attention caches; None in runs upgraded from records that never counted the caches,
        # which have the weights alone (harness/record_schema.py, schema 3).
        "fraction_of_bandwidth": roof.get("fraction_of_bandwidth"),
        "weights_fraction_of_bandwidth": roof.get("weights_fraction_of_bandwidth"),
        "bandwidth_unsteady": bool(roof.get("bandwidth_unsteady")),
        # torch's fp32 Linear over the same buffers, as a share of the best read kernel: what an fp32 step
        # can reach at most here (None where the machine's measurement predates that kernel).
        "fp32_matvec_share": _kernel_share(roof, "fp32 matvec"),
        "roofline_problem": bool(roof.get("problem")),
        "long_form_rtf_repeats": lf.get("rtf_repeats") or [],
        "fixed_seconds_repeats": lf.get("fixed_seconds_repeats") or [],
        "step_growth_us": stats.median(lf.get("step_growth_us_per_step_repeats") or []),
        "steps_per_request": lf.get("steps_per_request"),
        "fidelity_compared": fid.get("compared"),
        "fidelity_error": fid.get("error"),
        "total_variation": sampled.get("total_variation"),
        "top1_agreement": sampled.get("top1_agreement"),
        "all_channels_top1_agreement": sampled.get("all_channels_top1_agreement"),
        "logit_cosine": (fid.get("logits") or {}).get("cosine"),
        "codec_same_codes_snr_db": fid.get("codec_same_codes_snr_db"),
        "codec_same_codes_identical": fid.get("codec_same_codes_identical"),
        "free_running_audio_snr_db": fid.get("free_running_audio_snr_db"),
        "history": (fid.get("history") or {}).get("id"),
        "reference_sensitivity_tv": sensitivity.get("total_variation"),
        "reference_sensitivity_noise": sensitivity.get("linear_output_noise"),
        "reference_sensitivity_draws": sensitivity.get("total_variation_draws"),
        "weights_source": (rec.get("weights") or {}).get("source"),
        "torch": (env.get("software") or {}).get("torch"),
        "transformers": (env.get("software") or {}).get("transformers"),
        "stack": (env.get("software") or {}).get("stack") or (machine.get("software") or {}).get("stack"),
        "git_commit": (env.get("software") or {}).get("git_commit"),
    }


def load(run_dirs: str | Path | Iterable[str | Path], with_stats: bool = True) -> pd.DataFrame:
    """All cells of one or many runs; with statistics: RTF CI and speedup against the baseline."""
    if isinstance(run_dirs, (str, Path)):
        run_dirs = [run_dirs]
    rows = []
    for d in run_dirs:
        path = Path(d)
        meta = rundir.read_meta(path)
        # In the order they ran, as the sweep showed them (files are named by cell id).
        in_order = sorted(rundir.records(path), key=lambda rec: rec.get("finished_at") or "")
        rows.extend(_with_noise(in_order, meta, [_row(path, meta, rec) for rec in in_order]))
    df = _with_machine(pd.DataFrame(rows))
    if with_stats and not df.empty:
        df = add_statistics(df)
    return df


def _with_machine(df: pd.DataFrame) -> pd.DataFrame:
    """`machine`: what reports group by. The CPU or GPU model, and on a cluster also the node: a Ray sweep
    over two nodes then reads like two runs, one on each."""
    if not df.empty:
        df["machine"] = [d if not n else f"{d} on {n}" for d, n in zip(df["device_name"], df["node_name"],
                                                                        strict=True)]
    return df


def load_records(records: Iterable[dict[str, Any]], with_stats: bool = True) -> pd.DataFrame:
    """Records that belong to no run directory (`dia-bench run --json` files), as one table."""
    records = list(records)
    df = _with_machine(pd.DataFrame(_with_noise(records, {}, [_row(Path("-"), {}, rec) for rec in records])))
    if with_stats and not df.empty:
        df = add_statistics(df)
    return df


def _with_noise(records: list[dict[str, Any]], meta: dict[str, Any],
                rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each row with its run's between-process term (`harness/process_noise.py`)."""
    noise = process_noise.run_noise(records, meta)
    for rec, row in zip(records, rows, strict=True):
        kind = process_noise.record_kind(rec)
        term, prior = noise[((rec.get("node") or {}).get("id"), kind)], process_noise.run_prior(meta, kind)
        row.update(process_variance=term.variance, process_df=term.df, process_source=term.source,
                   prior_variance=prior.variance, prior_df=prior.df, prior_source=prior.source)
    return rows


def process_term(row: pd.Series, prior: bool = False) -> stats.ProcessNoise | None:
    """The row's between-process term (with `prior`, the one its run started from, before it measured
    anything); None for rows loaded without one."""
    name = "prior" if prior else "process"
    variance = row.get(f"{name}_variance")
    if variance is None or variance != variance:
        return None
    return stats.ProcessNoise(float(variance), float(row[f"{name}_df"]), str(row[f"{name}_source"]))


def process_notes(df: pd.DataFrame) -> list[str]:
    """What noise between processes the intervals carry, a line per device kind and preset (once
    however many runs share it): the first thing a reader needs to weigh an interval."""
    lines: list[str] = []
    ok = df[df["status"] == "ok"] if "status" in df else df
    for _, r in ok.iterrows():
        term = process_term(r)
        if term is None:
            continue
        line = f"{r['device']} {r['preset']}: intervals include {term.describe()}"
        if line not in lines:
            lines.append(line)
    return lines


def rtf_samples(row: pd.Series) -> list[float]:
    return process_noise.rtf_repeats(row)


def ok_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Measured cells, each configuration once (the baseline's repeats and extra processes left out)."""
    return df[(df["status"] == "ok") & ~df["role"].isin(NOT_A_CONFIGURATION)]


def add_statistics(df: pd.DataFrame) -> pd.DataFrame:
    """RTF intervals per cell (short and long form), and speedup against the baseline as fast as the
    machine was then.

    RTF is the geometric mean of the repeats with its t-interval (`harness/stats.py`); the record's
    own `rtf` (a median) stays as `rtf_median`. A cell is compared with the baseline measurements just
    before and just after it in time, interpolated, so a machine that slowed down over a long run
    does not pass for a slow configuration. The baseline's own repeats are compared with its first
    measurement: that ratio is the drift.
    """
    df = df.copy()
    df["rtf_median"] = df["rtf"]
    for col in ("rtf_ci_low", "rtf_ci_high", "rtf_ci_reason", "rtf_within_low", "rtf_within_high", "long_form_rtf",
                "long_form_rtf_low", "long_form_rtf_high", "fixed_seconds", "fixed_seconds_low", "fixed_seconds_high"):
        df[col] = None
    for col in ("process_variance", "process_df", "process_source", "prior_variance", "prior_df", "prior_source"):
        if col not in df:
            df[col] = None
    df["rtf"] = df["rtf"].astype(object)
    df["processes"] = _process_samples(df)
    for idx, r in df.iterrows():
        if r["status"] != "ok":
            continue
        term = process_term(r)
        if r["processes"]:
            ci = stats.location_ci(r["processes"], process=term)
            df.loc[idx, ["rtf", "rtf_ci_low", "rtf_ci_high", "rtf_ci_reason", "rtf_within_low", "rtf_within_high"]] = (
                ci["center"], ci["low"], ci["high"], ci["reason"], ci["within_low"], ci["within_high"])
        if r["long_form_rtf_repeats"]:
            lf = stats.location_ci(r["long_form_rtf_repeats"], process=term)
            fixed = stats.linear_ci(r["fixed_seconds_repeats"])
            df.loc[idx, ["long_form_rtf", "long_form_rtf_low", "long_form_rtf_high", "fixed_seconds",
                         "fixed_seconds_low", "fixed_seconds_high"]] = (
                lf["center"], lf["low"], lf["high"], fixed["center"], fixed["low"], fixed["high"])
    df["xrt"] = [1 / v if isinstance(v, (int, float)) and v and v == v else None for v in df["rtf"]]
    df["rtf_iqr"] = [stats.iqr(rtf_samples(r)) if r["status"] == "ok" else None for _, r in df.iterrows()]
    df["disturbed"] = [stats.disturbance(rtf_samples(r)) if r["status"] == "ok" else None for _, r in df.iterrows()]
    for col in ("speedup", "speedup_low", "speedup_high", "speedup_within_low", "speedup_within_high", "baseline_ref",
                "speedup_reason"):
        df[col] = None
    df["significant"] = None
    ok = df[df["status"] == "ok"]
    for _, group in ok.groupby(list(BASELINE_KEYS), dropna=False):
        base = group[group["role"] == "baseline-start"]
        if base.empty:
            continue
        start = base.iloc[0]
        timeline = group[group["role"].isin(BASELINE_ROLES) & group["measured_at"].notna()].sort_values("measured_at")
        for idx, row in group.iterrows():
            if row["role"] in EXTRA_PROCESS_ROLES:
                continue
            before, after, weight = _neighbours(timeline, row, start) if row["role"] == "cell" else (start, None, 0.0)
            if row["role"] == "baseline-start":  # the reference itself: 1 by definition, nothing to test
                df.loc[idx, ["speedup", "significant", "baseline_ref"]] = (1.0, False, "baseline-start")
                continue
            r = stats.ratio_ci(rtf_samples(before), row["processes"],
                               base_after=rtf_samples(after) if after is not None else None, weight=weight,
                               process=process_term(row))
            ref = before["role"] if after is None else f"{before['role']}..{after['role']} @{weight:.2f}"
            df.loc[idx, ["speedup", "speedup_low", "speedup_high", "speedup_within_low", "speedup_within_high",
                         "significant", "baseline_ref", "speedup_reason"]] = (
                r["speedup"], r["low"], r["high"], r.get("within_low"), r.get("within_high"), r["significant"], ref,
                r["reason"])
    return df


def _process_samples(df: pd.DataFrame) -> list[list[list[float]]]:
    """Per row, the RTF repeats of each process that measured its configuration: its own, and for a
    cell row those of its extra processes (`processes = N`), in the order they ran."""
    extra: dict[tuple[Any, ...], list[list[float]]] = {}
    for _, r in df.iterrows():
        if r["status"] == "ok" and r["role"] in EXTRA_PROCESS_ROLES and (samples := rtf_samples(r)):
            extra.setdefault(_process_key(r), []).append(samples)
    out = []
    for _, r in df.iterrows():
        own = [samples] if r["status"] == "ok" and (samples := rtf_samples(r)) else []
        more = extra.get(_process_key(r), []) if r["role"] == "cell" else []
        out.append(own + more)
    return out


def _process_key(r: pd.Series) -> tuple[Any, ...]:
    return r["run"], r["node"] if isinstance(r["node"], str) else None, r["cell_id"]


def _neighbours(timeline: pd.DataFrame, row: pd.Series,
                start: pd.Series) -> tuple[pd.Series, pd.Series | None, float]:
    """The baseline measured last before `row` and first after it, and the interpolation weight.

    Without times to go by (records from elsewhere) the first baseline is the reference.
    """
    t = row["measured_at"]
    if pd.isna(t) or timeline.empty:
        return start, None, 0.0
    earlier, later = timeline[timeline["measured_at"] <= t], timeline[timeline["measured_at"] >= t]
    if earlier.empty:
        return later.iloc[0], None, 0.0
    if later.empty:
        return earlier.iloc[-1], None, 0.0
    before, after = earlier.iloc[-1], later.iloc[0]
    span = (after["measured_at"] - before["measured_at"]).total_seconds()
    if span <= 0:
        return before, None, 0.0
    return before, after, (t - before["measured_at"]).total_seconds() / span


def baseline_drift(df: pd.DataFrame) -> pd.DataFrame:
    """The baseline's repeats against its first measurement: a machine that changed speed mid-run shows here.

    `drift_pct` is end against start; `max_drift_pct` the repeat furthest from the start, which a
    machine that slowed down and recovered shows and the end alone would hide. A baseline never
    measured again (a sweep cut short by a deadline) gets a row too, with `end_rtf` None: its drift is
    unknown, and the reports say so rather than stay silent.
    """
    ok = df[(df["status"] == "ok") & df["role"].isin(BASELINE_ROLES)]
    rows = []
    for keys, group in ok.groupby(list(BASELINE_KEYS), dropna=False):
        start, end = group[group["role"] == "baseline-start"], group[group["role"] == "baseline-end"]
        if start.empty:
            continue
        if end.empty:
            rows.append({**dict(zip(BASELINE_KEYS, keys, strict=True)), "start_rtf": start.iloc[0]["rtf"],
                         "end_rtf": None, "drift_pct": None, "max_drift_pct": None,
                         "baseline_measurements": len(group), "significant": None})
            continue
        start_samples = rtf_samples(start.iloc[0])
        # Against the prior: the run's own estimate of the noise between processes is made of these
        # same baseline processes, so a drift would pass for that noise.
        r = stats.ratio_ci(rtf_samples(end.iloc[0]), start_samples, process=process_term(start.iloc[0], prior=True))
        repeats = group[group["role"].isin(REPEATED_BASELINE_ROLES)]
        drifts = [(row["rtf"] / start.iloc[0]["rtf"] - 1) * 100 for _, row in repeats.iterrows()]
        rows.append({**dict(zip(BASELINE_KEYS, keys, strict=True)), "start_rtf": start.iloc[0]["rtf"],
                     "end_rtf": end.iloc[0]["rtf"], "drift_pct": (r["speedup"] - 1) * 100 if r["speedup"] else None,
                     "max_drift_pct": max(drifts, key=abs), "baseline_measurements": len(group),
                     "significant": r["significant"]})
    return pd.DataFrame(rows)


def drift_text(d: pd.Series) -> str:
    """One line per baseline: how the machine's speed moved during the run."""
    verdict = {True: "significant: the machine changed speed during the run", False: "within noise",
               None: "too few repeats to tell it from noise"}[d["significant"] if d["significant"] in (True, False)
                                                              else None]
    node = f" on node {d['node'][:8]}" if isinstance(d.get("node"), str) else ""
    end_rtf = d.get("end_rtf")
    if end_rtf is None or end_rtf != end_rtf:  # None, or NaN once in a frame
        return (f"{d['device']}{node} {d['seconds']:g}s b{d['batch']}: start RTF {d['start_rtf']:.3f}, no end "
                "baseline (the run stopped before it): drift unknown, and speedups assume the machine kept its speed")
    text = (f"{d['device']}{node} {d['seconds']:g}s b{d['batch']}: start RTF {d['start_rtf']:.3f}, end RTF "
            f"{d['end_rtf']:.3f} ({d['drift_pct']:+.1f}%, {verdict})")
    if d["baseline_measurements"] > 2:
        text += f"; furthest of {d['baseline_measurements']} baseline measurements {d['max_drift_pct']:+.1f}%"
    return text
