"""Multi-scale products without Spark: block means against Grid.aggregate, the per-cell rules
(bounds, counts, QC OR, dominant environment), order independence, targets and their config.
(The Spark run end to end is in test_produce.py, beside the fixtures it shares.)"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from rasterio.windows import Window

from ssm_spark.config import load_config
from ssm_spark.errors import ConfigError
from ssm_spark.grid import Grid
from ssm_spark.product import aggregate as A
from ssm_spark.product.commit import product_hash
from ssm_spark.product.region import resolve_region

FINE = Grid.ease2(1, tile_size=32)


def _fine_rows(window: Window, seed: int = 7) -> tuple[pd.DataFrame, np.ndarray]:
    """Product rows over a window (holes, masked cells, two environments) and the ssm array."""
    rng = np.random.default_rng(seed)
    h, w = int(window.height), int(window.width)
    r, c = np.meshgrid(np.arange(window.row_off, window.row_off + h), np.arange(window.col_off, window.col_off + w),
                       indexing="ij")
    ssm = rng.uniform(0.05, 0.45, (h, w))
    ssm[rng.random((h, w)) < 0.3] = np.nan  # masked cells: a row with a null ssm
    present = rng.random((h, w)) > 0.1  # cells without a row (outside the region / acquisition)
    present[:5, :] = False
    qc = rng.choice([0, 1, 2, 8, 64, 1024], (h, w))
    env = np.where(c % 7 < 3, "crop_B", "forest_C").astype(object)
    env[rng.random((h, w)) < 0.02] = None
    rows = pd.DataFrame({"row": r[present], "col": c[present], "ssm": ssm[present],
                         "ssm_p05": ssm[present] - 0.03, "ssm_p95": ssm[present] + 0.05, "env": env[present],
                         "qc": qc[present].astype("i4")})
    rows["tile_row"], rows["tile_col"] = FINE.tile_of(rows["row"].to_numpy(), rows["col"].to_numpy())
    arr = np.where(present, ssm, np.nan)
    return rows, arr


@pytest.mark.parametrize("km,min_fraction", [(3, 0.0), (9, 0.5), (36, 0.2)])
def test_block_means_equal_grid_aggregate(km, min_fraction):
    # a window not aligned to fine tiles nor to coarse cells, over 3 x 4 fine tiles
    win = Window(4417 * 4 + 5, 1555 * 4 + 7, 100, 70)
    rows, arr = _fine_rows(win)
    (t,) = A.resolve_targets([f"ease2_{km}km"], FINE, min_fraction)
    assert t.factor == km and t.min_count == max(1, int(np.ceil(min_fraction * km * km)))
    got = A.aggregate_rows(rows.sample(frac=1.0, random_state=1), t)  # any input order
    mean, count, cwin = FINE.aggregate(arr, win, t.grid, min_count=t.min_count)
    cr, cc = got["row"].to_numpy() - cwin.row_off, got["col"].to_numpy() - cwin.col_off
    np.testing.assert_allclose(got["ssm"].to_numpy("f8"), mean[cr, cc], rtol=0, atol=1e-12, equal_nan=True)
    np.testing.assert_array_equal(got["n_valid"], count[cr, cc])
    np.testing.assert_allclose(got["frac_valid"], count[cr, cc] / km ** 2, rtol=0, atol=1e-15)
    assert got["ssm"].notna().sum() > 0 and (km == 3 or got["ssm"].isna().sum() > 0)
    # every coarse cell with a fine row is there, once, sorted
    fine_cells = set(zip(rows["row"] // km, rows["col"] // km))
    assert list(zip(got["row"], got["col"])) == sorted(fine_cells)
    np.testing.assert_array_equal(got["tile_row"], got["row"] // 32)
    np.testing.assert_array_equal(got["n_cells"], rows.groupby([rows["row"] // km, rows["col"] // km]).size().to_numpy())


def test_cell_rules_bounds_qc_env_and_order_independence():
    win = Window(17664, 6208, 64, 64)  # 2 x 2 fine tiles
    rows, _ = _fine_rows(win, seed=3)
    (t,) = A.resolve_targets(["ease2_9km"], FINE, 0.5)
    got = A.aggregate_rows(rows, t).set_index(["row", "col"])
    key = [rows["row"] // 9, rows["col"] // 9]
    ok = rows["ssm"].notna()
    g_ok = rows[ok].groupby([rows.loc[ok, "row"] // 9, rows.loc[ok, "col"] // 9])
    keep = got["n_valid"] >= t.min_count
    np.testing.assert_allclose(got.loc[keep, "ssm_p05"], g_ok["ssm_p05"].mean().loc[got.index[keep]], atol=1e-12)
    np.testing.assert_allclose(got.loc[keep, "ssm_p95"], g_ok["ssm_p95"].mean().loc[got.index[keep]], atol=1e-12)
    assert got.loc[~keep, ["ssm", "ssm_p05", "ssm_p95"]].isna().all().all() and (~keep).any()
    qc_or = rows.groupby(key)["qc"].agg(lambda q: np.bitwise_or.reduce(q.to_numpy()))
    np.testing.assert_array_equal(got["qc"], qc_or.loc[got.index])
    # dominant environment: most valid cells, then most cells, then the name
    for (r, c), env in got["env"].items():
        cell = rows[(rows["row"] // 9 == r) & (rows["col"] // 9 == c) & rows["env"].notna()]
        score = cell.groupby("env").agg(v=("ssm", "count"), n=("ssm", "size")).reset_index()
        best = score.sort_values(["v", "n", "env"], ascending=[False, False, True]).iloc[0]["env"]
        assert env == best
    assert set(got["env"]) == {"crop_B", "forest_C"}
    # the partials in any order give the same values, bit for bit (Spark delivers them in any order)
    parts = pd.concat([A.partials(g, [t], k) for k, g in rows.sort_values(["row", "col"]).groupby(["tile_row", "tile_col"])])
    a = A.combine(parts, t)
    b = A.combine(parts.sample(frac=1.0, random_state=5), t)
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert len(A.combine(parts.iloc[:0], t)) == 0 and list(A.combine(parts.iloc[:0], t)) == list(A.AGG_FILE_COLUMNS)


def test_targets_must_nest_and_be_coarser():
    t = A.resolve_targets(["ease2_3km", "ease2_36km"], FINE, 0.5)
    assert [(x.name, x.factor, x.min_count, x.grid.tile_size) for x in t] == [("ease2_3km", 3, 5, 32),
                                                                              ("ease2_36km", 36, 648, 32)]
    with pytest.raises(ConfigError, match=r"produce.aggregate: ease2_1km is not coarser .*grid.name=ease2_1km"):
        A.resolve_targets(["ease2_1km"], FINE, 0.5)
    with pytest.raises(ConfigError, match=r"produce.aggregate: 'ease2_3km' .*grid.name=ease2_9km.*does not nest"):
        A.resolve_targets(["ease2_3km"], Grid.ease2(9), 0.5)
    with pytest.raises(ConfigError, match=r"produce.aggregate: 'geo_0.1deg'.*does not nest"):
        A.resolve_targets(["geo_0.1deg"], FINE, 0.5)
    (g,) = A.resolve_targets(["geo_0.1deg"], Grid.geographic(0.01), 0.5)
    assert g.factor == 10
    # coarse tiles under fine tiles: a 3 km tile of 32 cells spans 96 fine columns (fine tiles 0-2, 2-5, ...)
    assert A.coarse_tiles(FINE, [(0, 0), (0, 8), (0, 9)], t[0]) == [(0, 0), (0, 2), (0, 3)]
    files = [(0, 2, "a"), (0, 0, "b"), (0, 3, "c")]  # 3 km tile 0: fine cols 0-95 = fine tiles 0-2; tile 1: 96-191
    assert A.aggregation_tasks(FINE, t, files) == [("ease2_3km", 0, 0, [(0, 0, "b"), (0, 2, "a")]),
                                                   ("ease2_3km", 0, 1, [(0, 3, "c")]),
                                                   ("ease2_36km", 0, 0, [(0, 0, "b"), (0, 2, "a"), (0, 3, "c")])]
    assert A.components("2024-04-01", ["ease2_9km"])[0].as_posix() == "agg/ease2_9km/parquet/date=2024-04-01"


def test_config_aggregate_off_by_default_and_in_the_product_hash():
    base = load_config(overrides=["grid.tile_size=32"])
    assert base.produce.aggregate == [] and "aggregate" not in base.produce.model_dump()  # hashes as before
    assert load_config(overrides=["grid.tile_size=32", "produce.aggregate_min_fraction=0.9"]).hash() == base.hash()
    on = load_config(overrides=["grid.tile_size=32", "produce.aggregate=[36, 9km, ease2_3km]"])
    assert on.produce.aggregate == ["ease2_3km", "ease2_9km", "ease2_36km"]  # finest first
    assert on.produce.model_dump()["aggregate_min_fraction"] == 0.5
    region = resolve_region(None, base, base.grid.build())
    h0, h1 = product_hash(base, region, "m"), product_hash(on, region, "m")
    assert h0 != h1
    frac = load_config(overrides=["grid.tile_size=32", "produce.aggregate=[9]", "produce.aggregate_min_fraction=0.8"])
    assert product_hash(frac, region, "m") not in (h0, h1)
    for bad, msg in [("[10]", "nested resolutions"), ("[9, ease2_9km]", "listed twice"), ("[mars_1km]", "unknown grid"),
                     ]:
        with pytest.raises(ConfigError, match=rf"produce.aggregate: .*{msg}"):
            load_config(overrides=[f"produce.aggregate={bad}"])
    with pytest.raises(ConfigError, match="produce.aggregate_min_fraction"):
        load_config(overrides=["produce.aggregate_min_fraction=1.5"])
