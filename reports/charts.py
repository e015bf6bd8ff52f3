"""Charts for the report, drawn with matplotlib and embedded as data URIs.

SVG goes through an <img> data URI rather than inline markup: text from a run (a plugin value,
a transcript) can then never become live markup in the page.
"""

from __future__ import annotations

import base64
import io
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import matplotlib.ticker
import numpy as np
import pandas as pd

from dia_bench.harness.analysis import results

plt.rcParams.update({"svg.fonttype": "path", "figure.dpi": 100, "font.size": 9})


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def _legend_below(ax) -> None:
    # Bars fill the axes: a legend inside would hide some of them.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)


def _label(row: pd.Series) -> str:
    return f"{row['plugins']} ({row['device']}, {row['seconds']:g}s, b{row['batch']})"


def _ok(df: pd.DataFrame) -> pd.DataFrame:
    return results.ok_cells(df)


def _config_axes(rows: pd.DataFrame, top_down: bool = True):
    """A figure with one horizontal row per configuration, labelled, first at the top."""
    fig, ax = plt.subplots(figsize=(8, 0.3 * len(rows) + 1))
    y = np.arange(len(rows))
    ax.set_yticks(y, [_label(r) for _, r in rows.iterrows()])
    if top_down:
        ax.invert_yaxis()
    return fig, ax, y


def rtf_per_config(df: pd.DataFrame) -> str | None:
    ok = _ok(df).sort_values("rtf")
    if ok.empty:
        return None
    fig, ax, y = _config_axes(ok)
    rtf = ok["rtf"].astype(float)
    # No bar where there is no interval (fewer than 3 repeats), rather than a bar of zero width.
    err = [(rtf - ok["rtf_ci_low"].astype(float)).fillna(0), (ok["rtf_ci_high"].astype(float) - rtf).fillna(0)]
    ax.barh(y, rtf, xerr=err, color="#4c72b0", capsize=2)
    ax.axvline(1.0, color="grey", ls="--", lw=0.8)
    label = "RTF = compute / audio (lower is better; dashed: real time), 95% CI"
    if rtf.max() > 10 * rtf.min() > 0:
        # A GPU's 0.02 beside a CPU's 60 on one linear axis leaves the fast bars invisible.
        ax.set_xscale("log")
        label += ", log scale"
    ax.set_xlabel(label)
    return _uri(fig)


def speedup(df: pd.DataFrame) -> str | None:
    ok = _ok(df)
    ok = ok[ok["speedup"].notna() & (ok["role"] == "cell")].sort_values("speedup")
    if ok.empty:
        return None
    fig, ax, y = _config_axes(ok, top_down=False)
    s = ok["speedup"].astype(float)
    err = [(s - ok["speedup_low"].astype(float)).fillna(0), (ok["speedup_high"].astype(float) - s).fillna(0)]
    colours = ["#55a868" if v > 1 else "#c44e52" for v in s]
    ax.barh(y, s, xerr=err, color=colours, capsize=2)
    ax.axvline(1.0, color="black", lw=0.8)
    ax.set_xlabel("speedup against the baseline (x), 95% t-interval (none below 3 repeats)")
    return _uri(fig)


def memory(df: pd.DataFrame) -> str | None:
    ok = _ok(df)
    if ok.empty:
        return None
    fig, ax, y = _config_axes(ok)
    ax.barh(y - 0.2, ok["peak_rss_mb"].fillna(0), height=0.4, label="peak RSS (host)")
    if ok["peak_vram_mb"].notna().any():
        ax.barh(y + 0.2, ok["peak_vram_mb"].fillna(0), height=0.4, label="peak VRAM (allocator)")
    ax.set_xlabel("MB")
    _legend_below(ax)
    return _uri(fig)


