"""The change-detection climatology stack: values equal to the pandas climatology of the same pixel
rows, the tile GeoTIFF layout, reuse without recompute, keys that follow the window, and produce
with a change-detection registry (rows get finite relative wetness, a date outside the window
included; a changed climatology recomputes a date)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio
import rasterio.windows

from ssm_spark.config import load_config
from ssm_spark.environments import MASK_BITS
from ssm_spark.physics.change_detection import CLIM_COLUMNS, climatology_frame
from ssm_spark.physics.qc import QC
from ssm_spark.product import produce as P
from ssm_spark.product.climatology import ClimatologyStack, build_climatology, climatology_key
from ssm_spark.transforms import cd_kwargs, cd_window
from regions import trained_region

# 2 x 2 tiles of 32 cells, 6 dates (2024-04-01 .. 2024-05-01 every 6 days)
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=2",
         "train.candidates=[change_detection, xgb_coupled, global]", "physics.change_detection.min_dates=4"]
WINDOW = ["physics.change_detection.window_end=2024-04-25"]  # 5 dates; 2024-05-01 lies outside
LAST = "2024-05-01"


@pytest.fixture(scope="module")
def cd_small(spark, tmp_path_factory):
    """A small simulated region with a registry trained on matchups that carry the cells' climatology."""
    from ssm_spark.models.registry import load_registry

    root = tmp_path_factory.mktemp("climatology")
    cfg = load_config(overrides=SMALL)
    trained_region(spark, cfg, root)
    assert load_registry(root / "models").wcm_params.get("cd"), "the registry has no change-detection calibration"
    return cfg, root


def _pixels(cfg, stacks: Path) -> pd.DataFrame:
    from ssm_spark.sources.stacks import discover, read_file_cells

    grid = cfg.grid.build()
    inv = discover(stacks, grid, stacks.parent / "static")
    return pd.concat([read_file_cells(f, grid) for f in inv.files], ignore_index=True)


def _stack_frame(summary: dict, grid) -> pd.DataFrame:
    """Every cell of a built stack as rows (row, col, CLIM_COLUMNS)."""
    out = []
    for tr, tc in summary["tiles_with_files"]:
        with rasterio.open(Path(summary["folder"]) / f"{grid.name}_{tr}_{tc}.tif") as src:
            a = src.read()
            assert src.descriptions == CLIM_COLUMNS and src.dtypes[0] == "float32" and np.isnan(src.nodata)
            assert src.crs.to_epsg() == 6933 and src.transform == grid.tile_transform(tr, tc)
            assert src.tags()["clim_key"] == summary["key"] and src.tags()["clim_status"] == "complete"
        w = grid.tile_window(tr, tc)
        r, c = np.meshgrid(np.arange(w.row_off, w.row_off + w.height), np.arange(w.col_off, w.col_off + w.width),
                           indexing="ij")
        out.append(pd.DataFrame({"row": r.ravel(), "col": c.ravel(),
                                 **{n: a[i].ravel().astype("f8") for i, n in enumerate(CLIM_COLUMNS)}}))
    return pd.concat(out, ignore_index=True)


def _assert_equal_to_pandas(stack: pd.DataFrame, px: pd.DataFrame, cfg) -> None:
    cdc = cfg.physics.change_detection
    want = climatology_frame(px, ["row", "col"], window=cd_window(cdc), **cd_kwargs(cdc))
    got = want[["row", "col"]].merge(stack, on=["row", "col"], how="left", validate="one_to_one")
    assert len(want) == 64 * 64 and np.isfinite(want["clim_dry_vv"]).mean() > 0.9
    for c in CLIM_COLUMNS:
        np.testing.assert_allclose(got[c].to_numpy(), want[c].to_numpy(), rtol=0, atol=1e-5, equal_nan=True,
                                   err_msg=c)


