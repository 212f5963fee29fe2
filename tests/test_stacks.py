"""GeoTIFF stacks -> pixel table: round trip, grid checks, quarantine."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio

from ssm_spark.errors import GridMismatchError, InputError
from ssm_spark.grid import Grid
from ssm_spark.sources.stacks import DYNAMIC_BANDS, STATIC_BANDS, check_raster, discover, read_pixels

GRID = Grid.ease2(1, tile_size=8)
TILES = [(600, 2200), (600, 2201)]


def _write(path: Path, data: np.ndarray, names, window_tile=None, crs=None, transform=None, dtype="float32", nodata=np.nan):
    path.parent.mkdir(parents=True, exist_ok=True)
    tr, tc = window_tile
    with rasterio.open(path, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=data.shape[0],
                       dtype=dtype, crs=crs or GRID.crs, transform=transform or GRID.tile_transform(tr, tc),
                       nodata=nodata) as dst:
        dst.write(data.astype(dtype))
        for i, n in enumerate(names, 1):
            dst.set_band_description(i, n)


@pytest.fixture()
def stack_dir(tmp_path: Path):
    rng = np.random.default_rng(11)
    truth = {}
    for tr, tc in TILES:
        static = np.stack([rng.uniform(lo, hi, (8, 8)) for lo, hi in [(5, 50), (5, 50), (1.1, 1.6), (0, 500), (0, 15)]])
        _write(tmp_path / "static" / f"t_{tr}_{tc}.tif", static, STATIC_BANDS, (tr, tc))
        classes = np.stack([np.full((8, 8), 40), np.full((8, 8), 14)])
        classes[0, 0, 0] = 80  # one water cell
        _write(tmp_path / "static" / f"t_{tr}_{tc}_classes.tif", classes, ["landcover", "climate"], (tr, tc), dtype="uint8", nodata=0)
        for date in ("2024-05-01", "2024-05-07"):
            dyn = np.stack([rng.uniform(lo, hi, (8, 8))  # vv, vh, incidence, ndvi, lst (not frozen), precip
                            for lo, hi in [(-20, -5), (-28, -12), (30, 45), (0, 0.9), (280, 300), (0, 30)]])
            dyn[0, 7, 7] = dyn[1, 7, 7] = np.nan  # no acquisition at one cell
            _write(tmp_path / "stacks" / date / f"t_{tr}_{tc}.tif", dyn, DYNAMIC_BANDS, (tr, tc))
            truth[(date, tr, tc)] = (dyn, static)
    return tmp_path, truth


def test_check_raster_names_the_mismatch(tmp_path: Path):
    tr, tc = TILES[0]
    _write(tmp_path / "geo.tif", np.zeros((1, 8, 8)), ["vv_db"], (tr, tc), crs="EPSG:4326")
    with pytest.raises(GridMismatchError, match="geo.tif: CRS EPSG:4326 differs from grid ease2_1km"):
        check_raster(tmp_path / "geo.tif", GRID)
    shifted = GRID.tile_transform(tr, tc) * __import__("affine").Affine.translation(0.5, 0)
    _write(tmp_path / "off.tif", np.zeros((1, 8, 8)), ["vv_db"], (tr, tc), transform=shifted)
    with pytest.raises(GridMismatchError, match="not on a cell corner"):
        check_raster(tmp_path / "off.tif", GRID)
    (tmp_path / "trunc.tif").write_bytes((tmp_path / "geo.tif").read_bytes()[:200])
    with pytest.raises(OSError, match="trunc.tif: cannot open"):
        check_raster(tmp_path / "trunc.tif", GRID)


@pytest.mark.spark
def test_round_trip_and_quarantine(spark, stack_dir):
    root, truth = stack_dir
    tr, tc = TILES[0]
    # a file on another CRS and a file without the required vv_db band, in a date folder
    _write(root / "stacks" / "2024-05-07" / "bad_crs.tif", np.zeros((2, 8, 8)), ["vv_db", "ndvi"], (tr, tc), crs="EPSG:4326")
    _write(root / "stacks" / "2024-05-07" / "no_vv.tif", np.zeros((1, 8, 8)), ["ndvi"], (tr, tc))
    inv = discover(root / "stacks", GRID, root / "static")
    assert len(inv.files) == 4 and inv.dates == ["2024-05-01", "2024-05-07"]
    reasons = {Path(q["file"]).name: q["reason"] for q in inv.quarantine}
    assert set(reasons) == {"bad_crs.tif", "no_vv.tif"}
    assert "differs from grid" in reasons["bad_crs.tif"] and "required band(s) ['vv_db'] missing" in reasons["no_vv.tif"]

    pix = read_pixels(spark, inv, GRID).toPandas()
    assert len(pix) == 4 * (64 - 1)  # every cell but the one without an acquisition
    for (date, tr, tc), (dyn, static) in truth.items():
        w = GRID.tile_window(tr, tc)
        sub = pix[(pix.date == dt.date.fromisoformat(date)) & (pix.tile_col == tc)].set_index(["row", "col"])
        r, c = w.row_off + 3, w.col_off + 5
        row = sub.loc[(r, c)]
        lon, lat = GRID.to_lonlat(r, c)
        assert (row.lon, row.lat) == pytest.approx((lon, lat), abs=1e-9)
        assert GRID.to_cell(row.lon, row.lat) == (r, c)
        for i, b in enumerate(DYNAMIC_BANDS):
            assert row[b] == pytest.approx(float(np.float32(dyn[i, 3, 5])))
        for i, b in enumerate(STATIC_BANDS):
            assert row[b] == pytest.approx(float(np.float32(static[i, 3, 5])))
        assert row.env == "cropland_C" and row.qc == 0
        water = sub.loc[(w.row_off, w.col_off)]
        assert water.env is None and water.qc & 8
    with pytest.raises(InputError, match="no <YYYY-MM-DD>"):
        discover(root / "static", GRID)


@pytest.mark.spark
def test_corrupt_file_is_quarantined_at_read_time(spark, stack_dir, tmp_path):
    root, truth = stack_dir
    from ssm_spark.sources.stacks import inventory_summary

    victim = root / "stacks" / "2024-05-07" / f"t_{TILES[1][0]}_{TILES[1][1]}.tif"
    # rewrite it deflate-compressed (as real exports are), then garble its compressed data blocks:
    # the header and tag directory stay intact, so only reading the pixels finds the damage
    import rasterio as rio

    with rio.open(victim) as src:
        arr, profile, names = src.read(), src.profile, src.descriptions
    profile.update(compress="deflate")
    with rio.open(victim, "w", **profile) as dst:
        dst.write(arr)
        dst.descriptions = names
    with rio.open(victim) as src:
        spans = [(int(src.get_tag_item("BLOCK_OFFSET_0_0", "TIFF", bidx=b)), int(src.get_tag_item("BLOCK_SIZE_0_0", "TIFF", bidx=b)))
                 for b in range(1, src.count + 1)]
    data = bytearray(victim.read_bytes())
    for off, size in spans:
        data[off:off + size] = bytes([0xFF]) * size
    victim.write_bytes(bytes(data))
    inv = discover(root / "stacks", GRID, root / "static")
    assert len(inv.files) == 4 and not inv.quarantine  # the header is intact: only reading finds it
    pix = read_pixels(spark, inv, GRID).toPandas()
    assert len(pix) == 3 * 63  # the three good files all arrive
    summary = inventory_summary(inv)
    assert [q["file"] for q in summary["quarantined"]] == [str(victim)]
    assert "cannot read its data" in summary["quarantined"][0]["reason"] and summary["files_read"] == 3
    # GDAL's own cause, not only rasterio's "See previous exception"; the unreadable file's cells not counted
    reason = summary["quarantined"][0]["reason"]
    assert "ZIPDecode:Decoding error" in reason
    assert summary["files_read_failed"] == 1 and summary["cells_in_files"] == 3 * 64


@pytest.mark.spark
def test_read_only_station_cells(spark, stack_dir):
    root, _ = stack_dir
    inv = discover(root / "stacks", GRID, root / "static")
    w = GRID.tile_window(*TILES[0])
    cells = [(w.row_off + 1, w.col_off + 2), (w.row_off + 7, w.col_off + 7), (0, 0)]  # (7,7) has no acquisition
    pix = read_pixels(spark, inv, GRID, cells=cells).toPandas()
    assert sorted(set(zip(pix.row, pix.col))) == [(w.row_off + 1, w.col_off + 2)] and len(pix) == 2  # two dates


@pytest.mark.spark
def test_out_of_range_values_are_set_missing_and_counted(spark, stack_dir):
    root, truth = stack_dir
    from ssm_spark.sources.stacks import inventory_summary

    tr, tc = TILES[0]
    dyn, _ = truth[("2024-05-01", tr, tc)]
    bad = dyn.copy()
    bad[0, 0, 1] = 12.0      # vv_db +12 dB
    bad[3, 0, 2] = 1.7       # ndvi 1.7
    bad[0, 0, 3] = bad[1, 0, 3] = -60.0  # both polarisations below -40 dB: no usable acquisition
    _write(root / "stacks" / "2024-05-01" / f"t_{tr}_{tc}.tif", bad, DYNAMIC_BANDS, (tr, tc))
    inv = discover(root / "stacks", GRID, root / "static")
    pix = read_pixels(spark, inv, GRID).toPandas()
    w = GRID.tile_window(tr, tc)
    day = pix[(pix.date == dt.date(2024, 5, 1)) & (pix.tile_col == tc)].set_index(["row", "col"])
    assert np.isnan(day.loc[(w.row_off, w.col_off + 1), "vv_db"]) and np.isfinite(day.loc[(w.row_off, w.col_off + 1), "vh_db"])
    assert np.isnan(day.loc[(w.row_off, w.col_off + 2), "ndvi"])
    assert (w.row_off, w.col_off + 3) not in day.index
    assert inventory_summary(inv)["values_out_of_range_set_missing"] == {"vv_db": 2, "vh_db": 1, "ndvi": 1}


@pytest.mark.spark
def test_ambiguous_or_incomplete_files_are_quarantined_or_recorded(spark, stack_dir, caplog):
    """A copy of a tile beside it, a tile without its static layers, two overlapping files, a file
    without lst_k, +inf values and a file with no acquisition: each quarantined or recorded, counted."""
    import logging
    import shutil

    from ssm_spark.sources.stacks import inventory_summary

    root, truth = stack_dir
    d1, d2 = root / "stacks" / "2024-05-01", root / "stacks" / "2024-05-07"
    (a, b) = [f"t_{tr}_{tc}" for tr, tc in TILES]
    shutil.copy(d1 / f"{a}.tif", d1 / f"{a} (copy).tif")      # no static companion of that name
    shutil.copy(root / "static" / f"{a}.tif", root / "static" / f"{a}_x.tif")  # a companion-complete duplicate
    shutil.copy(root / "static" / f"{a}_classes.tif", root / "static" / f"{a}_x_classes.tif")
    shutil.copy(d2 / f"{a}.tif", d2 / f"{a}_x.tif")
    dyn, _ = truth[("2024-05-01", *TILES[1])]
    _write(d1 / f"{b}.tif", np.concatenate([dyn[:2], dyn[2:4], dyn[5:]]) * np.where(np.arange(8) == 2, np.inf, 1)[None, None],
           ["vv_db", "vh_db", "incidence_deg", "ndvi", "precip_mm"], TILES[1])   # no lst_k; +inf in column 2
    with caplog.at_level(logging.WARNING, logger="ssm_spark.sources.stacks"):
        inv = discover(root / "stacks", GRID, root / "static")
    reasons = {Path(q["file"]).name: q["reason"] for q in inv.quarantine}
    assert set(reasons) == {f"{a} (copy).tif", f"{a}.tif", f"{a}_x.tif"}
    assert f"static layer(s) ['{a} (copy).tif', '{a} (copy)_classes.tif'] not found" in reasons[f"{a} (copy).tif"]
    assert "also covers on 2024-05-07" in reasons[f"{a}_x.tif"] and reasons[f"{a}.tif"].startswith(str(d2))
    assert sorted((f.date, Path(f.path).name) for f in inv.files) == [("2024-05-01", f"{a}.tif"), ("2024-05-01", f"{b}.tif"),
                                                                       ("2024-05-07", f"{b}.tif")]
    assert inv.absent_bands == {"lst_k": [str(d1 / f"{b}.tif")]}
    assert any("band lst_k absent from 1 of 3 file(s)" in r.getMessage() and "FROZEN" in r.getMessage() for r in caplog.records)
    _write(d1 / f"{a}.tif", np.full((6, 8, 8), np.nan), DYNAMIC_BANDS, TILES[0])  # no acquisition at all
    inv = discover(root / "stacks", GRID, root / "static")
    pix = read_pixels(spark, inv, GRID).toPandas()
    assert np.isfinite(pix[["vv_db", "vh_db", "ndvi", "precip_mm"]].to_numpy()).all()
    s = inventory_summary(inv)
    assert s["values_out_of_range_set_missing"] == {"vv_db": 8, "vh_db": 8, "incidence_deg": 8, "ndvi": 8, "precip_mm": 8}
    assert {r["band"]: r["n"] for r in s["values_by_file"] if r["file"].endswith(f"{b}.tif")}["ndvi"] == 8
    assert s["files_without_acquisition"] == [str(d1 / f"{a}.tif")]
    assert s["files"] == 6 and s["files_quarantined"] == 3 and s["files_read"] == 3 and s["bands_absent"] == {"lst_k": 1}
    assert len(pix) == 63 + (64 - 1 - 8)  # the good file; the one without lst_k less its all-inf column; none of the empty one


def test_folders_names_bands_and_nodata_are_read_as_meant(stack_dir, tmp_path, caplog):
    """Misnamed date folders are reported (an impossible date does not crash), .TIF/.tiff are read,
    two bands of one name are refused, a declared numeric nodata is missing, not a rejected value."""
    import logging

    from ssm_spark.sources.stacks import read_file_cells

    root, truth = stack_dir
    tr, tc = TILES[0]
    (root / "stacks" / "20240513").mkdir()
    (root / "stacks" / "2024-02-30").mkdir()
    d = root / "stacks" / "2024-05-01"
    (d / f"t_{tr}_{tc}.tif").rename(d / f"t_{tr}_{tc}.TIF")
    dyn, _ = truth[("2024-05-01", tr, tc)]
    _write(d / "twice.tiff", dyn[:2], ["vv_db", "vv_db"], (tr, tc))
    nd = dyn.copy()
    nd[0, 0, :3] = -9999.0
    _write(root / "stacks" / "2024-05-07" / f"t_{tr}_{tc}.tif", nd, DYNAMIC_BANDS, (tr, tc), nodata=-9999.0)
    with caplog.at_level(logging.WARNING, logger="ssm_spark.sources.stacks"):
        inv = discover(root / "stacks", GRID, root / "static")
    assert any("2 folder(s) not named as a date YYYY-MM-DD are not read: 2024-02-30, 20240513" in r.getMessage()
               for r in caplog.records)
    assert sorted(Path(p).name for p in inv.ignored_folders) == ["2024-02-30", "20240513"]
    assert {Path(f.path).name for f in inv.files if f.date == "2024-05-01"} == {f"t_{tr}_{tc}.TIF", f"t_{TILES[1][0]}_{TILES[1][1]}.tif"}
    assert [q["reason"].split(": ", 1)[1] for q in inv.quarantine] == [
        "bands 1 and 2 are both named 'vv_db'; which one is meant cannot be told"]
    f = next(f for f in inv.files if f.date == "2024-05-07" and f.col_off == GRID.tile_window(tr, tc).col_off)
    rejected: list = []
    px = read_file_cells(f, GRID, rejected=rejected).set_index(["row", "col"])
    w = GRID.tile_window(tr, tc)
    assert np.isnan(px.loc[(w.row_off, w.col_off + 1), "vv_db"]) and not rejected


@pytest.mark.spark
def test_a_stack_with_its_own_land_cover_needs_no_companions(spark, tmp_path):
    tr, tc = TILES[0]
    rng = np.random.default_rng(5)
    dyn = np.stack([rng.uniform(lo, hi, (8, 8)) for lo, hi in [(-20, -5), (-28, -12), (30, 45), (0, 0.9)]])
    lc = np.full((1, 8, 8), 40.0)
    lc[0, 0, 0] = 80
    _write(tmp_path / "stacks" / "2024-05-01" / "own.tif", np.concatenate([dyn, lc]),
           ["vv_db", "vh_db", "incidence_deg", "ndvi", "landcover"], (tr, tc))
    _write(tmp_path / "stacks" / "2024-05-01" / "bare.tif", dyn, ["vv_db", "vh_db", "incidence_deg", "ndvi"], TILES[1])
    inv = discover(tmp_path / "stacks", GRID, None)
    assert [Path(f.path).name for f in inv.files] == ["own.tif"]
    assert [Path(q["file"]).name for q in inv.quarantine] == ["bare.tif"] and "no land-cover layer" in inv.quarantine[0]["reason"]
    pix = read_pixels(spark, inv, GRID).toPandas().set_index(["row", "col"])
    w = GRID.tile_window(tr, tc)
    assert pix.loc[(w.row_off, w.col_off), "qc"] & 8 and pix.loc[(w.row_off, w.col_off + 1), "env"] == "cropland"


def test_full_and_partial_files_read_the_same_cells_alike(stack_dir):
    """A file with an acquisition at every cell (its bands taken as read, the address columns from
    the window) and the same file with one cell missing (a gather of the acquired cells) give the
    same values at the cells both have; infinite and out-of-range values are counted either way."""
    from ssm_spark.physics.wcm_params import EnvKeys
    from ssm_spark.sources.stacks import read_file_columns

    root, truth = stack_dir
    tr, tc = TILES[0]
    dyn, _ = truth[("2024-05-01", tr, tc)]
    full = dyn.copy()
    full[:, 7, 7] = full[:, 7, 6]          # the missing cell acquired
    full[0, 2, 2] = np.inf                 # vv_db +inf: rejected (and counted as infinite)
    full[3, 2, 3] = -1.5                   # ndvi below -1: rejected
    _write(root / "stacks" / "2024-05-01" / f"t_{tr}_{tc}.tif", full, DYNAMIC_BANDS, (tr, tc))
    part = full.copy()
    part[0, 7, 7] = part[1, 7, 7] = np.nan  # no acquisition there
    _write(root / "stacks" / "2024-05-07" / f"t_{tr}_{tc}.tif", part, DYNAMIC_BANDS, (tr, tc))
    inv = discover(root / "stacks", GRID, root / "static")
    w = GRID.tile_window(tr, tc)
    f_full, f_part = (next(f for f in inv.files if f.date == d and f.col_off == w.col_off)
                      for d in ("2024-05-01", "2024-05-07"))
    rej_full: list = []
    rej_part: list = []
    a = read_file_columns(f_full, GRID, rejected=rej_full)
    b = read_file_columns(f_part, GRID, rejected=rej_part)
    rr, cc = np.divmod(np.arange(64), 8)
    np.testing.assert_array_equal(a["row"], rr + w.row_off)
    np.testing.assert_array_equal(a["col"], cc + w.col_off)
    assert a["row"].dtype == a["tile_row"].dtype == np.int32 and set(a["tile_row"]) == {tr} and set(a["tile_col"]) == {tc}
    keep = np.flatnonzero(~((rr == 7) & (cc == 7)))
    assert len(b["row"]) == 63
    for k, v in a.items():
        if isinstance(v, EnvKeys):
            assert [v.uniques[i] for i in v.codes[keep]] == [b[k].uniques[i] for i in b[k].codes]
            continue
        got, want = np.asarray(b[k]), np.asarray(v)[keep]
        assert got.dtype == want.dtype, k
        np.testing.assert_array_equal(got, want, err_msg=k)   # NaN where both are NaN
    assert np.isnan(a["vv_db"][2 * 8 + 2]) and np.isnan(a["ndvi"][2 * 8 + 3])
    for rej in (rej_full, rej_part):
        assert sorted((r["band"], r["n"], r["n_infinite"]) for r in rej) == [("ndvi", 1, 0), ("vv_db", 1, 1)]