def speed_vs_fidelity(df: pd.DataFrame, max_tv: float | None = None) -> str | None:
    ok = _ok(df)
    ok = ok[ok["speedup"].notna() & ok["total_variation"].notna()]
    if ok.empty:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    x, y = ok["speedup"].astype(float).to_numpy(), ok["total_variation"].astype(float).to_numpy()
    ax.scatter(x, y, color="#8172b2")
    # Configurations that change nothing sit on one spot: stack their labels instead of overprinting.
    span_x, span_y = max(np.ptp(x), 0.1), max(np.ptp(y), 0.1)
    placed: list[tuple[float, float]] = []
    for (_, r), px, py in zip(ok.iterrows(), x, y, strict=True):
        near = sum(abs(px - qx) < 0.08 * span_x and abs(py - qy) < 0.05 * span_y for qx, qy in placed)
        placed.append((px, py))
        ax.annotate(str(r["plugins"]), (px, py), fontsize=7, xytext=(4, 3 - 9 * near), textcoords="offset points")
    ax.set_xlabel("speedup against the baseline (x)")
    ax.set_ylabel("total variation from fp32's sampled distributions")
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    if max_tv is not None:
        ax.axhline(max_tv, color="#c44e52", lw=0.8, ls="--", label=f"quality bar ({max_tv:g})")
        _legend_below(ax)
    return _uri(fig)


def stages(df: pd.DataFrame) -> str | None:
    ok = _ok(df)
    if ok.empty:
        return None
    fig, ax, y = _config_axes(ok)
    left = np.zeros(len(ok))
    for col, label in (("encoder_prefill_s", "encoder + prefill"), ("decode_s", "decode loop"),
                       ("codec_decode_s", "codec decode")):
        vals = ok[col].fillna(0).to_numpy(dtype=float)
        ax.barh(y, vals, left=left, label=label)
        left += vals
    ax.set_xlabel("seconds per repeat (median)")
    _legend_below(ax)
    return _uri(fig)


def step_latency(df: pd.DataFrame, latencies: dict[str, list[float]]) -> str | None:
    ok = _ok(df)
    data = [(r["description"], latencies.get(r["key"]) or []) for _, r in ok.iterrows()]
    data = [(d, v) for d, v in data if v]
    if not data:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(data) + 1))
    ax.boxplot([v for _, v in data], vert=False, showfliers=False, whis=(1, 99))
    ax.set_yticks(np.arange(1, len(data) + 1), [d for d, _ in data])
    ax.set_xlabel("decode step latency, ms (whiskers p1-p99)")
    ax.set_xscale("log")
    return _uri(fig)


def scaling(df: pd.DataFrame) -> str | None:
    ok = _ok(df)
    if ok["seconds"].nunique() < 2 and ok["batch"].nunique() < 2:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for (cfg, batch), g in ok.groupby(["plugins", "batch"]):
        g = g.sort_values("seconds")
        axes[0].plot(g["seconds"], g["generation_seconds"], marker="o", label=f"{cfg} b{batch}")
    axes[0].set_xlabel("audio per request (s)")
    axes[0].set_ylabel("generation time (s)")
    for (cfg, secs), g in ok.groupby(["plugins", "seconds"]):
        g = g.sort_values("batch")
        axes[1].plot(g["batch"], g["rtf"], marker="o", label=f"{cfg} {secs:g}s")
    axes[1].set_xlabel("batch size")
    axes[1].set_ylabel("RTF (all requests' audio)")
    axes[1].axhline(1.0, color="grey", ls="--", lw=0.8)
    for ax in axes:
        ax.legend(fontsize=7)
    return _uri(fig)


VERDICT_COLOURS = {"reproduced": "#2a7d2a", "below": "#b22222", "above": "#1f5fa8", "inconclusive": "#888888"}


