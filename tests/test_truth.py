"""A product against the simulated truth (ssm_spark.validation.truth): known answers on hand-made
truth GeoTIFFs and product Parquet; the demo's station hold-out."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.transform import from_origin

from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import InputError
from ssm_spark.grid import Grid
from ssm_spark.demo import holdout_stations
from ssm_spark.validation import metrics
from ssm_spark.validation.truth import product_vs_truth

GRID = Grid.ease2(1)
R0, C0, N = 2048, 17408, 8  # an 8 x 8 window, two 8 x 4 "tiles"
DATES = [f"2024-04-{d:02d}" for d in range(1, 13)]


def _write_truth(sim: Path, date: str, a: np.ndarray) -> None:
    d = sim / "truth" / date
    d.mkdir(parents=True)
    for k, c in enumerate((C0, C0 + 4)):
        t = from_origin(GRID.x0 + c * GRID.cell, GRID.y0 - R0 * GRID.cell, GRID.cell, GRID.cell)
        with rasterio.open(d / f"t{k}.tif", "w", driver="GTiff", width=4, height=N, count=1, dtype="float32",
                           crs="EPSG:6933", transform=t, nodata=np.nan) as dst:
            dst.write(a[:, 4 * k:4 * k + 4].astype("f4"), 1)


def _write_product(prod: Path, date: str, rows: pd.DataFrame) -> None:
    d = prod / "parquet" / f"date={date}"
    d.mkdir(parents=True)
    rows.to_parquet(d / "part.parquet", index=False)
    (d / "_SUCCESS.json").write_text(json.dumps({"date": date}))


@pytest.fixture
def case(tmp_path: Path):
    """Truth in [0.05, 0.45]; one water cell (NaN truth); estimate = 2 * truth - 0.1 (so per cell
    R = 1), one masked cell, one cell the product lacks; a last date without a marker."""
    rng = np.random.default_rng(3)
    sim, prod = tmp_path / "sim", tmp_path / "prod"
    truths, ests = [], []
    for i, date in enumerate(DATES + ["2024-04-30"]):
        a = rng.uniform(0.05, 0.45, (N, N)).astype("f4").astype("f8")  # as the GeoTIFF holds it
        a[0, 0] = np.nan
        _write_truth(sim, date, a)
        rr, cc = np.meshgrid(np.arange(N), np.arange(N), indexing="ij")
        keep = ~((rr == 7) & (cc == 7))  # not in the product
        est = 2 * a - 0.1
        qc = np.zeros((N, N), dtype=np.int32)
        qc[3, 3] = int(MASK_BITS) & -int(MASK_BITS)  # the lowest mask bit
        est[3, 3] = np.nan
        rows = pd.DataFrame({"row": (rr[keep] + R0).astype("i4"), "col": (cc[keep] + C0).astype("i4"),
                             "ssm": est[keep], "env": np.where(cc[keep] < 4, "a", "b"), "qc": qc[keep]})
        if date != "2024-04-30":
            _write_product(prod, date, rows)
            truths.append(a)
            ests.append(np.where(keep, est, np.nan))
        else:  # uncommitted: files but no marker
            d = prod / "parquet" / f"date={date}"
            d.mkdir(parents=True)
            rows.to_parquet(d / "part.parquet", index=False)
    return sim, prod, np.array(truths), np.array(ests)


def test_known_answers(case):
    sim, prod, truth, est = case
    out = product_vs_truth(prod, sim, GRID, min_dates=10)
    assert out["dates"] == len(DATES) and out["last"] == DATES[-1]  # the unmarked date is not read
    ok = np.isfinite(truth) & np.isfinite(est)
    want = metrics(est[ok], truth[ok])
    for k in ("R", "ubRMSE", "bias", "RMSE"):
        assert out["pooled"][k] == pytest.approx(want[k], rel=1e-9, abs=1e-12)
    assert out["pooled"]["n"] == ok.sum() == len(DATES) * (64 - 3)
    a = ok[:, :, :4]
    want_a = metrics(est[:, :, :4][a], truth[:, :, :4][a])
    assert out["by_env"]["a"]["ubRMSE"] == pytest.approx(want_a["ubRMSE"], rel=1e-9)
    # per cell: est = 2 truth - 0.1 exactly, so R = 1 and bias = mean(truth) - 0.1 per cell
    assert out["temporal"]["cells"] == 64 - 3
    assert out["temporal"]["R"]["median"] == pytest.approx(1.0, abs=1e-9)
    cell_bias = (np.where(ok, est - truth, 0).sum(axis=0) / np.maximum(ok.sum(axis=0), 1))[ok[0]]
    assert out["temporal"]["bias"]["median"] == pytest.approx(np.median(cell_bias), rel=1e-9)
    assert out["spatial"]["R"]["median"] == pytest.approx(1.0, abs=1e-9)
    cov = out["coverage"]
    assert cov == {"land_cell_dates": 63 * len(DATES), "estimated": 61 * len(DATES), "masked": len(DATES),
                   "no_estimate_other": 0, "outside_product": len(DATES),
                   "fraction_estimated": round(61 / 63, 6)}


def test_min_dates_and_errors(case, tmp_path):
    sim, prod, *_ = case
    assert product_vs_truth(prod, sim, GRID, min_dates=len(DATES) + 1)["temporal"]["cells"] == 0
    with pytest.raises(InputError, match="no simulated truth"):
        product_vs_truth(prod, tmp_path / "nowhere", GRID)
    empty = tmp_path / "empty"
    (empty / "parquet").mkdir(parents=True)
    with pytest.raises(InputError, match="no committed product date"):
        product_vs_truth(empty, sim, GRID)


def test_holdout_stations_is_deterministic_and_stable():
    ids = [f"SIM.S{i:03d}" for i in range(400)]
    held = holdout_stations(ids, 0.2)
    assert held == holdout_stations(list(reversed(ids)), 0.2)
    assert 0.15 < len(held) / len(ids) < 0.25
    # a station's side does not depend on the others
    assert set(holdout_stations(ids[:100], 0.2)) == set(held) & set(ids[:100])
    assert holdout_stations(ids, 0.0) == []
