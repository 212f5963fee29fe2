"""The validation report's plots: matplotlib's object API on the Agg canvas (no pyplot state, no
display needed), each a function of plain tables returning a Figure; :func:`figure_png` renders one.

Used by :mod:`ssm_spark.validation.report`, which embeds them as PNGs.
"""

from __future__ import annotations

import html
import io
import math
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from ssm_spark.validation.scores import metrics

__all__ = ["plot_density", "plot_timeseries", "plot_selection_map", "plot_coverage", "figure_png", "UNIT",
           "esc", "fmt_value"]

UNIT = "m\u00b3/m\u00b3"


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt_value(x: Any, digits: int = 3) -> str:
    if x is None:
        return "\u2014"
    if isinstance(x, (bool, np.bool_)):
        return str(x)
    if isinstance(x, (int, np.integer)):
        return f"{int(x):,}"
    try:
        f = float(x)
    except (TypeError, ValueError):
        return esc(x)
    if not math.isfinite(f):
        return "\u2014"
    txt = f"{f:.{digits}f}"
    return txt[1:] if txt.startswith("-") and float(txt) == 0 else txt


def figure_png(fig: Any, dpi: int = 110) -> bytes:
    """PNG bytes of a matplotlib Figure, rendered on the Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def _fig(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def plot_density(est: np.ndarray, obs: np.ndarray, title: str = "", gridsize: int = 60) -> Any:
    """Density scatter (hexbin, log counts) of estimate against in situ with the 1:1 line and the
    metrics in the legend.

    Returns
    -------
    matplotlib.figure.Figure
    """
    e = np.asarray(est, dtype=np.float64)
    o = np.asarray(obs, dtype=np.float64)
    ok = np.isfinite(e) & np.isfinite(o)
    e, o = e[ok], o[ok]
    m = metrics(e, o)
    hi = max(float(np.max(e)), float(np.max(o)), 0.05)
    lo = min(float(np.min(e)), float(np.min(o)), 0.0)
    hi = math.ceil(hi / 0.05) * 0.05
    lo = math.floor(lo / 0.05) * 0.05
    fig = _fig(6.2, 5.2)
    ax = fig.add_subplot()
    hb = ax.hexbin(o, e, gridsize=gridsize, bins="log", mincnt=1, cmap="viridis", extent=(lo, hi, lo, hi),
                   linewidths=0.0)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import LogFormatter

    cb = fig.colorbar(hb, ax=ax, label="pairs per hexagon (log scale)")
    cb.ax.yaxis.set_major_formatter(LogFormatter())
    cb.ax.yaxis.set_minor_formatter(LogFormatter(labelOnlyBase=False, minor_thresholds=(1.5, 0.5)))

    (one,) = ax.plot([lo, hi], [lo, hi], color="#d62728", lw=1.2, ls="--")
    blank = Line2D([], [], ls="none")
    labels = ["1:1", f"R = {fmt_value(m['R'])}", f"ubRMSE = {fmt_value(m['ubRMSE'])} {UNIT}",
              f"bias = {fmt_value(m['bias'])} {UNIT}", f"RMSE = {fmt_value(m['RMSE'])} {UNIT}", f"n = {m['n']:,}"]
    ax.legend([one] + [blank] * 5, labels, loc="upper left", frameon=True, framealpha=0.9, fontsize=9,
              handlelength=1.5)
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_aspect("equal")
    ax.set_xlabel(f"in situ SSM ({UNIT})")
    ax.set_ylabel(f"estimated SSM ({UNIT})")
    ax.grid(True, lw=0.4, alpha=0.5)
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def plot_timeseries(df: pd.DataFrame, stations: Sequence[Any], cols: Mapping[str, str],
                    candidate_cols: Mapping[str, str] | None = None) -> Any:
    """One panel per station: the estimate with its p05-p95 band (when present), candidate
    estimates (thin lines, when given) and in situ (dots).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.dates as mdates

    candidate_cols = dict(candidate_cols or {})
    has_band = cols["p05"] in df.columns and cols["p95"] in df.columns
    fig = _fig(10.0, 2.3 * len(stations) + 0.4)
    axes = fig.subplots(len(stations), 1, squeeze=False, sharey=True)[:, 0]
    for ax, st in zip(axes, stations):
        s = df[df[cols["station"]] == st].sort_values("_t")
        t = s["_t"].to_numpy()
        if has_band:
            ax.fill_between(t, s[cols["p05"]].to_numpy(float), s[cols["p95"]].to_numpy(float), color="#1f77b4",
                            alpha=0.22, lw=0, label="estimate p05\u2013p95")
        ax.plot(t, s[cols["est"]].to_numpy(float), color="#1f77b4", lw=1.3, label="estimate")
        for i, (name, c) in enumerate(candidate_cols.items()):
            ax.plot(t, s[c].to_numpy(float), lw=0.7, alpha=0.8, color=f"C{(i + 2) % 10}", label=name)
        ax.plot(t, s[cols["obs"]].to_numpy(float), "o", ms=2.8, color="black", label="in situ")
        m = metrics(s[cols["est"]].to_numpy(float), s[cols["obs"]].to_numpy(float))
        parts = [str(st)]
        for key in ("network", "env"):
            if cols[key] in s.columns and s[cols[key]].notna().any():
                parts.append(str(s[cols[key]].dropna().iloc[0]))
        ax.set_title(f"{' | '.join(parts)}    R = {fmt_value(m['R'], 2)}, ubRMSE = {fmt_value(m['ubRMSE'])}, "
                     f"bias = {fmt_value(m['bias'])}, n = {m['n']}", fontsize=9.5, loc="left")
        ax.set_ylabel(f"SSM ({UNIT})", fontsize=9)
        ax.grid(True, lw=0.4, alpha=0.5)
        loc = mdates.AutoDateLocator()
        ax.xaxis.set_major_locator(loc)
        ax.xaxis.set_major_formatter(mdates.ConciseDateFormatter(loc))
    axes[0].legend(loc="upper right", fontsize=8, ncol=3 + len(candidate_cols), framealpha=0.9)
    return fig


