"""A self-contained HTML validation report (one file; plots are PNGs embedded in base64).

:func:`write_report` serves both jobs that report:

* ``train``: out-of-fold (cross-validation) predictions, the ``cv_metrics`` dict, and provenance
  (config hash, manifest id);
* ``validate``: a product-vs-in-situ table, without candidates or ``cv_metrics``.

Each section is drawn only from real inputs; a section whose inputs are missing is left out, never
filled with placeholders. The sections, in order (``<h2>`` headings):

``Provenance`` (always), ``Notes`` (``notes``), ``Estimated vs in situ`` (density scatter with the
1:1 line; needs the estimate and in situ), ``Metrics by environment and candidate (cross-validation)``
(``cv_metrics``), ``Metrics against in situ`` (pooled and per-station medians, overall, per network and
per environment; needs the predictions), ``Station time series`` (needs station and time columns),
``Selected models`` (a lon/lat map coloured by the selected candidate: ``selected_map``, or derived
from the predictions' stations and ``cv_metrics``), ``Uncertainty band coverage`` (held-out coverage of
p05-p95 per environment against the nominal 0.90: from the predictions' ``ssm_p05``/``ssm_p95``, else
from ``cv_metrics``).

Every metrics table ends with the figures of Li et al. (2025) (R = 0.851, ubRMSE = 0.058 m3/m3),
labelled as the paper's figures on the paper's data: a reference, not a result of this run.

The plots are in :mod:`ssm_spark.validation.plots`.
"""

from __future__ import annotations

import base64
import datetime as _dt
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.io import write_text_atomic
from ssm_spark.validation.plots import (UNIT, figure_png, plot_coverage, plot_density, plot_selection_map,
                                        plot_timeseries)
from ssm_spark.validation.plots import esc as _esc
from ssm_spark.validation.plots import fmt_value as _fmt
from ssm_spark.validation.scores import METRICS, PAPER_REFERENCE, summary

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_COLUMNS",
    "SECTION_TITLES",
    "render_report",
    "write_report",
    "plot_density",
    "plot_timeseries",
    "plot_selection_map",
    "plot_coverage",
    "figure_png",
]

#: Column roles of the predictions table and their default names (override with ``columns=``).
DEFAULT_COLUMNS: dict[str, str] = {
    "est": "ssm_est", "obs": "ssm", "p05": "ssm_p05", "p95": "ssm_p95", "station": "station_id",
    "time": "date", "env": "env", "network": "network", "lon": "lon", "lat": "lat",
}

#: Section keys and their headings.
SECTION_TITLES: dict[str, str] = {
    "provenance": "Provenance",
    "notes": "Notes",
    "scatter": "Estimated vs in situ",
    "cv_table": "Metrics by environment and candidate (cross-validation)",
    "insitu_table": "Metrics against in situ",
    "timeseries": "Station time series",
    "map": "Selected models",
    "coverage": "Uncertainty band coverage",
}


