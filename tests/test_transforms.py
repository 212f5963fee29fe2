"""The Spark wrapper of the coupled physics gives exactly what the numpy/pandas kernel gives."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ssm_spark.physics.features import coupled_features
from ssm_spark.transforms import add_coupled_features

pytestmark = pytest.mark.spark


def _rows(n: int = 400, seed: int = 3) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({
        "station_id": [f"s{i % 17}" for i in range(n)],
        "vv_db": rng.uniform(-20, -5, n), "vh_db": rng.uniform(-28, -12, n),
        "incidence_deg": rng.uniform(29, 46, n), "ndvi": rng.uniform(0.05, 0.85, n),
        "env": rng.choice(["cropland_C", "forest_D", "shrubgrass_B", None], n),
        "qc": rng.choice([0, 8], n).astype("int32"),
    })


def test_spark_features_equal_the_kernel(spark):
    pdf = _rows()
    pdf.loc[5, "vv_db"] = np.nan
    want = coupled_features(pdf)
    got = add_coupled_features(spark.createDataFrame(pdf).repartition(3)).toPandas()
    got = got.sort_values(["station_id", "vv_db", "vh_db"], na_position="first").reset_index(drop=True)
    want = want.sort_values(["station_id", "vv_db", "vh_db"], na_position="first").reset_index(drop=True)
    assert list(got.columns) == list(want.columns)
    for c in want.columns:
        if c in ("station_id", "env"):
            assert got[c].tolist() == want[c].tolist()
        else:
            np.testing.assert_allclose(got[c].to_numpy(float), want[c].to_numpy(float), rtol=1e-12, equal_nan=True)
    # mask bits present in the input survive the physics
    assert ((got["qc"] & 8) == (want["qc"] & 8)).all() and (got["qc"] & 8).sum() > 0


def test_missing_vv_drops_the_vv_features(spark):
    pdf = _rows(50).drop(columns=["vv_db"])
    out = add_coupled_features(spark.createDataFrame(pdf))
    assert "sigma0_soil_vh_db" in out.columns and "mv_wcm" in out.columns
    assert "sigma0_soil_vv_db" not in out.columns and "mv_oh" not in out.columns
    assert out.count() == 50


def test_cell_climatology_does_not_depend_on_the_order_rows_arrive_in(spark):
    """A cell's rows reach its group in the shuffle's order, which varies between runs; the
    climatology (means and slopes are sums) must be the same to the last bit whatever the order."""
    from ssm_spark.config import ChangeDetectionConfig
    from ssm_spark.physics.change_detection import CLIM_COLUMNS
    from ssm_spark.transforms import add_cell_climatology

    rng = np.random.default_rng(11)
    dates = pd.date_range("2024-04-01", periods=40, freq="6D").date
    pdf = pd.DataFrame([{"row": r, "col": 0, "date": d, "vv_db": rng.uniform(-18, -6), "vh_db": rng.uniform(-26, -13),
                         "incidence_deg": rng.uniform(30, 45)} for r in range(3) for d in dates])
    cdc = ChangeDetectionConfig()
    cols = [c for c in CLIM_COLUMNS]

    def clim(frame: pd.DataFrame) -> pd.DataFrame:
        out = add_cell_climatology(spark.createDataFrame(frame).coalesce(1), cdc).toPandas()
        return out.sort_values(["row", "date"]).reset_index(drop=True)[[c for c in cols if c in out.columns]]

    ref = clim(pdf)
    for seed in (1, 2, 3):
        got = clim(pdf.sample(frac=1.0, random_state=seed).reset_index(drop=True))
        pd.testing.assert_frame_equal(got, ref, check_exact=True)
    assert ref["clim_mean_vv"].notna().all()