def plot_selection_map(sel: pd.DataFrame, lon: str = "lon", lat: str = "lat", selected: str = "selected",
                       env: str = "env", max_points: int = 200_000, seed: int = 0, title: str = "") -> Any:
    """Scatter of lon/lat coloured by the selected candidate (legend with counts); with an ``env``
    column of at most 10 environments, the marker shows the environment. More than ``max_points``
    rows are thinned by a seeded random sample, for drawing only (the counts are of all rows).

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.lines import Line2D

    keep = [lon, lat, selected] + ([env] if env in sel.columns else [])
    d = sel[keep].dropna(subset=[lon, lat]).copy()
    d["_sel"] = d[selected].fillna("(none)").astype(str)
    total = d["_sel"].value_counts()
    if len(d) > max_points:
        d = d.sample(max_points, random_state=int(np.random.default_rng(seed).integers(2**31)))
    cats = sorted(total.index)
    colour = {c: f"C{i % 10}" for i, c in enumerate(cats)}
    envs = sorted(d[env].dropna().astype(str).unique()) if env in d.columns else []
    markers = "osD^vPX*<>"
    marker = {e: markers[i] for i, e in enumerate(envs)} if 0 < len(envs) <= len(markers) else {}
    d["_env"] = d[env].astype(str) if marker else ""
    fig = _fig(8.5, 5.2)
    ax = fig.add_subplot()
    size = 30 if len(d) < 2000 else (8 if len(d) < 50_000 else 2)
    edge = "white" if size > 10 else "none"
    for (c, e), pts in d.groupby(["_sel", "_env"], sort=True):
        ax.scatter(pts[lon], pts[lat], s=size, color=colour[c], marker=marker.get(e, "o"), edgecolors=edge,
                   linewidths=0.4)
    mean_lat = float(np.clip(np.nanmean(d[lat]), -80, 80)) if len(d) else 0.0
    ax.set_aspect(1.0 / math.cos(math.radians(mean_lat)))
    ax.set_xlabel("longitude (\u00b0)")
    ax.set_ylabel("latitude (\u00b0)")
    ax.grid(True, lw=0.4, alpha=0.5)
    handles = [Line2D([], [], ls="none", marker="s", ms=8, color=colour[c]) for c in cats]
    leg = ax.legend(handles, [f"{c} ({total[c]:,})" for c in cats], title="selected candidate", fontsize=8.5,
                    title_fontsize=9, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    if marker:
        ax.add_artist(leg)
        eh = [Line2D([], [], ls="none", marker=marker[e], ms=7, color="#555") for e in envs]
        ax.legend(eh, envs, title="environment", fontsize=8.5, title_fontsize=9, loc="lower left",
                  bbox_to_anchor=(1.01, 0.0))
    if title:
        ax.set_title(title, fontsize=11)
    return fig


def plot_coverage(cov: pd.DataFrame, nominal: float = 0.90, title: str = "") -> Any:
    """Bars of the empirical coverage of the p05-p95 band per environment, with the nominal line.

    Parameters
    ----------
    cov : pandas.DataFrame
        Columns ``env``, ``coverage`` (0-1) and optionally ``n`` (written above the bars).

    Returns
    -------
    matplotlib.figure.Figure
    """
    fig = _fig(max(5.0, 0.75 * len(cov) + 2.5), 4.0)
    ax = fig.add_subplot()
    x = np.arange(len(cov))
    vals = cov["coverage"].to_numpy(float)
    colors = ["#7f7f7f" if name == "all" else "#1f77b4" for name in cov["env"]]
    ax.bar(x, vals, color=colors, width=0.7)
    ax.axhline(nominal, color="#d62728", ls="--", lw=1.2, label=f"nominal {nominal:.2f}")
    ns = cov["n"] if "n" in cov.columns else [None] * len(cov)
    for xi, v, n in zip(x, vals, ns):
        if not np.isfinite(v):
            continue
        txt = f"{v:.2f}" + (f"\nn={int(n):,}" if n is not None and n == n else "")
        inside = v > 0.25
        ax.text(xi, v - 0.03 if inside else v + 0.02, txt, ha="center", va="top" if inside else "bottom",
                fontsize=8, color="white" if inside else "black")
    tilt = len(cov) > 5
    ax.set_xticks(x, [str(e) for e in cov["env"]], rotation=35 if tilt else 0, ha="right" if tilt else "center",
                  fontsize=8.5)
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("fraction of in situ within p05\u2013p95")
    ax.legend(loc="upper right", fontsize=8.5)
    ax.grid(True, axis="y", lw=0.4, alpha=0.5)
    if title:
        ax.set_title(title, fontsize=11)
    return fig