def test_tile_series_of_files_across_tiles_equals_the_pixel_rows(tmp_path):
    """Stack files that are not grid tiles (a 6 x 6 file over four 4 x 4 tiles, shifted by 2 cells),
    values out of range, +inf, a declared numeric nodata, cells without acquisition and a file
    without incidence: each tile's
    climatology (kernel by blocks) equals climatology_frame on the stack reader's pixel rows."""
    from ssm_spark.grid import Grid
    from ssm_spark.product.climatology_tiles import tile_climatology, tile_series
    from ssm_spark.sources.stacks import StackFile, check_raster, read_file_cells

    grid = Grid.ease2(1, tile_size=4)
    r_off, c_off = 2048 + 2, 17408 + 2
    rng = np.random.default_rng(7)
    files = []
    for k in range(7):
        date = f"2024-04-{k + 1:02d}"
        names = ["vv_db", "vh_db"] + ([] if k == 3 else ["incidence_deg"])
        a = np.stack([rng.normal(-11, 2, (6, 6)), rng.normal(-18, 2, (6, 6)), rng.uniform(30, 46, (6, 6))])[:len(names)]
        a[0, 0, :2] = np.nan
        a[1, 0, :2] = np.nan  # no acquisition there
        a[0, 5, 5], a[1, 4, 4] = 9.0, np.inf  # out of range, infinite
        nodata = 0.0 if k == 5 else float("nan")
        if k == 5:
            a[2, 3, 3] = 0.0  # the declared nodata value: missing, though within the valid range
        path = tmp_path / date / "f.tif"
        path.parent.mkdir()
        with rasterio.open(path, "w", driver="GTiff", width=6, height=6, count=len(names), dtype="float32",
                           crs=grid.crs, transform=grid.window_transform(rasterio.windows.Window(c_off, r_off, 6, 6)),
                           nodata=nodata) as dst:
            dst.write(a.astype("f4"))
            dst.descriptions = names
        win, bands = check_raster(path, grid)
        files.append(StackFile(date, str(path), *win, {**bands, "ndvi": 1}))
    px = pd.concat([read_file_cells(f, grid) for f in files], ignore_index=True)
    kw = {"dry_percentile": 10.0, "wet_percentile": 90.0, "min_dates": 4, "min_spread_deg": 3.0}
    want = climatology_frame(px, ["row", "col"], **kw).set_index(["row", "col"])
    tiles = sorted({(int(a), int(b)) for a, b in zip(px["tile_row"], px["tile_col"])})
    assert len(tiles) == 4
    for tr, tc in tiles:
        tup = [(f.date, f.path, f.row_off, f.col_off, f.height, f.width,
                {b: i for b, i in f.bands.items() if b != "ndvi"}) for f in files]
        arrays, dates, failed = tile_series(grid, tr, tc, tup)
        assert len(dates) == 7 and failed == []
        w = grid.tile_window(tr, tc)
        data = tile_climatology(arrays, (4, 4), kw, block=3)
        np.testing.assert_array_equal(data, tile_climatology(arrays, (4, 4), kw))
        r, c = np.meshgrid(np.arange(w.row_off, w.row_off + 4), np.arange(w.col_off, w.col_off + 4), indexing="ij")
        got = pd.DataFrame({n: data[i].ravel() for i, n in enumerate(CLIM_COLUMNS)},
                           index=pd.MultiIndex.from_arrays([r.ravel(), c.ravel()], names=["row", "col"]))
        inside = got.index.isin(want.index)
        out = got.loc[~inside]  # cells outside the file, or never acquired: no date, no statistic
        assert (out["clim_n"] == 0).all() and np.isnan(out.drop(columns="clim_n").to_numpy()).all()
        ref = want.reindex(got.index[inside])
        for n in CLIM_COLUMNS:
            np.testing.assert_allclose(got.loc[inside, n].to_numpy(), ref[n].to_numpy(), rtol=0, atol=1e-5,
                                       equal_nan=True, err_msg=f"{n} tile {tr},{tc}")
    assert np.isfinite(want["clim_dry_vv"]).sum() > 20


