"""ssm_spark.point.cells: the fast one-cell reader gives, column by column, what the stack reader
(read_file_cells, produce's) gives on every cell of real files: declared nodata, values out of range,
infinities, absent bands, classes 0 and missing, masks; kept datasets are re-opened when a file is
rewritten. No Spark."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.windows import Window

from ssm_spark.config import load_config

H = W = 8
ROW0, COL0 = 2048, 17408


def _write(path, grid, bands: dict[str, np.ndarray], dtype: str, nodata) -> None:
    t = grid.window_transform(Window(COL0, ROW0, W, H))
    with rasterio.open(path, "w", driver="GTiff", width=W, height=H, count=len(bands), dtype=dtype, crs=grid.crs,
                       transform=t, nodata=nodata) as dst:
        for i, (name, a) in enumerate(bands.items(), 1):
            dst.write(a.astype(dtype), i)
            dst.set_band_description(i, name)


@pytest.fixture()
def files(tmp_path):
    """One date's stack (nodata -9999, no precip_mm, a clay band in the stack file too) and its static
    companions (no climate band), with bad values planted."""
    cfg = load_config()
    grid = cfg.grid.build()
    rng = np.random.default_rng(3)
    (tmp_path / "stacks" / "2024-05-01").mkdir(parents=True)
    (tmp_path / "static").mkdir()
    vv = rng.uniform(-20, -5, (H, W))
    vh = vv - 6
    vv[0, :3] = -9999.0          # declared nodata: missing
    vh[0, :2] = -9999.0          # both missing at (0,0), (0,1): no acquisition, no row
    vv[1, 1] = 9.0               # out of range
    vh[2, 2] = np.inf            # infinity
    ndvi = rng.uniform(0, 0.9, (H, W))
    ndvi[3, 3] = 1.5
    lst = rng.uniform(260, 300, (H, W))  # some frozen cells
    inc = rng.uniform(30, 45, (H, W))
    clay_in_stack = np.full((H, W), 99.0)
    _write(tmp_path / "stacks" / "2024-05-01" / "t.tif", grid,
           {"vv_db": vv, "vh_db": vh, "incidence_deg": inc, "ndvi": ndvi, "lst_k": lst, "clay_pct": clay_in_stack},
           "float32", -9999.0)
    clay = rng.uniform(5, 60, (H, W))
    slope = rng.uniform(0, 30, (H, W))
    slope[4, 4] = 120.0
    _write(tmp_path / "static" / "t.tif", grid,
           {"clay_pct": clay, "sand_pct": 100 - clay, "bulk_density": rng.uniform(1, 1.6, (H, W)),
            "elevation_m": rng.uniform(0, 900, (H, W)), "slope_deg": slope}, "float32", float("nan"))
    lc = rng.choice([10, 20, 30, 40, 50, 60, 70, 80, 90, 95, 100], size=(H, W))
    lc[5, 5] = 0                 # nodata class
    _write(tmp_path / "static" / "t_classes.tif", grid, {"landcover": lc}, "uint8", 0)
    from ssm_spark.sources.stacks import discover

    inv = discover(tmp_path / "stacks", grid, tmp_path / "static")
    assert len(inv.files) == 1 and not inv.quarantine
    return cfg, grid, inv.files[0]


@pytest.mark.parametrize("max_slope", [None, 25.0])
def test_pixel_frame_equals_the_stack_reader_on_every_cell(files, max_slope):
    from ssm_spark.point.cells import OpenFiles, cell_values, pixel_frame
    from ssm_spark.sources.stacks import read_file_cells

    cfg, grid, f = files
    want = read_file_cells(f, grid, max_slope).sort_values(["row", "col"]).reset_index(drop=True)
    of = OpenFiles(4)
    cells = [(ROW0 + r, COL0 + c) for r in range(H) for c in range(W)]
    vals = [cell_values(of, f, r, c) for r, c in cells]
    got, kept = pixel_frame(vals, grid, [r for r, _ in cells], [c for _, c in cells], [f.date] * len(cells), max_slope)
    assert kept.sum() == len(want) == H * W - 2 and not kept[0] and not kept[1]
    assert list(got.columns) == list(want.columns)
    pd.testing.assert_frame_equal(got.reset_index(drop=True), want, check_exact=True)
    assert of.opened == 3  # the stack file and its two companions, each opened once for 64 cells
    # the planted values: stack's own clay band loses to the static file's, the rules applied
    one = got[(got["row"] == ROW0 + 1) & (got["col"] == COL0 + 1)].iloc[0]
    assert np.isnan(one["vv_db"]) and one["clay_pct"] != 99.0 and np.isnan(one["precip_mm"])
    assert (got["climate"] == 0).all() and got["qc"].ne(0).any()
    # one cell at a time (the point path) and several dates at once (a series) give the same rows
    r, c = cells[20]
    single, _ = pixel_frame([cell_values(of, f, r, c)], grid, [r], [c], [f.date], max_slope)
    pd.testing.assert_frame_equal(single, want[(want["row"] == r) & (want["col"] == c)].reset_index(drop=True))
    with pytest.raises(ValueError, match="outside"):
        cell_values(of, f, ROW0 + H, COL0)


def test_open_files_reopen_a_rewritten_file_and_stay_bounded(files, tmp_path):
    from ssm_spark.point.cells import OpenFiles, cell_values

    cfg, grid, f = files
    of = OpenFiles(3)
    before = cell_values(of, f, ROW0 + 3, COL0 + 4)["vv_db"]
    assert cell_values(of, f, ROW0 + 3, COL0 + 4)["vv_db"] == before and of.opened == 3  # kept: not re-opened
    with rasterio.open(f.path, "r+") as dst:  # the tile is re-exported in place
        a = dst.read(1)
        a[3, 4] = -7.25
        dst.write(a, 1)
    os.utime(f.path, ns=(1, 1))  # mtime changes (a rewrite within the clock's resolution still must)
    assert cell_values(of, f, ROW0 + 3, COL0 + 4)["vv_db"] == -7.25 and of.opened == 4  # that file only
    small = OpenFiles(2)
    for _ in range(2):
        cell_values(small, f, ROW0, COL0 + 5)
    assert len(small._open) == 2 and small.opened == 6  # 3 files through 2 places: least recent out
    nothing = OpenFiles(0)
    assert cell_values(nothing, f, ROW0 + 3, COL0 + 4)["vv_db"] == -7.25 and not nothing._open
    of.close()
    assert not of._open


def test_concurrent_reads_with_evictions_give_the_right_values(files):
    """Threads reading cells of three files through one place (every read evicts another's dataset)."""
    from concurrent.futures import ThreadPoolExecutor

    from ssm_spark.point.cells import OpenFiles, cell_values

    cfg, grid, f = files
    cells = [(ROW0 + r, COL0 + c) for r in range(H) for c in range(W)]
    want = {rc: cell_values(OpenFiles(0), f, *rc) for rc in cells}
    of = OpenFiles(1)
    with ThreadPoolExecutor(6) as ex:
        got = list(ex.map(lambda rc: (rc, cell_values(of, f, *rc)), cells * 4))
    for rc, v in got:
        assert v.keys() == want[rc].keys()
        np.testing.assert_array_equal(np.array(list(v.values())), np.array(list(want[rc].values())))
    assert len(of._open) == 1
