"""A product against the simulator's held-apart truth, wall to wall (every land cell of every date).

The simulator keeps the true soil moisture of every cell in ``SIM/truth/<date>/<grid>_<tr>_<tc>.tif``
(never read by ingestion, training or production). :func:`product_vs_truth` streams a product
(``ssm-spark produce`` layout: ``PRODUCT/parquet/date=<date>/*.parquet`` with a ``_SUCCESS.json``
marker) date by date against it and reports:

- ``pooled``: R, ubRMSE, bias, RMSE, n over all (cell, date) pairs with an estimate (space and time
  together, as the in-situ validation pools stations);
- ``by_env``: the same per environment;
- ``spatial``: per date, the metrics across the region's cells (median and range over dates);
- ``temporal``: per cell, the metrics over its dates (cells with at least ``min_dates`` pairs),
  summarised by median and quartiles: the skill at following a cell's wetting and drying, which is
  what a station-based validation measures;
- ``coverage``: land cells (finite truth), cells with an estimate, masked cells, cells the product
  left without an estimate for another reason.

Memory: one date of the product and the truth, plus six float64 sums per cell of the truth's
bounding window (for the temporal metrics): 48 bytes per cell, 12 MB for the demo region.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import InputError
from ssm_spark.grid import Grid
from ssm_spark.validation.scores import metrics, metrics_from_sums, sums_by, to_jsonable

log = logging.getLogger(__name__)

__all__ = ["product_vs_truth"]


def _truth_tiles(day_dir: Path, grid: Grid) -> list[tuple[int, int, np.ndarray]]:
    import rasterio

    out = []
    for tif in sorted(day_dir.glob("*.tif")):
        with rasterio.open(tif) as src:
            a = src.read(1).astype("f8")
            t = src.transform
        r0 = round((grid.y0 - t.f) / grid.cell)
        c0 = round((t.c - grid.x0) / grid.cell)
        out.append((r0, c0, a))
    return out


def _read_product_date(product: Path, date: str) -> pd.DataFrame:
    import pyarrow.parquet as pq

    part = product / "parquet" / f"date={date}"
    files = sorted(part.glob("*.parquet"))
    if not files:
        return pd.DataFrame({"row": [], "col": [], "ssm": [], "env": [], "qc": []})
    return pd.concat([pq.read_table(f, columns=["row", "col", "ssm", "env", "qc"]).to_pandas() for f in files],
                     ignore_index=True)


def _summary(values: np.ndarray) -> dict[str, float | None]:
    v = values[np.isfinite(values)]
    if not v.size:
        return {"median": None, "p25": None, "p75": None}
    return {"median": float(np.median(v)), "p25": float(np.percentile(v, 25)), "p75": float(np.percentile(v, 75))}


def product_vs_truth(product: str | Path, sim: str | Path, grid: Grid, *, min_dates: int = 10) -> dict[str, Any]:
    """Compare a product with the simulated truth (see the module docstring).

    Parameters
    ----------
    product : path-like
        Product folder of ``ssm-spark produce`` (only committed dates, with a marker, are read).
    sim : path-like
        Simulator output folder (with ``truth/``).
    grid : Grid
        The product's grid.
    min_dates : int
        Minimum pairs for a cell's temporal metrics.

    Raises
    ------
    InputError
        When ``sim/truth`` is missing or no product date has a truth date.
    """
    product, sim = Path(product), Path(sim)
    truth_root = sim / "truth"
    if not truth_root.is_dir():
        raise InputError(f"{truth_root}: no simulated truth here (is {sim} a `ssm-spark simulate` output?)")
    dates = sorted(p.parent.name.split("=", 1)[1] for p in (product / "parquet").glob("date=*/_SUCCESS.json"))
    dates = [d for d in dates if (truth_root / d).is_dir()]
    if not dates:
        raise InputError(f"{product}: no committed product date has a truth date in {truth_root}")
    env_sums: list[pd.DataFrame] = []
    spatial: dict[str, dict] = {}
    acc = None  # per-cell sums over the truth window
    cov = {"land_cell_dates": 0, "estimated": 0, "masked": 0, "no_estimate_other": 0, "outside_product": 0}
    for date in dates:
        tiles = _truth_tiles(truth_root / date, grid)
        r0 = min(t[0] for t in tiles)
        c0 = min(t[1] for t in tiles)
        h = max(t[0] + t[2].shape[0] for t in tiles) - r0
        w = max(t[1] + t[2].shape[1] for t in tiles) - c0
        if acc is None:
            win = (r0, c0, h, w)
            acc = {k: np.zeros((h, w)) for k in ("n", "e", "o", "ee", "oo", "eo")}
        elif (r0, c0, h, w) != win:
            raise InputError(f"{truth_root / date}: truth tiles cover a different window than the first date's")
        truth = np.full((h, w), np.nan)
        for tr0, tc0, a in tiles:
            truth[tr0 - r0:tr0 - r0 + a.shape[0], tc0 - c0:tc0 - c0 + a.shape[1]] = a
        prod = _read_product_date(product, date)
        rr = prod["row"].to_numpy(np.int64) - r0
        cc = prod["col"].to_numpy(np.int64) - c0
        inside = (rr >= 0) & (rr < h) & (cc >= 0) & (cc < w)
        prod, rr, cc = prod[inside], rr[inside], cc[inside]
        est = np.full((h, w), np.nan)
        est[rr, cc] = prod["ssm"].to_numpy("f8")
        masked = np.zeros((h, w), dtype=bool)
        masked[rr, cc] = (prod["qc"].to_numpy(np.int64) & MASK_BITS) != 0
        in_prod = np.zeros((h, w), dtype=bool)
        in_prod[rr, cc] = True
        land = np.isfinite(truth)
        ok = land & np.isfinite(est)
        cov["land_cell_dates"] += int(land.sum())
        cov["estimated"] += int(ok.sum())
        cov["masked"] += int((land & masked).sum())
        cov["no_estimate_other"] += int((land & in_prod & ~masked & ~np.isfinite(est)).sum())
        cov["outside_product"] += int((land & ~in_prod).sum())
        e, o = np.where(ok, est, 0.0), np.where(ok, truth, 0.0)
        acc["n"] += ok
        acc["e"] += e
        acc["o"] += o
        acc["ee"] += e * e
        acc["oo"] += o * o
        acc["eo"] += e * o
        spatial[date] = metrics(est[ok], truth[ok])
        pairs = pd.DataFrame({"env": prod["env"].fillna("unknown").to_numpy(dtype=object), "ssm_est": prod["ssm"].to_numpy("f8"),
                              "ssm": truth[rr, cc]})
        env_sums.append(sums_by(pairs, "env"))
    sums = pd.concat(env_sums).groupby("env", as_index=False).sum(numeric_only=True)
    pooled = metrics_from_sums(sums.drop(columns="env").sum().to_frame().T)
    by_env = metrics_from_sums(sums)
    n = acc["n"]
    cells = n >= min_dates
    with np.errstate(invalid="ignore", divide="ignore"):
        cell_m = metrics_from_sums({"n": n[cells], "s_e": acc["e"][cells], "s_o": acc["o"][cells],
                                    "s_ee": acc["ee"][cells], "s_oo": acc["oo"][cells], "s_eo": acc["eo"][cells]})
    out = {
        "dates": len(dates), "first": dates[0], "last": dates[-1],
        "pooled": {k: float(np.asarray(v).reshape(-1)[0]) for k, v in pooled.items()},
        "by_env": {str(e): {k: float(np.asarray(by_env[k])[i]) for k in by_env} for i, e in enumerate(sums["env"])},
        "spatial": {k: _summary(np.array([spatial[d][k] for d in dates], dtype=float)) for k in ("R", "ubRMSE", "bias")},
        "temporal": {"cells": int(cells.sum()), "min_dates": min_dates,
                     **{k: _summary(np.asarray(cell_m[k], dtype=float)) for k in ("R", "ubRMSE", "bias")}},
        "coverage": {**cov, "fraction_estimated": round(cov["estimated"] / cov["land_cell_dates"], 6)
                     if cov["land_cell_dates"] else None},
    }
    p = out["pooled"]
    log.info("product vs truth: %d dates, pooled R=%.3f ubRMSE=%.4f (n=%d); per-cell temporal median R=%s; "
             "%.1f%% of land cell-dates estimated", len(dates), p["R"], p["ubRMSE"], p["n"],
             out["temporal"]["R"]["median"], 100 * (out["coverage"]["fraction_estimated"] or 0))
    return to_jsonable(out)
