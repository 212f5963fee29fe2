"""Physics sanity on real Sentinel-1 data: 563 agricultural fields (Argentina, Australia, Vietnam).

``tests/data/s1_fields`` (in the repository; origin and licence in its SOURCE.md) holds real Sentinel-1
IW VV and VH field means (dB, terrain-corrected) with
the local incidence angle, paired with Sentinel-2 NDVI (oceanites/multifrequency-sar-ndvi-
relationship). There is no soil moisture, so these tests check what physics alone can promise: with
:data:`DEFAULT_WCM_PARAMS`, the vegetation correction and the inversions give finite values in
plausible ranges for most fields, and the QC flags land where the physics says they should.

Measured with the defaults on the 1295 (field, date) observations (the thresholds leave margin):

==============================================  ========  =========
quantity                                        measured  asserted
==============================================  ========  =========
mv_wcm finite                                   0.941     >= 0.90
mv_wcm in [0, 0.6] m3/m3, all                   0.774     >= 0.70
mv_wcm in [0, 0.6], sparse cover (NDVI <= 0.3)  0.947     >= 0.90
median mv_wcm                                   0.249     0.1-0.4
VEGETATION_DOMINATED (VV), NDVI <= 0.3          0.000     <= 0.02
VEGETATION_DOMINATED (VV), NDVI 0.3-0.6 / >0.6  0.017 / 0.295  increasing
Oh solution (VV+VH corrected), all              0.192     >= 0.12
Oh solution, NDVI <= 0.3 vs NDVI > 0.6          0.46 vs 0.055  > 3x
observed VH/VV above Oh's q_max                 0.866     >= 0.75
corr(mv_wcm, mv_oh) where both valid (n = 80)   0.40      > 0.2
==============================================  ========  =========

The Oh model cannot produce a cross-polarisation ratio above ``q_max(theta)`` (about -10.5 dB at
35-45 deg) while vegetated fields show -7 dB (canopy volume scattering): over dense canopies the Oh
inversion has no solution, and the code says so (NaN + ``OH_NO_SOLUTION``) instead of inventing one.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssm_spark.physics import oh
from ssm_spark.physics.features import coupled_features
from ssm_spark.physics.qc import QC

DATA = Path(__file__).resolve().parent / "data" / "s1_fields" / "extracted-values"   # copied, see SOURCE.md
FILES = sorted(DATA.glob("statistics-*-sentinel1-ndvi.csv"))


def test_the_field_data_ships_with_the_repository():
    assert len(FILES) == 3, f"real Sentinel-1 field data missing under {DATA} (it is part of the repository)"


@pytest.fixture(scope="module")
def fields() -> pd.DataFrame:
    keys = ["polygon_id", "date_s1"]
    frames = []
    for path in FILES:
        raw = pd.read_csv(path, index_col=0)
        raw = raw[raw["polarization"].isin(["VV", "VH"])]
        assert not raw.duplicated(keys + ["polarization"]).any(), path.name
        wide = raw.pivot(index=keys, columns="polarization", values="mean_s1").rename(
            columns={"VV": "vv_db", "VH": "vh_db"}
        )
        meta = raw.groupby(keys).agg(
            incidence_deg=("local_incidence_angle", "first"), ndvi=("mean_s2", "first")
        )
        df = wide.join(meta).reset_index()
        df["site"] = path.name.split("-")[1]
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    df.columns.name = None
    return df


@pytest.fixture(scope="module")
def result(fields) -> pd.DataFrame:
    return coupled_features(fields)


def has(out: pd.DataFrame, flag: QC) -> np.ndarray:
    return (out["qc"].to_numpy() & int(flag)) > 0


def test_data_is_what_we_expect(fields):
    assert fields.groupby("site").polygon_id.nunique().sum() == 563
    assert len(fields) == 1295
    assert fields[["vv_db", "vh_db", "incidence_deg", "ndvi"]].notna().all().all()
    assert fields.incidence_deg.between(30, 46).all()  # Sentinel-1 IW local angles


def test_no_spurious_flags(result):
    assert not has(result, QC.INCIDENCE_OUT_OF_RANGE).any()  # 33.8-44.2 deg, inside 10-70
    assert not has(result, QC.MISSING_INPUT).any()  # the data are complete


def test_vegetation_correction_is_plausible_for_most_fields(fields, result):
    mv = result["mv_wcm"].to_numpy()
    assert np.isfinite(mv).mean() >= 0.90
    plausible = (mv >= 0) & (mv <= 0.6)
    assert plausible.mean() >= 0.70
    sparse = (fields.ndvi > 0) & (fields.ndvi <= 0.3)
    assert plausible[sparse].mean() >= 0.90
    assert 0.1 <= np.nanmedian(mv) <= 0.4
    t2 = result[["tau2_vv", "tau2_vh"]].to_numpy()
    finite = t2[np.isfinite(t2)]
    assert finite.size >= 0.99 * t2.size
    assert finite.min() > 0.3 and finite.max() <= 1.0
    # flagged exactly where implausible
    finite_mv = np.isfinite(mv)
    np.testing.assert_array_equal(has(result, QC.WCM_MV_OUT_OF_RANGE), finite_mv & ~plausible)


def test_vegetation_dominated_only_under_dense_canopy(fields, result):
    dom = has(result, QC.VEGETATION_DOMINATED)
    bins = pd.cut(fields.ndvi, [0.0, 0.3, 0.6, 1.0])
    frac = pd.Series(dom).groupby(bins, observed=True).mean()
    assert frac.iloc[0] <= 0.02
    assert frac.iloc[0] < frac.iloc[1] < frac.iloc[2]
    # dominated means NaN soil term, never a clipped value
    vv_dom = dom & np.isnan(result["sigma0_soil_vv_db"].to_numpy())
    vh_dom = dom & np.isnan(result["sigma0_soil_vh_db"].to_numpy())
    np.testing.assert_array_equal(vv_dom | vh_dom, dom)


def test_open_water_ndvi_is_flagged(fields, result):
    water = (fields.ndvi < 0).to_numpy()  # flooded fields in the Mekong delta
    assert water.sum() == 4
    assert has(result, QC.VEGETATION_OUT_OF_RANGE)[water].all()
    assert not has(result, QC.VEGETATION_OUT_OF_RANGE)[~water].any()
    assert result["mv_wcm"][water].isna().all()


def test_oh_inversion_and_its_flags(fields, result):
    mv_oh = result["mv_oh"].to_numpy()
    solved = np.isfinite(mv_oh)
    assert solved.mean() >= 0.12
    sparse = (fields.ndvi > 0) & (fields.ndvi <= 0.3)
    dense = fields.ndvi > 0.6
    assert solved[sparse].mean() > 3 * solved[dense].mean()
    # the reason: observed cross-pol ratios exceed what the Oh model can produce
    above_qmax = (fields.vh_db - fields.vv_db) > 10 * np.log10(oh.q_max(fields.incidence_deg))
    assert above_qmax.mean() >= 0.75
    # every unsolved row with both soil terms is flagged OH_NO_SOLUTION, and only those
    both = np.isfinite(result["sigma0_soil_vv_db"]) & np.isfinite(result["sigma0_soil_vh_db"])
    np.testing.assert_array_equal(has(result, QC.OH_NO_SOLUTION), both.to_numpy() & ~solved)
    # solved values outside Oh's validity are flagged; inside, they are within it
    ks = result["ks_oh"].to_numpy()
    inside = solved & (ks > 0.13) & (ks < 6.98) & (mv_oh > 0.04) & (mv_oh < 0.291)
    np.testing.assert_array_equal(has(result, QC.OH_OUT_OF_RANGE) & solved, solved & ~inside)


def test_two_physics_retrievals_agree_in_sign(result):
    valid = (
        np.isfinite(result["mv_oh"]) & ~has(result, QC.OH_OUT_OF_RANGE) & np.isfinite(result["mv_wcm"])
    )
    assert valid.sum() >= 50
    r = np.corrcoef(result["mv_wcm"][valid], result["mv_oh"][valid])[0, 1]
    assert r > 0.2