@pytest.mark.spark
def test_stack_equals_the_pandas_climatology_is_reused_and_keyed_by_window(spark, cd_small, tmp_path):
    cfg, root = cd_small
    grid = cfg.grid.build()
    stacks = root / "sim" / "stacks"
    px = _pixels(cfg, stacks)
    s1 = build_climatology(spark, cfg, stacks, None, tmp_path / "clim")
    assert (s1["computed"], s1["reused"], s1["dates"], s1["failed_files"]) == (4, 0, 6, [])
    _assert_equal_to_pandas(_stack_frame(s1, grid), px, cfg)
    meta = json.loads((Path(s1["folder"]) / "climatology.json").read_text())
    assert meta["key"] == s1["key"] and len(meta["tiles"]) == 4 and meta["columns"] == list(CLIM_COLUMNS)
    tifs = sorted(Path(s1["folder"]).glob("*.tif"))
    mtimes = [p.stat().st_mtime_ns for p in tifs]
    with rasterio.open(tifs[0]) as src:  # uncompressed: every product date reads its tiles' stacks again
        assert src.compression is None and src.dtypes[0] == "float32"

    # the same key and inputs: reused, no file rewritten
    s2 = build_climatology(spark, cfg, stacks, None, tmp_path / "clim")
    assert (s2["computed"], s2["reused"], s2["key"], s2["digest"]) == (0, 4, s1["key"], s1["digest"])
    assert [p.stat().st_mtime_ns for p in tifs] == mtimes
    # ... found from the folders' listing alone (no stack header read): the same summary as the full check
    assert s2.get("checked") == "listing" and "checked" not in s1
    assert {k: v for k, v in s2.items() if k not in ("seconds", "checked")} == {
        **{k: v for k, v in s1.items() if k != "seconds"}, "computed": 0, "reused": 4, "tile_seconds": 0,
        "cells_with_climatology": None}
    # a tile file touched since: the full check (it reuses the tile, its tags and inputs being current)
    os.utime(tifs[0], ns=(tifs[0].stat().st_atime_ns, tifs[0].stat().st_mtime_ns + 10**9))
    s2b = build_climatology(spark, cfg, stacks, None, tmp_path / "clim")
    assert (s2b["computed"], s2b["reused"], s2b["digest"], "checked" in s2b) == (0, 4, s1["digest"], False)
    mtimes = [p.stat().st_mtime_ns for p in tifs]

    # a region's tiles only: those reused
    tiles = s1["tiles_with_files"][:2]
    s4 = build_climatology(spark, cfg, stacks, tiles, tmp_path / "clim")
    assert (s4["tiles"], s4["reused"], s4["computed"]) == (2, 2, 0)

    # another window: another key (folder), equal to pandas over that window
    wcfg = load_config(overrides=SMALL + WINDOW)
    assert climatology_key(wcfg) != climatology_key(cfg)
    sw = build_climatology(spark, wcfg, stacks, None, tmp_path / "clim")
    assert sw["key"] != s1["key"] and sw["computed"] == 4 and sw["dates"] == 5
    assert sw["window_dates"] == ["2024-04-01", "2024-04-25"]
    _assert_equal_to_pandas(_stack_frame(sw, grid), px, wcfg)
    # a date outside the window does not touch it; a file inside changed recomputes its tile only
    last = sorted((stacks / LAST).glob("*.tif"))[0]
    os.utime(last, ns=(last.stat().st_atime_ns, last.stat().st_mtime_ns + 10**9))
    assert build_climatology(spark, wcfg, stacks, None, tmp_path / "clim")["computed"] == 0
    inside = sorted((stacks / "2024-04-13").glob("*.tif"))[0]
    os.utime(inside, ns=(inside.stat().st_atime_ns, inside.stat().st_mtime_ns + 10**9))
    s3 = build_climatology(spark, wcfg, stacks, None, tmp_path / "clim")
    assert (s3["computed"], s3["reused"]) == (1, 3) and s3["digest"] != sw["digest"] and "checked" not in s3
    # a static layer changed: the full check too (it decides which files are quarantined)
    static = next((root / "sim" / "static").glob("*.tif"))
    os.utime(static, ns=(static.stat().st_atime_ns, static.stat().st_mtime_ns + 10**9))
    s3b = build_climatology(spark, wcfg, stacks, None, tmp_path / "clim")
    assert (s3b["computed"], s3b["digest"], "checked" in s3b) == (0, s3["digest"], False)
    assert build_climatology(spark, wcfg, stacks, None, tmp_path / "clim").get("checked") == "listing"

    # fewer dates than min_dates in every tile: nothing to compute, nothing written
    few = load_config(overrides=SMALL + ["physics.change_detection.min_dates=7"])
    s5 = build_climatology(spark, few, stacks, None, tmp_path / "clim")
    assert (s5["computed"], s5["too_few_dates"], s5["tiles_with_files"]) == (0, 4, [])
    assert not list(Path(s5["folder"]).glob("*.tif"))

    # attach: the rows get their cell's values
    stack = ClimatologyStack.from_summary(s1, grid)
    sub = px.sample(500, random_state=1).reset_index(drop=True)
    got = stack.attach(sub)
    ref = sub[["row", "col"]].merge(_stack_frame(s1, grid), on=["row", "col"], how="left")
    for c in CLIM_COLUMNS:
        np.testing.assert_array_equal(got[c].to_numpy(), ref[c].to_numpy())
    # the column form gives the same values; rows of one tile (a stack file's: one gather), and a row
    # of a tile without a climatology (NaN) among rows of two tiles
    cols = stack.values(*(sub[k].to_numpy() for k in ("tile_row", "tile_col", "row", "col")))
    assert list(cols) == list(CLIM_COLUMNS)
    for c in CLIM_COLUMNS:
        np.testing.assert_array_equal(cols[c], got[c].to_numpy())
    tr, tc = s1["tiles_with_files"][0]
    one = px[(px["tile_row"] == tr) & (px["tile_col"] == tc)].reset_index(drop=True)
    got1 = stack.attach(one)
    ref1 = one[["row", "col"]].merge(_stack_frame(s1, grid), on=["row", "col"], how="left")
    assert len(one) > 100 and np.isfinite(got1["clim_theta_mean"]).any()
    for c in CLIM_COLUMNS:
        np.testing.assert_array_equal(got1[c].to_numpy(), ref1[c].to_numpy())
    far = grid.tile_window(0, 0)
    mixed = pd.concat([sub.iloc[:3], pd.DataFrame({"tile_row": [0], "tile_col": [0], "row": [far.row_off],
                                                   "col": [far.col_off]})], ignore_index=True)
    gm = stack.attach(mixed)
    assert gm[list(CLIM_COLUMNS)].iloc[3].isna().all()
    for c in CLIM_COLUMNS:
        np.testing.assert_array_equal(gm[c].to_numpy()[:3], got[c].to_numpy()[:3])
    assert list(stack.attach(sub.iloc[:0]).columns) == [*sub.columns, *CLIM_COLUMNS]