def guide_forest(rows: list[dict[str, Any]]) -> str | None:
    """Each measured claim of the guide as a row: the guide's expected range shaded, the measured speedup
    and its 95% interval drawn over it, coloured by the verdict; on a log axis, since a speedup of 0.5x
    is as far from 1 as one of 2x."""
    measured = [g for g in rows if g.get("measured") is not None]
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(measured) + 1))
    labels = []
    for y, g in enumerate(measured):
        ax.fill_betweenx([y - 0.35, y + 0.35], g["exp_low"], g["exp_high"], color="#dddddd", lw=0)
        verdict = next((v for v in VERDICT_COLOURS if str(g["verdict"]).startswith(v)), "inconclusive")
        colour = VERDICT_COLOURS[verdict]
        low, high = g.get("low"), g.get("high")
        if low is not None and high is not None:
            ax.plot([low, high], [y, y], color=colour, lw=3, solid_capstyle="butt")
        ax.plot([g["measured"]], [y], "o", color=colour)
        labels.append(f"{g['technique']} ({g['device']}): {verdict}")
    ax.set_yticks(range(len(measured)), labels)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
    ax.axvline(1.0, color="grey", ls="--", lw=0.8)
    ax.set_xlabel("speedup (log scale): grey band, the guide's range; line, the measured 95% interval; "
                  "dashed, no change")
    return _uri(fig)


def all_charts(df: pd.DataFrame, latencies: dict[str, list[float]],
               max_tv: float | None = None) -> list[dict[str, Any]]:
    charts = [
        ("RTF per configuration", rtf_per_config(df)),
        ("Speedup against baseline", speedup(df)),
        ("Peak memory", memory(df)),
        ("Speed against fidelity", speed_vs_fidelity(df, max_tv)),
        ("Where the time goes", stages(df)),
        ("Decode step latency", step_latency(df, latencies)),
        ("Cost against audio length and batch size", scaling(df)),
    ]
    return [{"title": t, "uri": u} for t, u in charts if u]


def history(line: Any) -> str:
    """One configuration across runs (a `dia_bench.reports.history.Series`): RTF with its interval per run, a
    dashed line before the first run after each step, and peak memory below."""
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 4.2), sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    measured = [p for p in line.points if p.samples]
    x = np.array([p.run.order for p in measured])
    y = np.array([p.rtf for p in measured], dtype=float)
    # No bar where a run has no interval (fewer than 3 repeats), rather than a bar of zero width.
    low = np.array([np.nan if p.low is None else p.low for p in measured], dtype=float)
    high = np.array([np.nan if p.high is None else p.high for p in measured], dtype=float)
    top.errorbar(x, y, yerr=[np.nan_to_num(y - low), np.nan_to_num(high - y)], fmt="o-", ms=3, lw=0.8,
                 capsize=2, color="#4c72b0", label="RTF, 95% CI")
    failed = [p.run.order for p in line.points if p.status == "failed"]
    if failed and len(y):
        top.plot(failed, [np.nanmin(y)] * len(failed), "x", color="#c44e52", label="failed")
    for s in line.steps:
        top.axvline(s.after.run.order - 0.5, color="#c44e52", ls="--", lw=1)
        top.annotate(f"{s.step.change_pct:+.0f}%", (s.after.run.order - 0.5, 1), xycoords=("data", "axes fraction"),
                     xytext=(3, -10), textcoords="offset points", color="#c44e52", fontsize=8)
    top.set_ylabel("RTF (lower is better)")
    top.legend(fontsize=7, loc="upper left", frameon=False)
    rss = [(p.run.order, p.peak_rss_mb) for p in line.points if p.peak_rss_mb is not None]
    vram = [(p.run.order, p.peak_vram_mb) for p in line.points if p.peak_vram_mb is not None]
    for data, label in ((rss, "peak RSS (host)"), (vram, "peak VRAM (allocator)")):
        if data:
            bottom.plot(*zip(*data, strict=True), ".-", ms=3, lw=0.8, label=label)
    bottom.set_ylabel("MB")
    bottom.set_xlabel("run, in time order (numbers as in the runs table)")
    if rss or vram:
        bottom.legend(fontsize=7, loc="upper left", frameon=False)
    return _uri(fig)
