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

# Text as SVG text, not as glyph outlines: each outlined character costs about 60 bytes, which put a
# 40-cell report's charts over 1.5 MB; the viewer's own font draws it (DejaVu Sans, else any sans-serif).
plt.rcParams.update({"svg.fonttype": "none", "figure.dpi": 100, "font.size": 9})


def svg_uri(fig) -> str:
    buf = io.BytesIO()
    # No date in the metadata: the same run draws the same bytes.
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    return "data:image/svg+xml;base64," + base64.b64encode(buf.getvalue()).decode()


def legend_below(ax) -> None:
    # Bars fill the axes: a legend inside would hide some of them.
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, frameon=False)


def _label(row: pd.Series, machine: bool = False, device: bool = True) -> str:
    parts = [str(row["machine"])] if machine else []
    parts += [str(row["device"])] if device else []
    parts += [f"{row['seconds']:g}s", f"b{row['batch']}"]
    return f"{row['plugins']} ({', '.join(parts)})"


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


def _per_device(ok: pd.DataFrame, sort_by: str):
    """A figure with one panel per device, each with its own axis and one labelled row per configuration,
    sorted by `sort_by`, first at the top. A GPU's seconds and a CPU's differ a thousandfold: on one axis
    the GPU's bars would not show."""
    groups = [(device, g.sort_values(sort_by)) for device, g in ok.groupby("device", sort=True)]
    labels, titles = [], []
    for device, g in groups:
        machines = sorted(str(m) for m in g["machine"].dropna().unique())
        # The panel's title names the device; the machine goes into a label only where two share a panel.
        labels.append([_label(r, machine=len(machines) > 1, device=False) for _, r in g.iterrows()])
        titles.append(f"{device}: {', '.join(machines)}")
    heights = [0.3 * len(g) + 0.9 for _, g in groups]
    # Wide enough for the longest label beside a 5-inch plot: the layout would otherwise shrink the plot.
    width = 5 + 0.07 * max(len(t) for rows in labels for t in rows)
    fig, axes = plt.subplots(len(groups), 1, figsize=(width, sum(heights)), squeeze=False, layout="constrained",
                             gridspec_kw={"height_ratios": heights})
    panels = []
    for ax, (_, g), names, title in zip(axes[:, 0], groups, labels, titles, strict=True):
        y = np.arange(len(g))
        ax.set_yticks(y, names)
        ax.invert_yaxis()
        ax.set_title(title, loc="left", fontsize=9, fontweight="bold")
        panels.append((ax, g, y))
    return fig, panels


def _plain_log_axis(ax) -> None:
    """A log x axis ticked 1, 2, 5 per decade in plain numbers: even within one decade it has ticks to read,
    and no 10^-2 superscripts."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1, 2, 5)))
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())


def rtf_per_config(df: pd.DataFrame) -> str | None:
    """RTF per configuration with its 95% interval, a panel per device, each bar labelled with its x real
    time (the other convention, so neither reader has to invert)."""
    ok = _ok(df)
    if ok.empty:
        return None
    fig, panels = _per_device(ok, "rtf")
    for ax, rows, y in panels:
        rtf = rows["rtf"].astype(float)
        low, high = rows["rtf_ci_low"].astype(float), rows["rtf_ci_high"].astype(float)
        # No bar where there is no interval (fewer than 3 repeats), rather than a bar of zero width.
        ax.barh(y, rtf, xerr=[(rtf - low).fillna(0), (high - rtf).fillna(0)], color="#4c72b0", capsize=2)
        right = high.fillna(rtf)
        log = rtf.max() > 10 * rtf.min() > 0
        notes = ["lower is better"]
        if right.max() >= 1.0:
            # Only where some bar reaches it: a line at 1 beside GPU bars of 0.02 would squash them.
            ax.axvline(1.0, color="grey", ls="--", lw=0.8)
            notes.append("dashed: real time")
        if log:
            # Within one device too: a 0.5 beside a 60 on one linear axis leaves the fast bars invisible.
            _plain_log_axis(ax)
            notes.append("log scale")
        ax.set_xlabel(f"RTF = compute / audio, 95% CI ({'; '.join(notes)})\n"
                      "beside each bar: x real time = audio / compute")
        for yi, xrt, x in zip(y, rows["xrt"].astype(float), right, strict=True):
            ax.annotate(f"{xrt:.3g}x", (x, yi), xytext=(4, 0), textcoords="offset points", va="center", fontsize=7,
                        color="#333333")
        # Room for those labels right of the longest bar.
        lo, hi = ax.get_xlim()
        ax.set_xlim(lo, hi * 2 if log else hi * 1.15)
    return svg_uri(fig)


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
    return svg_uri(fig)


def memory(df: pd.DataFrame) -> str | None:
    ok = _ok(df)
    if ok.empty:
        return None
    fig, ax, y = _config_axes(ok)
    ax.barh(y - 0.2, ok["peak_rss_mb"].fillna(0), height=0.4, label="peak RSS (host)")
    if ok["peak_vram_mb"].notna().any():
        ax.barh(y + 0.2, ok["peak_vram_mb"].fillna(0), height=0.4, label="peak VRAM (allocator)")
    ax.set_xlabel("MB")
    legend_below(ax)
    return svg_uri(fig)


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
        legend_below(ax)
    return svg_uri(fig)


def stages(df: pd.DataFrame) -> str | None:
    ok = _ok(df)
    if ok.empty:
        return None
    fig, panels = _per_device(ok, "generation_seconds")
    for i, (ax, rows, y) in enumerate(panels):
        left = np.zeros(len(rows))
        for col, label in (("encoder_prefill_s", "encoder + prefill"), ("decode_s", "decode loop"),
                           ("codec_decode_s", "codec decode")):
            vals = rows[col].fillna(0).to_numpy(dtype=float)
            ax.barh(y, vals, left=left, label=label)
            left += vals
        ax.set_xlabel("seconds per repeat (median)")
        if i == len(panels) - 1:
            legend_below(ax)
    return svg_uri(fig)


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
    return svg_uri(fig)


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
    return svg_uri(fig)


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
    return svg_uri(fig)


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
    return svg_uri(fig)
