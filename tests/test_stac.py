"""stac: the catalogue of a small product (tile COGs, VRT, quicklook and Parquet written by the
product's own writers), valid against the STAC schemas offline, updated per commit, relative hrefs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
from pystac.validation import JsonSchemaSTACValidator, set_validator, validate_dict

from ssm_spark import stac
from ssm_spark.errors import InputError
from ssm_spark.grid import Grid
from ssm_spark.io import write_json_atomic
from ssm_spark.product.cog import tile_arrays, write_tile_cog
from ssm_spark.product.quicklook import render_quicklook
from ssm_spark.product.schema import PRODUCT_FILE, arrow_table
from ssm_spark.product.vrt import write_vrt

SCHEMAS = Path(__file__).parent / "data" / "stac_schemas"
GRID = Grid.ease2(1, tile_size=16)
TILES = [(140, 1100), (140, 1101), (141, 1100)]
BANDS = ["ssm", "qc"]
TAGS = {"manifest_id": "m1", "config_hash": "c1", "product_hash": "p1"}


@pytest.fixture(scope="module")
def validator():
    """pystac's jsonschema validator, offline: its own core schemas plus the two extension schemas
    vendored in tests/data/stac_schemas (sources in the README there); nothing is fetched."""
    v = JsonSchemaSTACValidator()
    for name, uri in [("projection-v1.1.0.json", stac.PROJECTION_V1_1),
                      ("raster-v1.1.0.json", "https://stac-extensions.github.io/raster/v1.1.0/schema.json")]:
        v.schema_cache[uri] = json.loads((SCHEMAS / name).read_text())

    def offline(uri: str):
        raise AssertionError(f"the validation tried to fetch {uri}: vendor it in {SCHEMAS}")

    v._get_schema = lambda uri: v.schema_cache[uri] if uri in v.schema_cache else offline(uri)
    set_validator(v)
    yield v
    set_validator(JsonSchemaSTACValidator())


def _commit_date(out: Path, date: str, seed: int) -> dict:
    """One date of a product as ``produce`` lays it out: Parquet + COG per tile, VRT, quicklook, marker last."""
    rng = np.random.default_rng(seed)
    outputs = {}
    for tr, tc in TILES:
        w = GRID.tile_window(tr, tc)
        r, c = np.meshgrid(np.arange(w.row_off, w.row_off + 16), np.arange(w.col_off, w.col_off + 16), indexing="ij")
        r, c = r.ravel(), c.ravel()
        lon, lat = GRID.to_lonlat(r, c)
        ssm = rng.uniform(0.05, 0.45, r.size)
        ssm[:20] = np.nan
        rows = pd.DataFrame({"grid": GRID.name, "tile_row": tr, "tile_col": tc, "row": r, "col": c, "lon": lon,
                             "lat": lat, "ssm": ssm, "ssm_p05": ssm - 0.05, "ssm_p95": ssm + 0.05, "env": "e",
                             "model_id": "x", "qc": np.where(np.isnan(ssm), 8, 0).astype("i4")})
        name = f"{GRID.name}_{tr}_{tc}"
        rel = f"parquet/date={date}/{name}.parquet"
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(arrow_table(rows, PRODUCT_FILE, TAGS), out / rel)
        outputs[rel] = (out / rel).stat().st_size
        rel = f"cog/{date}/{name}.tif"
        outputs[rel] = write_tile_cog(out / rel, tile_arrays(rows, GRID, tr, tc, BANDS), GRID, tr, tc, BANDS, TAGS)
    rel = f"vrt/{date}.vrt"
    outputs[rel] = write_vrt(out / rel, GRID, [(tr, tc, f"../cog/{date}/{GRID.name}_{tr}_{tc}.tif") for tr, tc in TILES],
                             TILES, BANDS, TAGS)
    rel = f"quicklook/{date}.png"
    outputs[rel] = render_quicklook(out / f"vrt/{date}.vrt", out / rel, title=date)
    # an aggregated grid's files (produce.aggregate): one coarse tile, its VRT
    cg = Grid.ease2(3, tile_size=16)
    ctr, ctc = (int(v) // 16 for v in cg.to_cell(*GRID.to_lonlat(140 * 16, 1100 * 16)))
    cw = cg.tile_window(ctr, ctc)
    r, c = np.meshgrid(np.arange(cw.row_off, cw.row_off + 16), np.arange(cw.col_off, cw.col_off + 16), indexing="ij")
    crows = pd.DataFrame({"row": r.ravel(), "col": c.ravel(), "ssm": rng.uniform(0.1, 0.4, 256), "qc": 0})
    cname = f"{cg.name}_{ctr}_{ctc}"
    rel = f"agg/{cg.name}/cog/{date}/{cname}.tif"
    outputs[rel] = write_tile_cog(out / rel, tile_arrays(crows, cg, ctr, ctc, BANDS), cg, ctr, ctc, BANDS, TAGS)
    rel = f"agg/{cg.name}/vrt/{date}.vrt"
    outputs[rel] = write_vrt(out / rel, cg, [(ctr, ctc, f"../cog/{date}/{cname}.tif")], [(ctr, ctc)], BANDS, TAGS)
    marker = {"date": date, "status": "complete", **TAGS, "software": "ssm_spark test", "grid": GRID.name,
              "counts": {"pixels": 768, "retrieved": 708, "masked": 60, "ssm_mean": 0.25}, "outputs": outputs}
    write_json_atomic(out / "parquet" / f"date={date}" / stac.MARKER, marker)
    write_json_atomic(out / "product.json", {"product": "surface soil moisture (m3/m3), ssm_spark",
                                             "software": "ssm_spark test", "grid": GRID.describe(),
                                             "region": {"name": "test", "kind": "bbox", "tiles": 3},
                                             **TAGS, "dates": stac.committed_dates(out)})
    return marker


def test_catalogue_is_valid_complete_and_relative(tmp_path: Path, validator):
    out = tmp_path / "product"
    marker = _commit_date(out, "2024-04-01", 1)
    stac.on_commit(out, "2024-04-01", marker)
    _commit_date(out, "2024-04-07", 2)
    stac.on_commit(out, "2024-04-07")

    coll_path = out / "stac" / "collection.json"
    coll = json.loads(coll_path.read_text())
    items = {p.stem: json.loads(p.read_text()) for p in sorted((out / "stac" / "items").glob("*.json"))}
    assert sorted(items) == ["2024-04-01", "2024-04-07"]
    # valid against the core and extension schemas (pystac's jsonschema validation, offline)
    assert validate_dict(coll) is not None
    for d in items.values():
        validated = validate_dict(d)
        assert stac.PROJECTION_V1_1 in validated and any("raster" in u for u in validated)
    # ... and the validation can fail: a wrong type in each extension's field
    for key, bad in [("proj:epsg", "EPSG:6933"), ("proj:shape", [32])]:
        with pytest.raises(pystac.STACValidationError, match="projection"):
            validate_dict({**items["2024-04-01"], "properties": {**items["2024-04-01"]["properties"], key: bad}})
    bad = json.loads(json.dumps(items["2024-04-01"]))
    bad["assets"]["cog_140_1100"]["raster:bands"][0]["data_type"] = "float33"
    with pytest.raises(pystac.STACValidationError, match="raster"):
        validate_dict(bad)
    assert [ln["href"] for ln in coll["links"] if ln["rel"] == "item"] == ["./items/2024-04-01.json",
                                                                          "./items/2024-04-07.json"]
    assert coll["extent"]["temporal"]["interval"] == [["2024-04-01T00:00:00Z", "2024-04-07T23:59:59.999999Z"]]
    assert coll["ssm_spark:manifest_id"] == "m1" and coll["id"] == "ssm-test-ease2_1km"

    item = items["2024-04-01"]
    p = item["properties"]
    assert p["datetime"] is None and p["start_datetime"] == "2024-04-01T00:00:00Z"
    assert (p["ssm_spark:manifest_id"], p["ssm_spark:config_hash"], p["proj:epsg"]) == ("m1", "c1", 6933)
    assert p["proj:shape"] == [32, 32] and p["proj:transform"] == list(GRID.tile_transform(140, 1100))[:6]
    # every output of the marker is an asset, by a relative href that resolves to the file
    assert len(item["assets"]) == len(marker["outputs"]) == 10
    hrefs = {a["href"] for a in item["assets"].values()}
    assert hrefs == {f"../../{rel}" for rel in marker["outputs"]}
    for a in item["assets"].values():
        assert not a["href"].startswith("/") and (out / "stac" / "items" / a["href"]).resolve().is_file()
    cog = item["assets"]["cog_140_1101"]
    assert cog["type"] == pystac.MediaType.COG and cog["proj:shape"] == [16, 16]
    assert cog["proj:transform"] == list(GRID.tile_transform(140, 1101))[:6]
    assert [b["data_type"] for b in cog["raster:bands"]] == ["float32", "float32"]
    assert cog["raster:bands"][0]["nodata"] == "nan" and cog["raster:bands"][0]["unit"] == "m3/m3"
    assert item["assets"]["parquet_141_1100"]["type"] == stac.PARQUET_MEDIA_TYPE
    assert item["assets"]["quicklook"]["roles"] == ["overview"]
    agg = {k: a for k, a in item["assets"].items() if k.startswith("ease2_3km_")}
    assert sorted(agg) == ["ease2_3km_cog_46_366", "ease2_3km_vrt"]
    assert all(a["proj:epsg"] == 6933 and a["proj:shape"] == [16, 16] for a in agg.values())
    assert agg["ease2_3km_vrt"]["proj:transform"] == list(Grid.ease2(3, 16).tile_transform(46, 366))[:6]
    # the footprint: the three tiles in lon/lat (an L shape), its bbox the tiles' bounds
    import shapely
    from shapely.geometry import shape

    want = shapely.union_all([GRID.tile_polygon(tr, tc) for tr, tc in TILES])
    got = shape(item["geometry"])
    assert got.symmetric_difference(want).area < 1e-12 * want.area
    np.testing.assert_allclose(item["bbox"], want.bounds, rtol=0, atol=1e-12)
    # pystac reads it back: the item, its assets and the COG it points to
    back = pystac.Item.from_file(out / "stac" / "items" / "2024-04-01.json")
    with rasterio.open(back.assets["cog_140_1100"].get_absolute_href()) as src:
        assert src.descriptions == ("ssm", "qc")
    assert [i.id for i in pystac.Collection.from_file(coll_path).get_items()] == ["2024-04-01", "2024-04-07"]

    # an unreadable item of another date is rebuilt, the same bytes
    good = (out / "stac" / "items" / "2024-04-07.json").read_bytes()
    (out / "stac" / "items" / "2024-04-07.json").write_text("{")
    stac.on_commit(out, "2024-04-01")
    assert (out / "stac" / "items" / "2024-04-07.json").read_bytes() == good
    # a re-commit replaces the item; a date no longer committed loses its item; no temporaries left
    (out / "parquet" / "date=2024-04-07" / stac.MARKER).unlink()
    stac.update_catalog(out)
    assert sorted(p.name for p in (out / "stac" / "items").iterdir()) == ["2024-04-01.json"]
    assert [ln["href"] for ln in json.loads(coll_path.read_text())["links"] if ln["rel"] == "item"] == [
        "./items/2024-04-01.json"]
    assert not [p for p in (out / "stac").rglob(".*")]


def test_catalogue_refuses_what_it_cannot_describe(tmp_path: Path):
    with pytest.raises(InputError, match="product.json not found"):
        stac.update_catalog(tmp_path)
    out = tmp_path / "p"
    _commit_date(out, "2024-04-01", 1)
    with pytest.raises(InputError, match="dates not committed .*: 2024-05-01"):
        stac.update_catalog(out, ["2024-05-01"])
    (out / "quicklook" / "2024-04-01.png").unlink()
    with pytest.raises(InputError, match=r"2024-04-01.png is listed by the marker of 2024-04-01 but missing"):
        stac.build_item(out, "2024-04-01")
    assert not (out / "stac" / "collection.json").exists()


def test_a_parquet_only_product_gets_its_footprint_from_the_parquet_tiles(tmp_path: Path, validator):
    """``produce.cog=false``: no COG, VRT or quicklook; the item's geometry comes from the tiles of
    the Parquet files (the same footprint as with COGs) and the item is still valid."""
    out = tmp_path / "p"
    full = _commit_date(out, "2024-04-01", 3)
    with_cogs = stac.build_item(out, "2024-04-01", full)
    marker = {**full, "outputs": {k: v for k, v in full["outputs"].items() if k.startswith("parquet/")}}
    item = stac.build_item(out, "2024-04-01", marker)
    assert sorted(item.assets) == sorted(f"parquet_{tr}_{tc}" for tr, tc in TILES)
    assert item.bbox == with_cogs.bbox and item.geometry == with_cogs.geometry
    write_json_atomic(out / "parquet" / "date=2024-04-01" / stac.MARKER, marker)  # as produce commits it
    stac.update_catalog(out)
    assert validate_dict(json.loads((out / "stac" / "items" / "2024-04-01.json").read_text())) is not None
    with pytest.raises(InputError, match="lists no tile"):
        stac.build_item(out, "2024-04-01", {**full, "outputs": {"vrt/2024-04-01.vrt": 1}})


def test_a_date_without_item_or_files_is_left_out_not_fatal_to_another_dates_commit(tmp_path: Path, caplog):
    """The working folder of a product on a store holds only markers and STAC files: a committed date with
    no item (made with produce.stac: false) and no files does not stop the next date's item; it is left out
    of the collection, said; the date being committed still needs its files; prune_catalog drops what is gone."""
    import shutil

    out = tmp_path / "p"
    _commit_date(out, "2024-04-01", 1)  # committed, never catalogued, its data files gone (published)
    for sub in ("cog", "vrt", "quicklook", "agg"):
        shutil.rmtree(out / sub)
    for p in (out / "parquet" / "date=2024-04-01").glob("*.parquet"):
        p.unlink()
    _commit_date(out, "2024-04-07", 2)
    caplog.set_level("WARNING")
    stac.on_commit(out, "2024-04-07")
    coll = json.loads((out / "stac" / "collection.json").read_text())
    assert [ln["href"] for ln in coll["links"] if ln["rel"] == "item"] == ["./items/2024-04-07.json"]
    assert "stac: no item for 2024-04-01, committed but not buildable here" in caplog.text
    with pytest.raises(InputError, match="2024-04-01.*listed by the marker of 2024-04-01 but missing"):
        stac.on_commit(out, "2024-04-01")  # the date asked for: still an error
    assert stac.prune_catalog(out) == {"items": ["2024-04-07"], "removed": [], "missing": ["2024-04-01"]}
    (out / "parquet" / "date=2024-04-07" / stac.MARKER).unlink()  # 2024-04-07 no longer committed
    assert stac.prune_catalog(out) == {"items": [], "removed": ["2024-04-07"], "missing": ["2024-04-01"]}
    assert not (out / "stac" / "collection.json").exists() and not (out / "stac" / "items" / "2024-04-07.json").exists()
