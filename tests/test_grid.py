"""Grid and tile arithmetic: EASE-Grid 2.0 known answers, and properties with Hypothesis."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from rasterio.windows import Window

from ssm_spark.errors import GridError
from ssm_spark.grid import EASE2_X_MAX, EASE2_Y_MAX, Grid

# WGS84 and the EASE-Grid 2.0 Global projection (Lambert cylindrical equal-area, true at 30 deg),
# written out from Snyder (1987), Map Projections: A Working Manual, eqs. 3-12 and 10-15.
A = 6378137.0
F = 1 / 298.257223563
E2 = F * (2 - F)
E = math.sqrt(E2)
K0 = math.cos(math.radians(30)) / math.sqrt(1 - E2 * math.sin(math.radians(30)) ** 2)


def cea_by_hand(lon: float, lat: float) -> tuple[float, float]:
    s = math.sin(math.radians(lat))
    q = (1 - E2) * (s / (1 - E2 * s * s) - 1 / (2 * E) * math.log((1 - E * s) / (1 + E * s)))
    return A * K0 * math.radians(lon), A * q / (2 * K0)


@pytest.mark.parametrize("km,cell,cols,rows", [
    (1, 1000.895023349556, 34704, 14616), (3, 3002.685070048667, 11568, 4872),
    (9, 9008.055210146, 3856, 1624), (36, 36032.220840584, 964, 406)])
def test_ease2_published_numbers(km, cell, cols, rows):
    g = Grid.ease2(km)
    assert g.cell == pytest.approx(36032.220840584 * km / 36, rel=1e-15)  # exactly nested
    assert (g.cell, g.n_cols, g.n_rows, g.crs) == (cell, cols, rows, "EPSG:6933")
    left, bottom, right, top = g.bounds
    assert left == pytest.approx(-EASE2_X_MAX, abs=1e-3) and right == pytest.approx(EASE2_X_MAX, abs=1e-3)
    assert bottom == pytest.approx(-EASE2_Y_MAX, abs=1e-3) and top == pytest.approx(EASE2_Y_MAX, abs=1e-3)


def test_ease2_projection_matches_the_hand_computation():
    g = Grid.ease2(1)
    # the grid's x extent is the projected antimeridian: a k0 pi
    assert cea_by_hand(180, 0)[0] == pytest.approx(EASE2_X_MAX, abs=0.01)
    for lon, lat in [(0, 0), (180, 0), (2.5, 44.0), (-122.4, 37.8), (151.2, -33.9), (10, 80)]:
        x, y = g.to_xy(lon, lat)
        ex, ey = cea_by_hand(lon, lat)
        assert x == pytest.approx(ex, abs=0.01) and y == pytest.approx(ey, abs=0.01)


def test_known_cells():
    # the origin of lon/lat falls on the corner shared by the four central cells; half-open cells
    # put it in the one to its south-east
    assert Grid.ease2(36).to_cell(0, 0) == (203, 482)
    assert Grid.ease2(1).to_cell(0, 0) == (7308, 17352)
    assert Grid.geographic(0.01).to_cell(-179.999, 89.999) == (0, 0)
    assert Grid.geographic(0.01).to_cell(179.999, -89.999) == (17999, 35999)
    # cell (0, 0) of EASE2 36 km: centre one half cell in from the upper-left corner
    lon, lat = Grid.ease2(36).to_lonlat(0, 0)
    x, y = cea_by_hand(lon, lat)
    assert x == pytest.approx(-EASE2_X_MAX + 36032.220840584 / 2, abs=0.01)
    assert y == pytest.approx(EASE2_Y_MAX - 36032.220840584 / 2, abs=0.01)


def test_outside_grid_is_an_error_naming_the_point():
    g = Grid.ease2(1)
    with pytest.raises(GridError, match="outside grid ease2_1km"):
        g.to_cell(10.0, 89.0)  # EASE-Grid 2.0 Global stops near 85.04 deg
    rows, cols = g.to_cell(np.array([10.0, 10.0]), np.array([45.0, 89.0]), strict=False)
    assert rows[1] == -1 and cols[1] == -1 and rows[0] >= 0
    with pytest.raises(GridError):
        Grid.ease2(2)
    with pytest.raises(GridError):
        Grid.geographic(0.07)
    with pytest.raises(GridError, match="unknown grid name"):
        Grid.from_name("utm_1km")


def test_from_name_round_trip():
    for g in (Grid.ease2(9), Grid.geographic(0.01), Grid.geographic(0.25, tile_size=64)):
        assert Grid.from_name(g.name, g.tile_size) == g


GRIDS = [Grid.ease2(1), Grid.ease2(36, tile_size=32), Grid.geographic(0.01), Grid.geographic(0.1, tile_size=100)]


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(GRIDS), st.floats(0, 1), st.floats(0, 1))
@example(GRIDS[0], 0.0, 0.0)
@example(GRIDS[0], 1.0, 1.0)
def test_cell_centre_round_trip(grid, fr, fc):
    row = min(int(fr * grid.n_rows), grid.n_rows - 1)
    col = min(int(fc * grid.n_cols), grid.n_cols - 1)
    lon, lat = grid.to_lonlat(row, col)
    assert grid.to_cell(lon, lat) == (row, col)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(GRIDS), st.floats(0, 1), st.floats(0, 1))
@example(GRIDS[2], 1.0, 1.0)  # the last, partial tile of a grid whose shape is not a tile multiple
def test_cell_lies_in_its_tile_window(grid, fr, fc):
    row = min(int(fr * grid.n_rows), grid.n_rows - 1)
    col = min(int(fc * grid.n_cols), grid.n_cols - 1)
    tr, tc = grid.tile_of(row, col)
    w = grid.tile_window(tr, tc)
    assert w.row_off <= row < w.row_off + w.height and w.col_off <= col < w.col_off + w.width
    assert 0 < w.height <= grid.tile_size and 0 < w.width <= grid.tile_size
    # the tile's transform maps its local (0, 0) corner to the global cell corner
    x, y = grid.tile_transform(tr, tc) * (row - w.row_off, col - w.col_off)[::-1]
    cx, cy = grid.cell_to_xy(row, col)
    assert x == pytest.approx(cx - grid.cell / 2, abs=grid.cell * 1e-9)
    assert y == pytest.approx(cy + grid.cell / 2, abs=grid.cell * 1e-9)


def test_partial_edge_tiles():
    g = Grid.geographic(0.01)  # 36000 x 18000 cells, 256-cell tiles: 141 x 71 tiles, edges partial
    assert (g.n_tile_rows, g.n_tile_cols) == (71, 141)
    assert g.tile_window(70, 140) == Window(140 * 256, 70 * 256, 36000 - 140 * 256, 18000 - 70 * 256)
    with pytest.raises(GridError, match="tile \\(71, 0\\) is outside"):
        g.tile_window(71, 0)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2000), st.integers(0, 2000), st.integers(1, 900), st.integers(1, 900),
       st.sampled_from([32, 100, 256]))
def test_tiles_for_window_cover_it_exactly(r0, c0, h, w, ts):
    g = Grid.ease2(1, tile_size=ts)
    win = Window(c0, r0, w, h)
    tiles = g.tiles_for_window(win)
    covered = sum(
        max(0, min(t.row_off + t.height, r0 + h) - max(t.row_off, r0)) * max(0, min(t.col_off + t.width, c0 + w) - max(t.col_off, c0))
        for t in (g.tile_window(tr, tc) for tr, tc in tiles))
    assert covered == h * w  # tiles are disjoint, so exact cover <=> the overlaps add up to the area
    assert all(
        min(t.row_off + t.height, r0 + h) > max(t.row_off, r0) and min(t.col_off + t.width, c0 + w) > max(t.col_off, c0)
        for t in (g.tile_window(tr, tc) for tr, tc in tiles))


def test_tiles_for_bbox_and_polygon():
    from shapely.geometry import Polygon

    g = Grid.ease2(1)
    r, c = g.to_cell(2.5, 44.0)
    tr, tc = g.tile_of(r, c)
    w = g.tile_window(tr, tc)
    lon, lat = g.to_lonlat(w.row_off + 100, w.col_off + 100)
    assert g.tiles_for_bbox(lon - 0.01, lat - 0.01, lon + 0.01, lat + 0.01) == [(tr, tc)]
    # a box straddling the tile's east edge touches exactly that tile and its east neighbour
    elon, elat = g.to_lonlat(w.row_off + 100, w.col_off + w.width)
    assert g.tiles_for_bbox(elon - 0.05, elat - 0.01, elon + 0.05, elat + 0.01) == [(tr, tc), (tr, tc + 1)]
    # a thin diagonal triangle hits fewer tiles than its bounding box
    tri = Polygon([(0, 40), (8, 48), (8, 47.5)])
    hit = g.tiles_for_geometry(tri)
    assert 0 < len(hit) < len(g.tiles_for_bbox(*tri.bounds))
    for lon, lat in [(0.1, 40.2), (4, 44.0), (7.9, 47.7)]:
        assert g.tile_of(*g.to_cell(lon, lat)) in hit
    with pytest.raises(GridError):
        Grid.ease2(1).tiles_for_bbox(0, 86, 1, 89)


def test_window_around_snaps_to_tiles():
    g = Grid.ease2(1)
    w = g.window_around(2.5, 44.0, 512, 512)
    assert (w.height, w.width) == (512, 512) and w.row_off % 256 == 0 and w.col_off % 256 == 0
    assert len(g.tiles_for_window(w)) == 4
    r, c = g.to_cell(2.5, 44.0)
    assert abs(w.row_off + 256 - r) <= 128 and abs(w.col_off + 256 - c) <= 128


def test_nesting():
    e1, e3, e9, e36 = (Grid.ease2(k) for k in (1, 3, 9, 36))
    assert (e1.nest_factor(e3), e1.nest_factor(e9), e1.nest_factor(e36), e9.nest_factor(e36)) == (3, 9, 36, 4)
    assert Grid.geographic(0.01).nest_factor(Grid.geographic(0.05)) == 5
    with pytest.raises(GridError):
        e3.nest_factor(e1)  # finer is not coarser
    with pytest.raises(GridError):
        e1.nest_factor(Grid.geographic(0.1))
    with pytest.raises(GridError):
        Grid.geographic(0.02).nest_factor(Grid.geographic(0.03))
    # nested cells share edges: the 36 km cell holding a point holds the 1 km cell holding it
    r1, c1 = e1.to_cell(2.5, 44.0)
    assert e36.to_cell(2.5, 44.0) == (r1 // 36, c1 // 36)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 50), st.integers(0, 50), st.integers(1, 40), st.integers(1, 40), st.integers(0, 2**32 - 1))
@example(0, 0, 9, 9, 0)  # aligned, one whole coarse cell
def test_aggregate_is_the_exact_block_mean(r0, c0, h, w, seed):
    fine, coarse = Grid.ease2(1), Grid.ease2(9)
    rng = np.random.default_rng(seed)
    vals = rng.uniform(0.02, 0.5, (h, w))
    vals[rng.random((h, w)) < 0.2] = np.nan
    mean, count, cw = fine.aggregate(vals, Window(c0, r0, w, h), coarse)
    assert mean.shape == count.shape == (cw.height, cw.width)
    assert count.sum() == np.isfinite(vals).sum()
    for i in range(cw.height):
        for j in range(cw.width):
            rr = np.arange(r0, r0 + h)
            cc = np.arange(c0, c0 + w)
            sel = vals[np.ix_((rr // 9) == cw.row_off + i, (cc // 9) == cw.col_off + j)]
            if np.isfinite(sel).any():
                assert mean[i, j] == pytest.approx(np.nanmean(sel), rel=1e-12)
            else:
                assert np.isnan(mean[i, j]) and count[i, j] == 0


def test_aggregate_min_count_and_shape_check():
    fine, coarse = Grid.ease2(3), Grid.ease2(9)
    vals = np.full((3, 6), np.nan)
    vals[0, 0] = 1.0
    vals[:, 3:] = 2.0
    mean, count, _ = fine.aggregate(vals, Window(0, 0, 6, 3), coarse, min_count=2)
    assert np.isnan(mean[0, 0]) and count[0, 0] == 1 and mean[0, 1] == 2.0 and count[0, 1] == 9
    with pytest.raises(GridError, match="shape"):
        fine.aggregate(vals, Window(0, 0, 5, 3), coarse)


@pytest.mark.parametrize("grid", [Grid.ease2(1), Grid.ease2(36), Grid.geographic(0.1),
                                  # not cylindrical: projected cell by cell (ETRS89-LAEA Europe, 1 km)
                                  Grid("laea_1km", "EPSG:3035", 2_000_000.0, 5_500_000.0, 1000.0, 4000, 4000)],
                         ids=["ease2_1km", "ease2_36km", "geo_0.1deg", "laea_1km"])
def test_window_lonlat_is_the_cells_own_projection(grid):
    from ssm_spark.grid import _separable

    assert _separable(grid.crs) == (grid.crs != "EPSG:3035")
    rng = np.random.default_rng(7)
    windows = [(0, 0, 64, 48), (grid.n_rows - 5, grid.n_cols - 7, 5, 7)]  # the corners, the edge cells
    windows += [(int(rng.integers(0, grid.n_rows - 40)), int(rng.integers(0, grid.n_cols - 40)), 40, 33) for _ in range(4)]
    for r0, c0, h, w in windows:
        lon, lat = grid.window_lonlat(r0, c0, h, w)
        rr, cc = np.divmod(np.arange(h * w), w)
        want_lon, want_lat = grid.to_lonlat(rr + r0, cc + c0)
        np.testing.assert_array_equal(lon, want_lon)   # bit for bit, not to a tolerance
        np.testing.assert_array_equal(lat, want_lat)
        assert lon.dtype == lat.dtype == np.float64 and lon.shape == (h * w,)
