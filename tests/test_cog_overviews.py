"""write_tile_cog builds a tile's overviews itself where that gives the COG driver's own bytes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio

from ssm_spark.grid import Grid
from ssm_spark.product.cog import COG_DEFLATE_LEVEL, _own_overviews, blocksize_for, cog_overview_factors, write_tile_cog


def _driver_cog(path: Path, data: np.ndarray, grid: Grid, tr: int, tc: int, bands, tags, blocksize: int,
                resampling: str, compress: str = "deflate") -> None:
    """The tile as GDAL's COG driver writes it with its own overviews (OVERVIEWS=AUTO): the reference."""
    w = grid.tile_window(tr, tc)
    opts = {"BLOCKSIZE": blocksize, "OVERVIEW_RESAMPLING": resampling.upper(), "NUM_THREADS": "1",
            "BIGTIFF": "IF_SAFER", "COMPRESS": compress.upper(), "PREDICTOR": "3", "LEVEL": str(COG_DEFLATE_LEVEL)}
    with rasterio.Env(GDAL_NUM_THREADS="1"):
        with rasterio.open(path, "w", driver="COG", width=int(w.width), height=int(w.height), count=len(bands),
                           dtype="float32", crs=grid.crs, transform=grid.tile_transform(tr, tc),
                           nodata=float("nan"), **opts) as dst:
            dst.write(data)
            for i, b in enumerate(bands, 1):
                dst.set_band_description(i, b)
                dst.update_tags(i, name=b, units={"ssm": "m3/m3"}.get(b, "bit flags (uint16, see ssm_spark.physics.qc)"))
            dst.update_tags(**tags)


def _tile(grid: Grid, tr: int, tc: int, seed: int) -> np.ndarray:
    w = grid.tile_window(tr, tc)
    rng = np.random.default_rng(seed)
    data = np.stack([rng.uniform(0.02, 0.5, (w.height, w.width)),
                     rng.choice([0, 1, 2, 8, 2048 | 2], (w.height, w.width))]).astype("f4")
    data[:, rng.uniform(size=(w.height, w.width)) < 0.15] = np.nan  # holes
    return data


def test_overview_factors_follow_the_cog_driver():
    assert cog_overview_factors(256, 256, 128) == [2] and cog_overview_factors(256, 256, 512) == []
    assert cog_overview_factors(256, 256, 32) == [2, 4, 8] and cog_overview_factors(64, 46, 16) == [2, 4]
    assert _own_overviews(256, 256, 64, "nearest") == [2, 4] and _own_overviews(256, 256, 128, "average") == [2]
    assert _own_overviews(256, 256, 64, "average") == []  # deeper average levels: the driver's own
    assert _own_overviews(64, 46, 16, "nearest") == []  # 46 is not a multiple of 4: the driver's own
    assert _own_overviews(256, 256, 256, "nearest") == [] and _own_overviews(256, 256, 128, "bilinear") == []


@pytest.mark.parametrize("tile_size,tile,blocksize,resampling,own", [
    (256, (0, 1), 0, "nearest", True), (64, (1, 2), 16, "nearest", True), (64, (1, 2), 0, "average", True),
    (64, (1, 2), 0, "mode", True), (64, (1, 2), 16, "average", False), (90, (4, 10), 16, "nearest", False)])
def test_tile_cog_is_the_cog_drivers_own_file(tmp_path: Path, tile_size, tile, blocksize, resampling, own):
    """The same bytes as the COG driver building the overviews itself: where write_tile_cog builds them
    (``own``) and where it leaves them to the driver (deeper average levels; a 64 x 46 edge tile)."""
    grid = Grid.ease2(36, tile_size=tile_size)
    tr, tc = tile
    data = _tile(grid, tr, tc, tile_size)
    block = blocksize or blocksize_for(grid.tile_size)
    assert bool(_own_overviews(data.shape[2], data.shape[1], block, resampling)) == own
    tags = {"manifest_id": "m1", "tile_row": str(tr)}
    size = write_tile_cog(tmp_path / "ours.tif", data, grid, tr, tc, ("ssm", "qc"), tags, blocksize=block,
                          overview_resampling=resampling)
    _driver_cog(tmp_path / "ref.tif", data, grid, tr, tc, ("ssm", "qc"), tags, block, resampling)
    assert (tmp_path / "ours.tif").read_bytes() == (tmp_path / "ref.tif").read_bytes()
    assert size == (tmp_path / "ref.tif").stat().st_size
    with rasterio.open(tmp_path / "ours.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.overviews(1) == cog_overview_factors(src.width, src.height, block) != []
        np.testing.assert_array_equal(src.read(), data)