_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1100px;color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;border-bottom:2px solid #444;padding-bottom:.2em}
h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #bbb}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#eee}
td.l,th.l{text-align:left}
tr.ref td{background:#f6f2e4;font-style:italic}
tr.sel td{font-weight:600}
tr.grp td{border-top:2px solid #888}
p.cap{color:#555;font-size:.9em}
img{max-width:100%;height:auto;display:block;margin:.4em 0}
"""


# -- helpers --------------------------------------------------------------------------------------
def _img(png: bytes, alt: str) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{b64}">'


def _table(header: Sequence[str], rows: Iterable[tuple[Sequence[str], str] | str], left: int = 1) -> str:
    """HTML table; each row is (cells already escaped/formatted, css class) or a ready ``<tr>``."""
    th = "".join(f'<th class="l">{_esc(h)}</th>' if i < left else f"<th>{_esc(h)}</th>"
                 for i, h in enumerate(header))
    body = []
    for row in rows:
        if isinstance(row, str):
            body.append(row)
            continue
        cells, cls = row
        tds = "".join(f'<td class="l">{c}</td>' if i < left else f"<td>{c}</td>" for i, c in enumerate(cells))
        body.append(f'<tr class="{cls}">{tds}</tr>' if cls else f"<tr>{tds}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _reference_row(n_left: int, n_right_after: int, reference: Mapping[str, Any]) -> str:
    """Reference row: the label across the left columns, then R, ubRMSE, bias, RMSE, then blanks."""
    tds = f'<td class="l" colspan="{n_left}">{_esc(reference.get("label", "reference"))}</td>'
    tds += "".join(f"<td>{_fmt(reference.get(k))}</td>" for k in METRICS) + "<td></td>" * n_right_after
    return f'<tr class="ref">{tds}</tr>'


# -- sections -------------------------------------------------------------------------------------
def _section(key: str, body: str) -> str:
    return f'<section id="{key}"><h2>{_esc(SECTION_TITLES[key])}</h2>\n{body}\n</section>'


def _provenance(provenance: Mapping[str, Any] | None) -> str:
    from ssm_spark import __version__

    rows = []
    for k, v in dict(provenance or {}).items():
        txt = json.dumps(v, sort_keys=True, default=str) if isinstance(v, (dict, list, tuple)) else str(v)
        rows.append(([_esc(k), _esc(txt)], ""))
    rows.append((["ssm_spark version", _esc(__version__)], ""))
    rows.append((["generated (UTC)", _esc(_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S"))], ""))
    return _section("provenance", _table(["item", "value"], rows, left=2))


def _metric_cells(m: Mapping[str, Any]) -> list[str]:
    return [_fmt(m.get(k)) for k in METRICS] + [_fmt(m.get("n")), _fmt(m.get("stations"))]


def _cv_table(cv: Mapping[str, Any], reference: Mapping[str, Any] | None) -> str:
    header = ["environment", "model", "role", "R", f"ubRMSE ({UNIT})", f"bias ({UNIT})", f"RMSE ({UNIT})", "n",
              "stations", "coverage p05\u2013p95"]
    rows: list[tuple[list[str], str] | str] = []

    def block(name: str, ent: Mapping[str, Any], env_level: bool) -> None:
        sel = ent.get("selected")
        runner = ent.get("runner_up")
        role = "framework" if env_level else "selected model per environment"
        if sel:
            role += f" (selected: {sel}"
            role += f", level: {ent['level']})" if ent.get("level") else ")"
        fw = dict(ent.get("framework") or {})
        for k in ("n", "stations"):
            if fw.get(k) is None and ent.get(k) is not None:
                fw[k] = ent[k]
        cov = _fmt(ent.get("coverage_p05_p95"), 2) if env_level else ""
        if fw:
            rows.append(([_esc(name), "framework", _esc(role)] + _metric_cells(fw) + [cov], "grp sel"))
        first = not fw
        for cand, cm in (ent.get("candidates") or {}).items():
            r = "selected" if cand == sel else ("runner-up" if cand == runner else "")
            cls = ("grp " if first else "") + ("sel" if cand == sel else "")
            rows.append(([_esc(name) if first else "", _esc(cand), r] + _metric_cells(cm) + [""], cls.strip()))
            first = False

    if cv.get("overall"):
        block("overall", cv["overall"], env_level=False)
    for env in sorted(cv.get("environments") or {}):
        block(env, cv["environments"][env], env_level=True)
    if reference:
        rows.append(_reference_row(3, 3, reference))
    cap = ("Station-grouped cross-validation (out-of-fold predictions; no station in both training and test "
           "folds). <i>framework</i>: the model-selection module's result (the selected candidate per "
           "environment); the other rows are every candidate scored on the same folds. Coverage: fraction "
           "of held-out in-situ values inside the estimated p05\u2013p95 band (nominal 0.90).")
    if reference:
        cap += " The shaded last row gives the figures published by Li et al. (2025) on their own data; " \
               "it is a reference point, not a result of this run."
    return _section("cv_table", _table(header, rows, left=3) + f'<p class="cap">{cap}</p>')


def _insitu_table(summ: Mapping[str, Any], reference: Mapping[str, Any] | None) -> str:
    header = ["group", "name", "R", f"ubRMSE ({UNIT})", f"bias ({UNIT})", f"RMSE ({UNIT})", "n", "stations",
              "R (station median)", "ubRMSE (station median)", "bias (station median)", "RMSE (station median)",
              f"stations with n \u2265 {summ['min_n']}"]
    rows: list[tuple[list[str], str] | str] = []

    def add(group: str, name: str, ent: Mapping[str, Any], first: bool) -> None:
        p, md = ent["pooled"], ent["per_station_median"]
        cells = [_esc(group) if first else "", _esc(name)] + _metric_cells(p) + [_fmt(md.get(k)) for k in METRICS]
        cells.append(_fmt(md.get("stations")))
        rows.append((cells, "grp" if first else ""))

    add("overall", "all", summ["overall"], True)
    for key, label in (("networks", "network"), ("environments", "environment")):
        for i, name in enumerate(sorted(summ.get(key) or {})):
            add(label, name, summ[key][name], i == 0)
    if reference:
        rows.append(_reference_row(2, 7, reference))
    cap = ("Pooled: every pair of the group at once. Station median: the median over stations (with at least "
           f"{summ['min_n']} pairs) of each station's own metric, Entekhabi et al. (2010) conventions: "
           "bias = mean(estimate \u2212 in situ), ubRMSE = \u221a(RMSE\u00b2 \u2212 bias\u00b2).")
    if reference:
        cap += " The shaded last row gives the figures published by Li et al. (2025) on their own data; " \
               "it is a reference point, not a result of this run."
    return _section("insitu_table", _table(header, rows, left=2) + f'<p class="cap">{cap}</p>')


def _pick_stations(df: pd.DataFrame, cols: Mapping[str, str], k: int) -> list[Any]:
    """Up to k stations: the best-sampled station of each environment in turn (largest first), then
    the next best-sampled ones."""
    st = cols["station"]
    valid = df[np.isfinite(df[cols["est"]].to_numpy(float)) & np.isfinite(df[cols["obs"]].to_numpy(float))]
    counts = valid.groupby(st).size()
    counts = counts[counts >= 3].sort_values(ascending=False, kind="stable")
    if counts.empty:
        return []
    chosen: list[Any] = []
    if cols["env"] in valid.columns:
        env_of = valid.groupby(st)[cols["env"]].first()
        env_order = valid[cols["env"]].value_counts().index
        for env in env_order:
            cands = [s for s in counts.index if env_of.get(s) == env and s not in chosen]
            if cands:
                chosen.append(cands[0])
            if len(chosen) >= k:
                return chosen
    for s in counts.index:
        if len(chosen) >= k:
            break
        if s not in chosen:
            chosen.append(s)
    return chosen


def _coverage_table(pred: pd.DataFrame | None, cols: Mapping[str, str],
                    cv: Mapping[str, Any] | None) -> tuple[pd.DataFrame, str] | None:
    """Coverage per environment (plus 'all'): from the predictions' band when present (held out in a
    training run), else from cv_metrics."""
    if pred is not None and cols["p05"] in pred.columns and cols["p95"] in pred.columns:
        o = pred[cols["obs"]].to_numpy(float)
        lo = pred[cols["p05"]].to_numpy(float)
        hi = pred[cols["p95"]].to_numpy(float)
        ok = np.isfinite(o) & np.isfinite(lo) & np.isfinite(hi)
        if ok.any():
            inside = ((o >= lo) & (o <= hi))[ok]
            rows = []
            if cols["env"] in pred.columns:
                envs = pred[cols["env"]].to_numpy()[ok]
                for env in sorted(pd.unique(envs[pd.notna(envs)])):
                    sel = envs == env
                    rows.append({"env": str(env), "coverage": float(inside[sel].mean()), "n": int(sel.sum())})
            rows.append({"env": "all", "coverage": float(inside.mean()), "n": int(ok.sum())})
            return pd.DataFrame(rows), "the p05\u2013p95 columns of the predictions table"
    if cv:
        rows = []
        for env in sorted(cv.get("environments") or {}):
            ent = cv["environments"][env]
            c = ent.get("coverage_p05_p95")
            if c is not None and np.isfinite(float(c)):
                row = {"env": env, "coverage": float(c)}
                n = ent.get("n", (ent.get("framework") or {}).get("n"))
                if n is not None:
                    row["n"] = int(n)
                rows.append(row)
        if rows:
            t = pd.DataFrame(rows)
            if "n" in t.columns and t["n"].isna().any():
                t = t.drop(columns="n")
            return t, "cv_metrics (held-out cross-validation coverage)"
    return None


def _selection_frame(selected_map: pd.DataFrame | None, pred: pd.DataFrame | None, cols: Mapping[str, str],
                     cv: Mapping[str, Any] | None) -> tuple[pd.DataFrame, str] | None:
    if selected_map is not None:
        missing = [c for c in ("lon", "lat", "selected") if c not in selected_map.columns]
        if missing:
            raise InputError(f"write_report: selected_map lacks column(s) {missing} "
                             f"(has {list(selected_map.columns)}); it needs lon, lat, env, selected")
        return selected_map, "the selected-model table given to the report"
    envs = (cv or {}).get("environments") or {}
    need = [cols["station"], cols["lon"], cols["lat"], cols["env"]]
    if pred is None or not envs or any(c not in pred.columns for c in need):
        return None
    st = pred.groupby(cols["station"], sort=True).agg(lon=(cols["lon"], "first"), lat=(cols["lat"], "first"),
                                                       env=(cols["env"], "first")).reset_index()
    st["selected"] = [envs.get(e, {}).get("selected") for e in st["env"]]
    st = st[st["selected"].notna()]
    if st.empty:
        return None
    return st, "the validation stations, each with the candidate selected for its environment in cv_metrics"


# -- the report -----------------------------------------------------------------------------------
def render_report(predictions: pd.DataFrame | None = None, cv_metrics: Mapping[str, Any] | None = None,
                  selected_map: pd.DataFrame | None = None, *, title: str = "Surface soil moisture validation",
                  provenance: Mapping[str, Any] | None = None, notes: Sequence[str] = (),
                  columns: Mapping[str, str] | None = None,
                  candidate_cols: Sequence[str] | Mapping[str, str] = (),
                  stations: Sequence[Any] | None = None, max_stations: int = 4, nominal_coverage: float = 0.90,
                  min_n: int = 10, reference: Mapping[str, Any] | None = PAPER_REFERENCE) -> str:
    """The report as an HTML string; see :func:`write_report` for the parameters."""
    cols = {**DEFAULT_COLUMNS, **dict(columns or {})}
    cand = dict(candidate_cols) if isinstance(candidate_cols, Mapping) else {c: c for c in candidate_cols}
    pred = None
    if predictions is not None:
        missing = [cols[k] for k in ("est", "obs") if cols[k] not in predictions.columns]
        missing += [c for c in cand.values() if c not in predictions.columns]
        if missing:
            raise InputError(f"write_report: predictions lack column(s) {missing} (has {list(predictions.columns)}); "
                             "map yours with columns={'est': ..., 'obs': ...}")
        pred = predictions
    parts = [_provenance(provenance)]
    if notes:
        parts.append(_section("notes", "<ul>" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>"))
    has_pairs = pred is not None and bool(
        (np.isfinite(pred[cols["est"]].to_numpy(float)) & np.isfinite(pred[cols["obs"]].to_numpy(float))).any())

    if has_pairs:
        fig = plot_density(pred[cols["est"]].to_numpy(float), pred[cols["obs"]].to_numpy(float))
        parts.append(_section("scatter", _img(figure_png(fig), "density scatter of estimate against in situ") +
                              '<p class="cap">Every estimate/in-situ pair; colour: pairs per hexagon (log '
                              "scale); dashed: 1:1. Metrics (Entekhabi et al. 2010) pooled over all pairs.</p>"))
    if cv_metrics:
        parts.append(_cv_table(cv_metrics, reference))
    if has_pairs and cols["station"] in pred.columns:
        summ = summary(pred, est=cols["est"], obs=cols["obs"], station=cols["station"], network=cols["network"],
                       env=cols["env"], min_n=min_n)
        parts.append(_insitu_table(summ, reference))
    if has_pairs and cols["station"] in pred.columns and cols["time"] in pred.columns:
        ts = pred.assign(_t=pd.to_datetime(pred[cols["time"]]))
        chosen = list(stations) if stations is not None else _pick_stations(ts, cols, max_stations)
        unknown = [s for s in chosen if not (ts[cols["station"]] == s).any()]
        if unknown:
            raise InputError(f"write_report: station(s) {unknown} not in the predictions table")
        if chosen:
            fig = plot_timeseries(ts, chosen, cols, cand)
            band = "with its p05\u2013p95 band, " if cols["p05"] in pred.columns and cols["p95"] in pred.columns else ""
            how = ("the stations asked for" if stations is not None
                   else "chosen as the best-sampled station of each environment")
            parts.append(_section("timeseries", _img(figure_png(fig), "station time series") +
                                  f'<p class="cap">Estimate {band}and in situ at {len(chosen)} station(s), '
                                  f"{how}.</p>"))
    sel = _selection_frame(selected_map, pred, cols, cv_metrics)
    if sel is not None:
        frame, source = sel
        fig = plot_selection_map(frame)
        parts.append(_section("map", _img(figure_png(fig), "map of selected candidates") +
                              f'<p class="cap">Selected candidate by location, from {_esc(source)}.</p>'))
    cov = _coverage_table(pred, cols, cv_metrics)
    if cov is not None:
        table, source = cov
        fig = plot_coverage(table, nominal=nominal_coverage)
        parts.append(_section("coverage", _img(figure_png(fig), "coverage of the p05-p95 band") +
                              f'<p class="cap">Fraction of in-situ values inside the estimated p05\u2013p95 band, '
                              f"from {_esc(source)}; nominal {nominal_coverage:.2f} (dashed). Above it the band is "
                              "too wide, below it too narrow.</p>"))
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(title)}</title><style>{_CSS}</style></head>\n"
            f"<body><h1>{_esc(title)}</h1>\n{body}\n</body></html>\n")


def write_report(path: str | os.PathLike, predictions: pd.DataFrame | None = None,
                 cv_metrics: Mapping[str, Any] | None = None, selected_map: pd.DataFrame | None = None, *,
                 title: str = "Surface soil moisture validation", provenance: Mapping[str, Any] | None = None,
                 notes: Sequence[str] = (), columns: Mapping[str, str] | None = None,
                 candidate_cols: Sequence[str] | Mapping[str, str] = (), stations: Sequence[Any] | None = None,
                 max_stations: int = 4, nominal_coverage: float = 0.90, min_n: int = 10,
                 reference: Mapping[str, Any] | None = PAPER_REFERENCE) -> Path:
    """Write a self-contained HTML validation report, atomically (temporary file + rename).

    Sections whose inputs are missing are left out (see the module docstring).

    Parameters
    ----------
    path : str or path-like
        Output ``.html``; parent folders are created. An existing file is replaced atomically.
    predictions : pandas.DataFrame, optional
        One row per estimate/in-situ pair: out-of-fold predictions of a training run, or product vs in
        situ. Columns (names by role, see ``columns``): ``ssm_est``, ``ssm`` (required when given),
        ``station_id``, ``date``, ``lon``, ``lat``, ``env``, ``network``, ``ssm_p05``, ``ssm_p95``
        (each optional; its sections need it).
    cv_metrics : mapping, optional
        The training job's ``cv_metrics.json`` layout: ``{"overall": {"framework": {...},
        "candidates": {name: {...}}}, "environments": {env: {"framework", "candidates", "selected",
        "runner_up", "level", "n", "stations", "coverage_p05_p95"}}}``.
    selected_map : pandas.DataFrame, optional
        ``lon, lat, env, selected`` (stations or pixels). Without it, and with ``cv_metrics`` and
        station coordinates in ``predictions``, the map shows the validation stations.
    title : str
        Page title and heading.
    provenance : mapping, optional
        Shown as a table: config hash, manifest id, inputs, ...; the package version and the time of
        writing are added.
    notes : sequence of str
        Free remarks (for example "no incidence angle in the table: nominal 39 deg used").
    columns : mapping, optional
        Role -> column name overrides of :data:`DEFAULT_COLUMNS` (``est, obs, p05, p95, station, time,
        env, network, lon, lat``).
    candidate_cols : sequence of str or mapping, optional
        Columns of ``predictions`` holding each candidate's estimate (or a mapping name -> column),
        drawn as thin lines in the time series.
    stations : sequence, optional
        Stations for the time series; default: up to ``max_stations`` chosen by :func:`_pick_stations`.
    max_stations : int
        How many stations the time series shows by default.
    nominal_coverage : float
        Nominal coverage of the band (0.90 for p05-p95).
    min_n : int
        Minimum pairs for a station to count in the per-station medians.
    reference : mapping or None
        Reference row of the metrics tables (default: Li et al. 2025); None leaves it out.

    Returns
    -------
    pathlib.Path
        The written file.

    Raises
    ------
    InputError
        When ``predictions`` lacks the estimate or in-situ column, a named station or candidate column
        is missing, or ``selected_map`` lacks lon/lat/selected.
    """
    doc = render_report(predictions, cv_metrics, selected_map, title=title, provenance=provenance, notes=notes,
                        columns=columns, candidate_cols=candidate_cols, stations=stations,
                        max_stations=max_stations, nominal_coverage=nominal_coverage, min_n=min_n,
                        reference=reference)
    path = Path(path)
    n_bytes = write_text_atomic(path, doc, mode=0o644)
    log.info("validation report written to %s (%d bytes)", path, n_bytes)
    return path