@pytest.mark.spark
def test_produce_with_a_change_detection_registry(spark, cd_small, tmp_path):
    cfg, root = cd_small
    wcfg = load_config(overrides=SMALL + WINDOW)
    stacks = root / "sim" / "stacks"
    out = tmp_path / "product"
    s1 = P.produce(spark, wcfg, root / "models", stacks, None, LAST, LAST, out)  # outside the window
    clim = s1["climatology"]
    assert s1["produced"] == 1 and clim["computed"] == 4 and clim["window_dates"] == ["2024-04-01", "2024-04-25"]
    assert Path(clim["folder"]).parent == out.resolve() / "climatology"
    assert json.loads((out / "product.json").read_text())["climatology"]["digest"] == clim["digest"]
    rows = pd.read_parquet(out / "parquet" / f"date={LAST}")
    qc = rows["qc"].to_numpy(np.int64)
    land = (qc & int(MASK_BITS)) == 0
    missing = (qc & int(QC.CHANGE_DETECTION_MISSING)) != 0
    assert land.sum() > 1000 and missing[land].mean() < 0.05  # change detection in play for land cells
    assert np.isfinite(rows.loc[land, "ssm"]).mean() > 0.9

    # the same run again: the date and the climatology are reused
    s2 = P.produce(spark, wcfg, root / "models", stacks, None, LAST, LAST, out)
    assert s2["skipped"] == 1 and s2["climatology"]["reused"] == 4 and s2["climatology"]["computed"] == 0
    # another climatology (the open window): the date is recomputed with it
    s3 = P.produce(spark, cfg, root / "models", stacks, None, LAST, LAST, out)
    assert s3["produced"] == 1 and s3["climatology"]["key"] != clim["key"] and s3["product_hash"] != s1["product_hash"]
    # change detection off: no climatology is built, the rows carry none (flagged missing)
    off = load_config(overrides=SMALL + ["physics.change_detection.enabled=false"])
    s4 = P.produce(spark, off, root / "models", stacks, None, LAST, LAST, tmp_path / "off")
    assert "climatology" not in s4 and s4["produced"] == 1
    qc4 = pd.read_parquet(tmp_path / "off" / "parquet" / f"date={LAST}")["qc"].to_numpy(np.int64)
    assert ((qc4 & int(QC.CHANGE_DETECTION_MISSING)) != 0)[(qc4 & int(MASK_BITS)) == 0].all()
