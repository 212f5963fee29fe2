"""produce: regions, tile COGs and VRT, and the Spark run end to end on a small simulated region
(contract, values against the no-Spark path, clipping checked with Sedona, resume after an
interruption byte for byte, both tile groupings giving the same bytes)."""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import shapely
from shapely.geometry import Polygon, box, mapping

from ssm_spark.config import load_config
from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import ConfigError, InputError
from ssm_spark.grid import Grid
from ssm_spark.cli import JOBS
from ssm_spark.product import produce as P
from ssm_spark.product.cog import blocksize_for, tile_arrays, write_tile_cog
from ssm_spark.product.commit import product_hash
from ssm_spark.product.region import _geometry_region, clip_mask, resolve_region
from ssm_spark.product.schema import AGG_COLUMNS, PRODUCT_COLUMNS
from ssm_spark.product.tiles import DateJob, predict_rows, read_clipped
from ssm_spark.product.vrt import write_vrt
from regions import trained_region

SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3"]
D1, D2 = "2024-04-01", "2024-04-07"


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _decoded(root: Path, date: str) -> dict[str, object]:
    """Parquet rows and COG/VRT pixels of a date, without file metadata."""
    out: dict[str, object] = {}
    for p in sorted((root / "parquet" / f"date={date}").glob("*.parquet")):
        out[p.name] = pq.read_table(p).replace_schema_metadata(None).to_pandas().to_json()
    for p in sorted((root / "cog" / date).glob("*.tif")) + [root / "vrt" / f"{date}.vrt"]:
        with rasterio.open(p) as src:
            out[p.name] = (src.read().tobytes(), src.transform, src.descriptions)
    return out


class _Interrupt(RuntimeError):
    pass


# ------------------------------------------------------------------------------------- no Spark


def test_regions_bbox_geojson_named_and_config(tmp_path: Path):
    cfg = load_config(overrides=SMALL + ["produce.regions={west: [2.0, 43.8, 2.45, 44.2]}"])
    grid = cfg.grid.build()
    conf = resolve_region(None, cfg, grid)
    assert conf.kind == "config" and conf.window is not None and len(conf.tiles) == 4
    assert conf.full_tiles == frozenset(conf.tiles)  # the demo window is whole tiles
    assert resolve_region("demo", cfg, grid) == conf
    bb = resolve_region("2.0,43.8,2.45,44.2", cfg, grid)
    assert bb.kind == "bbox" and bb.geometry.equals(box(2.0, 43.8, 2.45, 44.2))
    assert resolve_region("west", cfg, grid).tiles == bb.tiles
    # a FeatureCollection of two polygons -> their union; tiles that only touch it partly are cell-tested
    fc = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "properties": {}, "geometry": mapping(box(2.0, 43.8, 2.3, 44.0))},
        {"type": "Feature", "properties": {}, "geometry": mapping(box(2.6, 44.0, 2.9, 44.2))}]}
    (tmp_path / "r.geojson").write_text(json.dumps(fc))
    gj = resolve_region(str(tmp_path / "r.geojson"), cfg, grid)
    assert gj.kind == "geojson" and gj.geometry.geom_type == "MultiPolygon" and gj.name == "r"
    assert set(gj.tiles) == set(grid.tiles_for_geometry(gj.geometry)) and gj.full_tiles < set(gj.tiles)
    assert bb.key() != gj.key() and "wkb:" in gj.key()
    for bad, msg in [("nowhere", "not a bbox"), ("3,44,2,45", "min < max")]:
        with pytest.raises(InputError, match=msg):
            resolve_region(bad, cfg, grid)
    (tmp_path / "pt.geojson").write_text(json.dumps({"type": "Point", "coordinates": [2.5, 44.0]}))
    with pytest.raises(InputError, match="Polygon or MultiPolygon, found Point"):
        resolve_region(str(tmp_path / "pt.geojson"), cfg, grid)
    (tmp_path / "m.geojson").write_text(json.dumps(mapping(box(600000, 4e6, 700000, 4.1e6))))
    with pytest.raises(InputError, match="lon/lat"):
        resolve_region(str(tmp_path / "m.geojson"), cfg, grid)


def test_clip_mask_keeps_cells_whose_centre_is_in_the_polygon():
    cfg = load_config(overrides=SMALL)
    grid = cfg.grid.build()
    tri = Polygon([(2.1, 43.75), (2.9, 43.8), (2.4, 44.25)])
    region = _geometry_region("tri", "geojson", "test", tri, grid)
    r0, c0 = (min(t[0] for t in region.tiles) * 32, min(t[1] for t in region.tiles) * 32)
    rows, cols = np.meshgrid(np.arange(r0, r0 + 64), np.arange(c0, c0 + 64), indexing="ij")
    rows, cols = rows.ravel(), cols.ravel()
    lon, lat = grid.to_lonlat(rows, cols)
    px = pd.DataFrame({"row": rows, "col": cols, "tile_row": rows // 32, "tile_col": cols // 32, "lon": lon, "lat": lat})
    keep = clip_mask(px, region)
    want = np.array([tri.contains(shapely.Point(x, y)) for x, y in zip(lon, lat)])
    np.testing.assert_array_equal(keep, want)
    assert 0 < keep.sum() < len(keep)


def test_tile_cog_and_vrt_round_trip(tmp_path: Path):
    grid = Grid.ease2(1, tile_size=32)
    tiles = [(70, 550), (70, 551), (71, 550)]
    rng = np.random.default_rng(3)
    frames = {}
    for tr, tc in tiles:
        w = grid.tile_window(tr, tc)
        r, c = np.meshgrid(np.arange(w.row_off, w.row_off + 32), np.arange(w.col_off, w.col_off + 32), indexing="ij")
        df = pd.DataFrame({"row": r.ravel(), "col": c.ravel(), "ssm": rng.uniform(0.05, 0.45, 1024),
                           "qc": rng.choice([0, 1, 2, 8, 2048 | 2], 1024).astype("i4")})
        df = df.sample(900, random_state=1)  # holes -> NaN
        df.loc[df.index[:10], "ssm"] = np.nan
        frames[(tr, tc)] = df
        (tmp_path / "cog").mkdir(exist_ok=True)
        data = tile_arrays(df, grid, tr, tc, ["ssm", "qc"])
        write_tile_cog(tmp_path / "cog" / f"t_{tr}_{tc}.tif", data, grid, tr, tc, ["ssm", "qc"], {"manifest_id": "m1"})
    with rasterio.open(tmp_path / "cog" / "t_70_550.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert src.overviews(1) == [2] and src.block_shapes[0] == (blocksize_for(32),) * 2 == (16, 16)
        assert src.descriptions == ("ssm", "qc") and src.dtypes == ("float32", "float32") and np.isnan(src.nodata)
        assert src.transform == grid.tile_transform(70, 550) and src.crs.to_epsg() == 6933
        assert src.tags()["manifest_id"] == "m1" and src.tags(1)["units"] == "m3/m3"
        a = src.read()
    df = frames[(70, 550)]
    rr, cc = df["row"].to_numpy() - 70 * 32, df["col"].to_numpy() - 550 * 32
    np.testing.assert_array_equal(a[0, rr, cc], df["ssm"].to_numpy().astype("f4"))
    np.testing.assert_array_equal(a[1, rr, cc].astype(int), df["qc"].to_numpy())  # the bits, exactly
    assert np.isnan(a[0]).sum() == 1024 - 900 + 10
    (tmp_path / "vrt").mkdir()
    write_vrt(tmp_path / "vrt" / "d.vrt", grid, [(tr, tc, f"../cog/t_{tr}_{tc}.tif") for tr, tc in tiles],
              tiles + [(71, 551)], ["ssm", "qc"], {"manifest_id": "m1"})
    with rasterio.open(tmp_path / "vrt" / "d.vrt") as v:
        assert (v.width, v.height) == (64, 64) and v.transform == grid.tile_transform(70, 550)
        assert v.tags()["manifest_id"] == "m1" and v.descriptions == ("ssm", "qc")
        m = v.read()
    for tr, tc in tiles:
        with rasterio.open(tmp_path / "cog" / f"t_{tr}_{tc}.tif") as src:
            dr, dc = (tr - 70) * 32, (tc - 550) * 32
            np.testing.assert_array_equal(m[:, dr:dr + 32, dc:dc + 32], src.read())
    assert np.isnan(m[:, 32:, 32:]).all()  # the extent tile without a COG is nodata


def test_vrt_text_is_pinned():
    """The VRT's exact text (ElementTree, two-space indent, self-closed empty elements, a final newline):
    products made before and after the writer changed are byte-identical."""
    from rasterio.crs import CRS

    from ssm_spark.product.vrt import vrt_xml

    grid = Grid.geographic(0.01, tile_size=16)
    got = vrt_xml(grid, [(10, 21, "../cog/a&b.tif")], [(10, 20), (10, 21)], ["ssm"], {"m": "x<y", "a": 1})
    wkt = CRS.from_user_input(grid.crs).to_wkt().replace("&", "&amp;")
    want = f"""<VRTDataset rasterXSize="32" rasterYSize="16">
  <SRS dataAxisToSRSAxisMapping="1,2">{wkt}</SRS>
  <GeoTransform>-176.8, 0.01, 0.0, 88.4, 0.0, -0.01</GeoTransform>
  <Metadata>
    <MDI key="a">1</MDI>
    <MDI key="m">x&lt;y</MDI>
  </Metadata>
  <VRTRasterBand dataType="Float32" band="1" blockXSize="16" blockYSize="16">
    <Description>ssm</Description>
    <NoDataValue>nan</NoDataValue>
    <Metadata>
      <MDI key="name">ssm</MDI>
      <MDI key="units">m3/m3</MDI>
    </Metadata>
    <SimpleSource>
      <SourceFilename relativeToVRT="1">../cog/a&amp;b.tif</SourceFilename>
      <SourceBand>1</SourceBand>
      <SourceProperties RasterXSize="16" RasterYSize="16" DataType="Float32" />
      <SrcRect xOff="0" yOff="0" xSize="16" ySize="16" />
      <DstRect xOff="16" yOff="0" xSize="16" ySize="16" />
    </SimpleSource>
  </VRTRasterBand>
</VRTDataset>
"""
    assert got == want
    with pytest.raises(ValueError, match="outside the VRT's extent"):
        vrt_xml(grid, [(11, 21, "x.tif")], [(10, 20)], ["ssm"])


def test_product_hash_follows_the_product_not_the_resources():
    cfg = load_config(overrides=SMALL)
    grid = cfg.grid.build()
    region = resolve_region(None, cfg, grid)
    h = product_hash(cfg, region, "m1")
    same = load_config(overrides=SMALL + ["spark.master=local[1]", "produce.nthread=3", "produce.tile_grouping=shuffle",
                                          "produce.min_files_per_task=1", "produce.keep_tile_memory=false"])
    assert product_hash(same, region, "m1") == h and same.hash() != cfg.hash()
    other = load_config(overrides=SMALL + ["produce.cog_bands=[ssm, ssm_p05, ssm_p95, qc]"])
    assert product_hash(other, region, "m1") != h and product_hash(cfg, region, "m2") != h


def test_output_lock_names_its_holder_and_expires(tmp_path: Path):
    import os
    import socket
    import time

    from ssm_spark.product import files as F

    with F.OutputLock(tmp_path, "produce A"):
        with pytest.raises(InputError, match=rf"in use by another produce A: pid {os.getpid()} on {socket.gethostname()}"):
            F.OutputLock(tmp_path, "produce B").acquire()
    assert not (tmp_path / F.LOCK).exists()
    # another machine's lock: alive while refreshed, stale once its heartbeat stops
    (tmp_path / F.LOCK).write_text(json.dumps({"pid": 1, "host": "elsewhere", "job": "produce", "token": "t"}))
    with pytest.raises(InputError, match="pid 1 on elsewhere"):
        F.OutputLock(tmp_path).acquire()
    old = time.time() - F.STALE_AFTER_S - 5
    os.utime(tmp_path / F.LOCK, (old, old))
    lock = F.OutputLock(tmp_path).acquire()
    assert json.loads((tmp_path / F.LOCK).read_text())["host"] == socket.gethostname()
    lock.release()


# ------------------------------------------------------------------------------------- Spark


@pytest.fixture(scope="module")
def small(spark, tmp_path_factory):
    """A small simulated region (2 x 2 tiles of 32 cells, 6 dates) with a registry trained on it."""
    root = tmp_path_factory.mktemp("produce")
    cfg = load_config(overrides=SMALL)
    summary = trained_region(spark, cfg, root)
    assert summary["stations"] == 12 and summary["manifest_id"]
    return cfg, root


@pytest.fixture(scope="module")
def clean(spark, small):
    """An uninterrupted run over two dates."""
    cfg, root = small
    out = root / "clean"
    summary = P.produce(spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D2, out)
    return summary, out


@pytest.mark.spark
@pytest.mark.slow
def test_product_contract_values_and_provenance(spark, small, clean):
    from ssm_spark.models.registry import load_registry
    from ssm_spark.sources.stacks import discover

    cfg, root = small
    summary, out = clean
    grid = cfg.grid.build()
    mid = summary["manifest_id"]
    assert summary["produced"] == 2 and summary["failed_files"] == [] and summary["pixels"] == 2 * 64 * 64
    names = [f"ease2_1km_{tr}_{tc}" for tr, tc in resolve_region(None, cfg, grid).tiles]
    for d in (D1, D2):
        assert sorted(p.name for p in (out / "parquet" / f"date={d}").iterdir()) == sorted(
            [f"{n}.parquet" for n in names] + ["_SUCCESS.json"])
        assert sorted(p.name for p in (out / "cog" / d).iterdir()) == sorted(f"{n}.tif" for n in names)
        assert (out / "vrt" / f"{d}.vrt").is_file() and (out / "quicklook" / f"{d}.png").is_file()
        marker = json.loads((out / "parquet" / f"date={d}" / "_SUCCESS.json").read_text())
        assert marker["manifest_id"] == mid and marker["config_hash"] == cfg.hash()
        assert marker["counts"]["pixels"] == 4096 and marker["counts"]["grouping"] == "per tile task"
    assert json.loads((out / "product.json").read_text())["dates"] == [D1, D2]
    assert not (out / "_staging").exists()
    # the STAC catalogue, updated at each commit: an item per date, every asset a file of the product
    coll = json.loads((out / "stac" / "collection.json").read_text())
    assert sorted(p.name for p in (out / "stac" / "items").iterdir()) == [f"{D1}.json", f"{D2}.json"]
    assert coll["type"] == "Collection" and coll["ssm_spark:manifest_id"] == mid
    for d in (D1, D2):
        item = json.loads((out / "stac" / "items" / f"{d}.json").read_text())
        assert item["properties"]["ssm_spark:manifest_id"] == mid
        assert item["properties"]["ssm_spark:config_hash"] == cfg.hash()
        hrefs = [a["href"] for a in item["assets"].values()]
        assert len(hrefs) == 2 * len(names) + 2 and all((out / "stac" / "items" / h).resolve().is_file() for h in hrefs)

    # the dataset as Spark reads it: the product contract, partitioned by date
    df = spark.read.parquet(str(out / "parquet"))
    assert sorted(df.columns) == sorted(PRODUCT_COLUMNS)
    assert dict(df.dtypes)["date"] == "date" and df.count() == 2 * 4096
    prod = df.where(f"date = DATE'{D1}'").toPandas().sort_values(["row", "col"]).reset_index(drop=True)
    w = cfg.region.window(grid)
    assert prod["row"].between(w.row_off, w.row_off + w.height - 1).all()
    masked = (prod["qc"] & MASK_BITS) != 0
    assert masked.any() and prod.loc[masked, "ssm"].isna().all() and prod.loc[masked, "model_id"].isna().all()
    assert prod.loc[~masked, "model_id"].str.startswith(mid + "/").all()
    ok = prod["ssm"].notna()
    assert ok.mean() > 0.8 and prod.loc[ok, "ssm"].between(0.0, 0.7).all()
    assert (prod.loc[ok, "ssm_p05"] <= prod.loc[ok, "ssm"] + 1e-9).mean() > 0.9

    # the same numbers as the no-Spark path (read a file, predict with the registry from disk)
    reg = load_registry(root / "models")
    inv = discover(root / "sim" / "stacks", grid, root / "sim" / "static")
    job = DateJob(D1, grid, resolve_region(None, cfg, grid), str(out), cfg.ingest.max_slope_deg, {}, None)
    ref = pd.concat([predict_rows(read_clipped(f, job)[0], reg) for f in inv.files if f.date == D1])
    ref = ref.sort_values(["row", "col"]).reset_index(drop=True)
    np.testing.assert_array_equal(prod["row"], ref["row"])
    np.testing.assert_array_equal(prod["ssm"].to_numpy("f8"), ref["ssm"].to_numpy("f8"))
    np.testing.assert_array_equal(prod["qc"], ref["qc"])
    assert list(prod["model_id"].fillna("-")) == list(ref["model_id"].fillna("-"))

    # COGs and the VRT hold the Parquet values; every output names the manifest and config
    tr, tc = resolve_region(None, cfg, grid).tiles[0]
    with rasterio.open(out / "cog" / D1 / f"ease2_1km_{tr}_{tc}.tif") as src:
        assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and src.overviews(1)
        assert src.transform == grid.tile_transform(tr, tc) and src.descriptions == ("ssm", "qc")
        assert src.tags()["manifest_id"] == mid and src.tags()["config_hash"] == cfg.hash()
    with rasterio.open(out / "vrt" / f"{D1}.vrt") as v:
        assert v.transform == grid.window_transform(w) and (v.height, v.width) == (64, 64)
        assert v.tags()["manifest_id"] == mid
        mosaic = v.read()
    r, c = (prod["row"] - w.row_off).to_numpy(), (prod["col"] - w.col_off).to_numpy()
    np.testing.assert_array_equal(mosaic[0, r, c], prod["ssm"].to_numpy("f8").astype("f4"))
    np.testing.assert_array_equal(mosaic[1, r, c], prod["qc"].to_numpy().astype("f4"))
    kv = json.loads(pq.read_schema(out / "parquet" / f"date={D1}" / f"ease2_1km_{tr}_{tc}.parquet").metadata[b"ssm_spark"])
    assert kv["manifest_id"] == mid and kv["config_hash"] == cfg.hash() and kv["date"] == D1
    from PIL import Image

    with Image.open(out / "quicklook" / f"{D1}.png") as im:
        assert im.text["manifest_id"] == mid and im.text["config_hash"] == cfg.hash() and im.size[0] >= 500


@pytest.mark.spark
@pytest.mark.slow
def test_column_path_writes_the_frame_paths_bytes(small, tmp_path):
    """The per-tile path on column arrays (read_tile_columns -> predict_tile -> write_tile) writes the
    same Parquet and COG bytes as the frame path (read_clipped -> predict_rows -> write_tile), on a
    region that cuts tiles (the clip) and with rows out of order (write_tile sorts them)."""
    from ssm_spark.models.registry import load_registry
    from ssm_spark.physics.wcm_params import EnvKeys
    from ssm_spark.product.tiles import predict_tile, read_tile_columns, write_tile
    from ssm_spark.product.tasks import _tile_of_file
    from ssm_spark.sources.stacks import discover

    cfg, root = small
    grid = cfg.grid.build()
    reg = load_registry(root / "models")
    inv = discover(root / "sim" / "stacks", grid, root / "sim" / "static")
    full = resolve_region(None, cfg, grid)
    w = cfg.region.window(grid)
    lon, lat = grid.to_lonlat(np.array([w.row_off + 5, w.row_off + 40]), np.array([w.col_off + 3, w.col_off + 45]))
    cut = resolve_region(f"{min(lon)},{min(lat)},{max(lon)},{max(lat)}", cfg, grid)
    assert set(cut.tiles) - set(cut.full_tiles), "the bbox must cut a tile"
    files = [f for f in inv.files if f.date == D1]
    for region in (full, cut):
        outs = {}
        for way in ("frames", "columns", "shuffled"):
            out = tmp_path / f"{region.name}-{len(region.tiles)}-{way}"
            (out / "parquet" / f"date={D1}").mkdir(parents=True)
            (out / "cog" / D1).mkdir(parents=True)
            job = DateJob(D1, grid, region, str(out), cfg.ingest.max_slope_deg, {"date": D1}, ("ssm", "qc"))
            for f in files:
                if way == "frames":
                    rows = predict_rows(read_clipped(f, job)[0], reg)
                else:
                    rows = predict_tile(read_tile_columns(f, job)[0], reg)
                    if way == "shuffled":
                        back = np.arange(len(rows["row"]))[::-1]
                        rows = {k: v if isinstance(v, str) else v.take(back) if isinstance(v, EnvKeys) else v[back]
                                for k, v in rows.items()}
                write_tile(rows, *_tile_of_file(f, grid), job)
            outs[way] = _files(out)
        assert outs["frames"] and any(k.endswith(".parquet") for k in outs["frames"])
        assert outs["columns"] == outs["frames"] and outs["shuffled"] == outs["frames"]
    # the registry's column path gives predict's values
    px, _ = read_clipped(files[0], DateJob(D1, grid, full, str(tmp_path), cfg.ingest.max_slope_deg, {}, None))
    ref = reg.predict(px, with_features=True)
    got = reg.predict_columns({c: px[c].to_numpy() for c in px.columns})
    for c in ("ssm", "ssm_p05", "ssm_p95"):
        np.testing.assert_array_equal(got[c], ref[c].to_numpy())
    np.testing.assert_array_equal(got["qc"], ref["qc"].to_numpy())
    np.testing.assert_array_equal(np.array(got["model_ids"], dtype=object)[got["unit"]], ref["model_id"].to_numpy())
    for c in ("mv_wcm", "sigma0_soil_vv_db", "mv_oh"):
        np.testing.assert_array_equal(got["features"][c], ref[c].to_numpy())


@pytest.mark.spark
@pytest.mark.slow
def test_interrupted_run_resumes_to_the_same_bytes(spark, small, clean, caplog):
    cfg, root = small
    _, ref = clean
    out = root / "interrupted"
    args = (spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D2, out)

    def stop_at(stage, date):
        def hook(s, d):
            if (s, d) == (stage, date):
                raise _Interrupt(f"killed at {s} {d}")
        return hook

    with pytest.raises(_Interrupt):  # killed with the second date written to staging, not committed
        P.produce(*args, hook=stop_at("staged", D2))
    assert (out / "parquet" / f"date={D1}" / "_SUCCESS.json").is_file()
    assert not (out / "parquet" / f"date={D2}").exists() and not (out / "cog" / D2).exists()
    assert any((out / "_staging").iterdir())  # the half-done date, invisible to readers
    with caplog.at_level(logging.INFO, logger="ssm_spark.product.run"):
        again = P.produce(*args)
    assert again["dates"][D1]["status"] == "skipped" and again["dates"][D2]["status"] == "produced"
    assert any("skipping" in r.getMessage() and D1 in r.getMessage() for r in caplog.records)
    assert not (out / "_staging").exists()
    assert _files(out) == _files(ref)

    # killed in the middle of the commit: Parquet moved, COGs not, no marker -> recomputed, same bytes
    with pytest.raises(_Interrupt):
        P.produce(*args, force=True, hook=stop_at("partial", D1))
    assert not (out / "parquet" / f"date={D1}" / "_SUCCESS.json").exists()
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="ssm_spark.product.run"):
        third = P.produce(*args)
    assert third["dates"][D1]["status"] == "produced" and third["dates"][D2]["status"] == "skipped"
    assert _files(out) == _files(ref)


@pytest.mark.spark
@pytest.mark.slow
def test_shuffle_grouping_same_bytes_and_changed_settings_recompute(spark, small, clean, caplog):
    cfg, root = small
    _, ref = clean
    out = root / "regrouped"
    shutil.copytree(ref, out)
    # one file a task (4 tasks, not 2) and the allocator's defaults in the workers: the same rows too
    shuffled = load_config(overrides=SMALL + ["produce.tile_grouping=shuffle", "produce.dates_in_flight=1",
                                              "produce.min_files_per_task=1", "produce.keep_tile_memory=false"])
    s = P.produce(spark, shuffled, root / "models", root / "sim" / "stacks", None, D1, D1, out, force=True)
    assert s["dates"][D1]["grouping"] == "shuffle by tile"
    # rows regrouped by Spark: the same rows and pixels (the files differ only in the recorded config hash)
    assert _decoded(out, D1) == _decoded(ref, D1)

    more = load_config(overrides=SMALL + ["produce.cog_bands=[ssm, ssm_p05, ssm_p95, qc]", "produce.quicklook=false"])
    before_d2 = {k: v for k, v in _files(out).items() if D2 in k}
    with caplog.at_level(logging.INFO, logger="ssm_spark.product.run"):
        s = P.produce(spark, more, root / "models", root / "sim" / "stacks", None, D1, D1, out)
    assert s["dates"][D1]["status"] == "produced"
    assert any("recomputing" in r.getMessage() and "product hash" in r.getMessage() for r in caplog.records)
    assert not (out / "quicklook" / f"{D1}.png").exists()  # replaced as a whole: no stale quicklook
    with rasterio.open(out / "vrt" / f"{D1}.vrt") as v:
        assert v.descriptions == ("ssm", "ssm_p05", "ssm_p95", "qc")
        lo, mid, hi = v.read(2), v.read(1), v.read(3)
    ok = np.isfinite(mid)
    assert ok.any() and (lo[ok] <= hi[ok]).all()
    assert {k: v for k, v in _files(out).items() if D2 in k} == before_d2  # other dates untouched


@pytest.mark.spark
@pytest.mark.slow
def test_geojson_region_clips_like_sedona(spark, small, tmp_path):
    from ssm_spark.sources.stacks import discover, read_file_cells

    cfg, root = small
    grid = cfg.grid.build()
    win = cfg.region.window(grid)
    lon, lat = grid.to_lonlat(np.array([win.row_off, win.row_off + 63]), np.array([win.col_off, win.col_off + 63]))
    # a triangle over part of the region: every tile partly covered
    (x0, x1), (y1, y0) = lon, lat
    tri = Polygon([(x0 + 0.05, y0 + 0.05), (x1 + 0.3, y0 + 0.1), (x0 + 0.2, y1 + 0.3)])
    (tmp_path / "tri.geojson").write_text(json.dumps({"type": "Feature", "properties": {}, "geometry": mapping(tri)}))
    out = tmp_path / "tri"
    s = P.produce(spark, cfg, root / "models", root / "sim" / "stacks", str(tmp_path / "tri.geojson"), D2, D2, out)
    assert s["region"]["kind"] == "geojson" and s["region"]["tiles_partly_covered"] >= 1
    got = spark.read.parquet(str(out / "parquet")).select("row", "col").toPandas()
    # the expected cells by Sedona: every acquisition cell of the date whose centre intersects the polygon
    inv = discover(root / "sim" / "stacks", grid, root / "sim" / "static")
    px = pd.concat([read_file_cells(f, grid, cfg.ingest.max_slope_deg) for f in inv.files if f.date == D2])
    want = (spark.createDataFrame(px[["row", "col", "lon", "lat"]])
            .where(f"ST_Intersects(ST_GeomFromWKT('{tri.wkt}'), ST_Point(lon, lat))").select("row", "col").toPandas())
    assert 200 < len(want) < len(px)
    key = lambda d: sorted(zip(d["row"], d["col"]))  # noqa: E731
    assert key(got) == key(want)
    with rasterio.open(out / "vrt" / f"{D2}.vrt") as v:
        a = v.read(1)
    assert np.isfinite(a).sum() <= len(want) and np.isnan(a).sum() > 0


@pytest.mark.spark
def test_cli_run_skips_a_complete_product(spark, small, clean, capsys):
    _, root = small
    _, ref = clean
    # the test session's own settings, so that session() hands back the shared session unchanged
    cfg = load_config(overrides=SMALL + ["spark.shuffle_partitions=2", "spark.app_name=ssm-spark-tests"])
    parser = argparse.ArgumentParser()
    JOBS["produce"].add_arguments(parser)
    args = parser.parse_args(["--models", str(root / "models"), "--stacks", str(root / "sim" / "stacks"),
                              "--start", D1, "--end", D2, "--output", str(ref)])
    assert args.region is None and not args.force
    before = _files(ref)
    assert JOBS["produce"].run(args, cfg) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["skipped"] == 2 and printed["produced"] == 0
    assert _files(ref) == before
    bad = parser.parse_args(["--models", str(root / "models"), "--stacks", str(root / "sim" / "stacks"),
                             "--start", "2030-01-01", "--output", str(ref)])
    with pytest.raises(InputError, match="no usable stack file dated 2030-01-01"):
        JOBS["produce"].run(bad, cfg)


@pytest.mark.spark
@pytest.mark.slow
def test_a_corrupt_tile_is_recorded_and_the_date_goes_on(spark, small, tmp_path):
    cfg, root = small
    stacks = tmp_path / "stacks"
    shutil.copytree(root / "sim" / "stacks" / D1, stacks / D1)
    bad = sorted((stacks / D1).glob("*.tif"))[0]
    blob = bytearray(bad.read_bytes())
    blob[200:len(blob) // 2] = b"\xff" * (len(blob) // 2 - 200)  # header intact, data blocks garbage
    bad.write_bytes(bytes(blob))
    # a second file fails the driver's checks: a GeoTIFF in lon/lat, not on the grid (quarantined)
    off = sorted((stacks / D1).glob("*.tif"))[1]
    with rasterio.open(off) as src:
        prof, data, desc = src.profile, src.read(), src.descriptions
    prof.update(crs="EPSG:4326", transform=rasterio.transform.from_origin(2.0, 45.0, 0.01, 0.01))
    with rasterio.open(off, "w", **prof) as dst:
        dst.write(data)
        dst.descriptions = desc
    s = P.produce(spark, cfg, root / "models", stacks, None, D1, D1, tmp_path / "out", static=root / "sim" / "static")
    r = s["dates"][D1]
    assert r["files_failed"] == 1 and r["tiles"] == 2 and r["pixels"] == 2 * 1024
    reasons = {Path(f["file"]).name: f["reason"] for f in s["failed_files"]}
    assert set(reasons) == {bad.name, off.name} and "EPSG:4326" in reasons[off.name]
    marker = json.loads((tmp_path / "out" / "parquet" / f"date={D1}" / "_SUCCESS.json").read_text())
    assert {Path(f["file"]).name for f in marker["failed_files"]} == {bad.name, off.name}
    assert len(list((tmp_path / "out" / "cog" / D1).iterdir())) == 2
    # the quarantined file is an input: replacing it recomputes the date, now with its tile
    shutil.copy(root / "sim" / "stacks" / D1 / off.name, off)
    s2 = P.produce(spark, cfg, root / "models", stacks, None, D1, D1, tmp_path / "out", static=root / "sim" / "static")
    assert s2["incomplete"] == 1 and s2["dates"][D1]["tiles"] == 3  # the unreadable tile is still unreadable
    # every file of a date unusable: no product for it, said in the summary
    other = tmp_path / "only_bad"
    (other / D2).mkdir(parents=True)
    shutil.copy(off, other / D2 / off.name)
    with rasterio.open(other / D2 / off.name, "r+") as dst:
        dst.crs = "EPSG:4326"
    with pytest.raises(InputError, match="quarantined"):
        P.produce(spark, cfg, root / "models", other, None, D2, D2, tmp_path / "out2", static=root / "sim" / "static")


# ------------------------------------------------------------------- bad input: refused or counted


def _sibling_stacks(root: Path, tmp_path: Path, date: str = D1) -> tuple[Path, list[Path]]:
    stacks = tmp_path / "stacks"
    shutil.copytree(root / "sim" / "stacks" / date, stacks / date)
    return stacks, sorted((stacks / date).glob("*.tif"))


@pytest.mark.spark
@pytest.mark.slow
def test_a_date_with_bad_files_holds_no_wrong_row_and_its_ledger_adds_up(spark, small, tmp_path):
    """A copy of a tile beside it, a tile with no acquisition, an unreadable tile, a tile without
    lst_k and with +inf values: no cell twice, every file accounted for, the date incomplete (re-tried)."""
    cfg, root = small
    stacks, tifs = _sibling_stacks(root, tmp_path)
    shutil.copy(tifs[0], tifs[0].with_name(tifs[0].stem + " (copy).tif"))
    with rasterio.open(tifs[1]) as src:
        prof, data, desc = src.profile, src.read(), src.descriptions
    with rasterio.open(tifs[1], "w", **prof) as dst:  # no acquisition at all
        dst.write(np.full_like(data, np.nan))
        dst.descriptions = desc
    blob = bytearray(tifs[2].read_bytes())
    blob[200:len(blob) // 2] = b"\xff" * (len(blob) // 2 - 200)
    tifs[2].write_bytes(bytes(blob))
    with rasterio.open(tifs[3]) as src:
        prof, data, desc = src.profile, src.read(), list(src.descriptions)
    keep = [i for i, d in enumerate(desc) if d != "lst_k"]
    data = data[keep]
    data[desc.index("ndvi") - 1 if desc.index("ndvi") > desc.index("lst_k") else desc.index("ndvi"), 0, :5] = np.inf
    prof.update(count=len(keep))
    with rasterio.open(tifs[3], "w", **prof) as dst:
        dst.write(data)
        dst.descriptions = [desc[i] for i in keep]
    out = tmp_path / "out"
    s = P.produce(spark, cfg, root / "models", stacks, None, D1, D1, out, static=root / "sim" / "static")
    r = s["dates"][D1]
    assert r["status"] == "incomplete" and s["incomplete"] == 1 and s["produced"] == 0
    prod = spark.read.parquet(str(out / "parquet")).toPandas()
    assert not prod.duplicated(["row", "col"]).any() and len(prod) == r["pixels"] == 2 * 1024  # tiles 0 and 3
    assert r["files_in"] == 5 and (r["files_read"], r["files_without_acquisition"], r["files_read_failed"],
                                   r["files_quarantined"]) == (2, 1, 1, 1)
    assert r["pixels"] == r["retrieved"] + r["masked"] + r["out_of_range"] + r["no_estimate"] and r["out_of_range"] == 0
    assert s["ledger"]["files_in"] == 5 and s["ledger"]["files_quarantined"] == 1 and s["ledger"]["pixels"] == r["pixels"]
    marker = json.loads((out / "parquet" / f"date={D1}" / "_SUCCESS.json").read_text())
    assert marker["status"] == "incomplete" and marker["counts"]["files_in"] == 5
    reasons = {Path(f["file"]).name: f["reason"] for f in marker["failed_files"]}
    assert set(reasons) == {tifs[0].stem + " (copy).tif", tifs[2].name}
    assert "static layer(s)" in reasons[tifs[0].stem + " (copy).tif"] and "Decoding error" in reasons[tifs[2].name]
    assert [Path(e["file"]).name for e in marker["files_without_acquisition"]] == [tifs[1].name]
    assert {b: [Path(p).name for p in v] for b, v in marker["bands_absent"].items()} == {"lst_k": [tifs[3].name]}
    bad = [v for v in marker["values_set_missing_by_file"] if Path(v["file"]).name == tifs[3].name and v["band"] == "ndvi"]
    assert bad and bad[0]["n"] >= 5 and bad[0]["n_infinite"] == 5
    # incomplete: the next run tries the date again (the read error may have been transient)
    shutil.copy(root / "sim" / "stacks" / D1 / tifs[2].name, tifs[2])
    s2 = P.produce(spark, cfg, root / "models", stacks, None, D1, D1, out, static=root / "sim" / "static")
    assert s2["produced"] == 1 and s2["dates"][D1]["files_read_failed"] == 0 and s2["dates"][D1]["tiles"] == 3
    s3 = P.produce(spark, cfg, root / "models", stacks, None, D1, D1, out, static=root / "sim" / "static")
    assert s3["skipped"] == 1


@pytest.mark.spark
def test_refusals_before_any_work(spark, small, tmp_path):
    """A held output folder, a registry of another feature set and an unwritable output are refused
    with messages that name them; nothing is written."""
    import os
    import subprocess

    from ssm_spark.errors import InputIOError, ModelRegistryError
    from ssm_spark.models import registry as R
    from ssm_spark.models import selection
    from ssm_spark.product.files import LOCK, OutputLock

    cfg, root = small
    args = (root / "models", root / "sim" / "stacks", None, D1, D1)
    out = tmp_path / "held"
    out.mkdir()
    with OutputLock(out, "test run"):
        with pytest.raises(InputError, match=rf"is in use by another test run: pid {os.getpid()} on"):
            P.produce(spark, cfg, *args, out)
    assert sorted(p.name for p in out.iterdir()) == []  # released, nothing written
    dead = subprocess.Popen(["true"])
    dead.wait()
    (out / LOCK).write_text(json.dumps({"pid": dead.pid, "host": __import__("socket").gethostname(), "token": "x"}))
    with OutputLock(out) as lock:  # a killed run's lock is taken over
        assert json.loads((out / LOCK).read_text())["token"] == lock.token
    assert not (out / LOCK).exists()
    # a registry trained on VH only, given stacks with VV
    m = pd.read_parquet(root / "matchups.parquet").drop(columns=["vv_db"])
    m = m[[c for c in m.columns if "vv" not in c and c not in ("mv_oh", "ks_oh", "cross_ratio_db")]]
    R.save_registry(tmp_path / "vh_models", selection.train_models(m, cfg), cfg)
    with pytest.raises(ModelRegistryError, match=r"extra \['vv_db'\]"):
        P.produce(spark, cfg, tmp_path / "vh_models", *args[1:], tmp_path / "vh_out")
    assert not (tmp_path / "vh_out" / "parquet").exists()
    with pytest.raises(InputIOError, match=r"--output .*: cannot write there"):
        (tmp_path / "a_file").write_text("")
        P.produce(spark, cfg, *args, tmp_path / "a_file" / "out")  # a file in the way


@pytest.mark.spark
@pytest.mark.slow
def test_a_broken_model_fails_the_date_instead_of_writing_wild_values(spark, small, tmp_path):
    import hashlib

    import xgboost as xgb

    cfg, root = small
    models = tmp_path / "models"
    shutil.copytree(root / "models", models)
    man = json.loads((models / "manifest.json").read_text())
    glob = man["serving"]["global"]
    for unit in man["serving"]:  # every environment served by the global model, whose bytes are rewritten
        man["serving"][unit] = dict(glob)
    for rel in [glob["point_model"]]:
        b = xgb.Booster()
        b.load_model(bytearray((models / rel).read_bytes()))
        j = json.loads(b.save_raw("json"))
        j["learner"]["learner_model_param"]["base_score"] = "[2.5E1]"  # bytes and checksum both rewritten
        b.load_model(bytearray(json.dumps(j).encode()))
        blob = bytes(b.save_raw("ubj"))
        (models / rel).write_bytes(blob)
        man["files"][rel] = {"sha256": hashlib.sha256(blob).hexdigest(), "bytes": len(blob)}
    (models / "manifest.json").write_text(json.dumps(man))
    from ssm_spark.errors import ModelRegistryError

    with pytest.raises(ModelRegistryError, match=r"unmasked cells \(\d+%\) got estimates outside the physical range"):
        P.produce(spark, cfg, models, root / "sim" / "stacks", None, D1, D1, tmp_path / "out")
    assert not (tmp_path / "out" / "parquet").exists() and not (tmp_path / "out" / "_staging").exists()


# ------------------------------------------------------------------------- multi-scale products

AGG = ["produce.aggregate=[3, 9, 36]", "produce.aggregate_min_fraction=0.5"]


@pytest.fixture(scope="module")
def agg(spark, small):
    """One date aggregated onto 3, 9 and 36 km besides the 1 km product."""
    _, root = small
    cfg = load_config(overrides=SMALL + AGG)
    out = root / "agg"
    summary = P.produce(spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D1, out)
    return cfg, summary, out


def _agg_decoded(root: Path, date: str) -> dict[str, object]:
    out: dict[str, object] = {}
    for p in sorted((root / "agg").glob(f"*/parquet/date={date}/*.parquet")):
        out[p.name] = pq.read_table(p).replace_schema_metadata(None).to_pandas().to_json()
    for p in sorted((root / "agg").glob(f"*/cog/{date}/*.tif")):
        with rasterio.open(p) as src:
            out[p.name] = (src.read().tobytes(), src.transform, src.descriptions)
    return out


@pytest.mark.spark
@pytest.mark.slow
def test_multiscale_products_are_block_means_with_provenance(spark, small, clean, agg):
    _, ref = clean
    cfg, summary, out = agg
    grid = cfg.grid.build()
    mid, chash, phash = summary["manifest_id"], cfg.hash(), summary["product_hash"]
    r = summary["dates"][D1]
    assert r["status"] == "produced" and set(r["aggregates"]) == {"ease2_3km", "ease2_9km", "ease2_36km"}
    assert r["aggregate_seconds"] > 0
    assert _decoded(out, D1) == _decoded(ref, D1)  # the 1 km product is the same with aggregation on
    marker = json.loads((out / "parquet" / f"date={D1}" / "_SUCCESS.json").read_text())
    info = json.loads((out / "product.json").read_text())
    assert [g["grid"] for g in info["aggregates"]["grids"]] == ["ease2_3km", "ease2_9km", "ease2_36km"]

    # known answer: 9 km block means of the 1 km Parquet, numpy (Grid.aggregate) against the written aggregate
    win = cfg.region.window(grid)
    fine = spark.read.parquet(str(out / "parquet")).where(f"date = DATE'{D1}'").select("row", "col", "ssm").toPandas()
    arr = np.full((int(win.height), int(win.width)), np.nan)
    arr[fine["row"] - win.row_off, fine["col"] - win.col_off] = fine["ssm"].to_numpy("f8")
    for name, km in [("ease2_3km", 3), ("ease2_9km", 9), ("ease2_36km", 36)]:
        coarse = Grid.ease2(km, tile_size=32)
        got = spark.read.parquet(str(out / "agg" / name / "parquet")).toPandas().sort_values(["row", "col"])
        assert sorted(got.columns) == sorted(AGG_COLUMNS) and (got["date"].astype(str) == D1).all()
        min_count = int(np.ceil(0.5 * km * km))
        mean, count, cwin = grid.aggregate(arr, win, coarse, min_count=min_count)
        cr, cc = got["row"].to_numpy() - cwin.row_off, got["col"].to_numpy() - cwin.col_off
        # the files hold float32 estimates (schema.ESTIMATES): the block mean, to float32's rounding
        assert got["ssm"].dtype == np.float32
        np.testing.assert_allclose(got["ssm"].to_numpy("f8"), mean[cr, cc], rtol=1.2e-7, atol=0, equal_nan=True)
        np.testing.assert_array_equal(got["n_valid"], count[cr, cc])
        assert len(got) == (mean.shape[0] * mean.shape[1]) and got["ssm"].notna().any()  # every coarse cell touched
        assert r["aggregates"][name] == {"tiles": got.groupby(["tile_row", "tile_col"]).ngroups, "cells": len(got),
                                         "valid": int(got["ssm"].notna().sum())}
        assert set(f"{name}_{a}_{b}.parquet" for a, b in zip(got["tile_row"], got["tile_col"])) == {
            p.name for p in (out / "agg" / name / "parquet" / f"date={D1}").iterdir()}
        # each coarse tile COG holds its Parquet's values; every file names manifest, config and product
        for (tr, tc), rows in got.groupby(["tile_row", "tile_col"]):
            stem = f"{name}_{tr}_{tc}"
            assert f"agg/{name}/cog/{D1}/{stem}.tif" in marker["outputs"]
            with rasterio.open(out / "agg" / name / "cog" / D1 / f"{stem}.tif") as src:
                assert src.descriptions == ("ssm", "qc", "frac_valid") and src.crs.to_epsg() == 6933
                assert src.transform == coarse.tile_transform(tr, tc)
                tags = src.tags()
                assert (tags["manifest_id"], tags["config_hash"], tags["product_hash"]) == (mid, chash, phash)
                assert tags["grid"] == name and tags["aggregated_from"] == "ease2_1km" and tags["nest_factor"] == str(km)
                a = src.read()
            w = coarse.tile_window(tr, tc)
            rr, rc = rows["row"].to_numpy() - w.row_off, rows["col"].to_numpy() - w.col_off
            np.testing.assert_array_equal(a[0, rr, rc], rows["ssm"].to_numpy("f8").astype("f4"))
            np.testing.assert_array_equal(a[1, rr, rc].astype(int), rows["qc"].to_numpy())
            np.testing.assert_array_equal(a[2, rr, rc], rows["frac_valid"].to_numpy().astype("f4"))
            assert np.isnan(a[0]).sum() == a[0].size - rows["ssm"].notna().sum()
            kv = json.loads(pq.read_schema(out / "agg" / name / "parquet" / f"date={D1}" / f"{stem}.parquet")
                            .metadata[b"ssm_spark"])
            assert (kv["manifest_id"], kv["config_hash"], kv["product_hash"], kv["date"]) == (mid, chash, phash, D1)
        with rasterio.open(out / "agg" / name / "vrt" / f"{D1}.vrt") as v:
            assert v.tags()["manifest_id"] == mid and v.tags()["grid"] == name and v.res == (coarse.cell, coarse.cell)
            m = v.read(1)
            left = round((v.transform.c - coarse.x0) / coarse.cell)  # the VRT's first cell, global coarse cells
            top = round((coarse.y0 - v.transform.f) / coarse.cell)
        np.testing.assert_array_equal(m[got["row"] - top, got["col"] - left], got["ssm"].to_numpy("f8").astype("f4"))
        from PIL import Image

        with Image.open(out / "agg" / name / "quicklook" / f"{D1}.png") as im:  # one quicklook per grid
            assert im.text["manifest_id"] == mid and im.text["product_hash"] == phash and im.text["grid"] == name


@pytest.mark.spark
@pytest.mark.slow
def test_multiscale_resume_is_byte_identical_and_dropped_grids_go(spark, small, agg):
    cfg, _, ref = agg
    _, root = small
    out = root / "agg_interrupted"
    args = (spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D1, out)
    assert P.produce(spark, cfg, root / "models", root / "sim" / "stacks", None, D1, D1, ref)["skipped"] == 1

    def hook(s, d):
        if s == "partial":
            raise _Interrupt("killed in the commit")

    with pytest.raises(_Interrupt):  # 1 km Parquet moved, nothing else: no marker, no aggregate visible
        P.produce(*args, hook=hook)
    assert not (out / "agg").exists() and not (out / "parquet" / f"date={D1}" / "_SUCCESS.json").exists()
    assert P.produce(*args)["produced"] == 1
    assert _files(out) == _files(ref)

    # fewer grids: the date is recomputed and the dropped grids' outputs of the date are removed
    nine = load_config(overrides=SMALL + ["produce.aggregate=[9]"])
    s = P.produce(spark, nine, root / "models", root / "sim" / "stacks", None, D1, D1, out)
    assert s["produced"] == 1 and list(s["dates"][D1]["aggregates"]) == ["ease2_9km"]
    assert sorted(p.name for p in (out / "agg").iterdir() if any(p.rglob("*.parquet"))) == ["ease2_9km"]
    assert not (out / "agg" / "ease2_3km" / "parquet" / f"date={D1}").exists()
    assert not (out / "agg" / "ease2_36km" / "vrt" / f"{D1}.vrt").exists()
    assert {k: v for k, v in _agg_decoded(out, D1).items() if "9km" in k} == {
        k: v for k, v in _agg_decoded(ref, D1).items() if "9km" in k}
    with pytest.raises(ConfigError, match="produce.aggregate: 'ease2_3km'.*grid.name=ease2_9km"):
        P.produce(spark, load_config(overrides=SMALL + ["grid.name=ease2_9km", "produce.aggregate=[3]"]),
                  root / "models", root / "sim" / "stacks", None, D1, D1, tmp := root / "never")
    assert not tmp.exists()
