"""The built-in simulator on a small region: 64 x 64 cells of EASE-Grid 2.0 1 km (2 x 2 tiles of 32),
6 dates (2024-04-01 .. 2024-05-01), 12 stations in 4 environments."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import rasterio

from ssm_spark.config import load_config
from ssm_spark.sources import simulate as simmod
from ssm_spark.sources.simulate import (
    CLASS_BANDS,
    HIDDEN_BANDS,
    STACK_BANDS,
    STATIC_BANDS,
    environment,
    koppen_main,
    simulate,
)

SMALL = ["region.size_km=[64,64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3"]


def _cfg(*extra: str):
    return load_config(overrides=SMALL + list(extra))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """One small simulation shared by the tests of this module: (config, summary, output folder)."""
    cfg = _cfg()
    out = tmp_path_factory.mktemp("sim") / "demo"
    summary = simulate(cfg, out)
    return cfg, summary, out


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _mosaic(folder: Path, grid_name: str, tiles, suffix: str = "") -> np.ndarray:
    rows = sorted({t[0] for t in tiles})
    cols = sorted({t[1] for t in tiles})
    blocks = []
    for r in rows:
        line = []
        for c in cols:
            with rasterio.open(folder / f"{grid_name}_{r}_{c}{suffix}.tif") as ds:
                line.append(ds.read())
        blocks.append(np.concatenate(line, axis=2))
    return np.concatenate(blocks, axis=1)


@pytest.fixture(scope="module")
def cube(run):
    """Region mosaics of every output date and the static layers."""
    cfg, summary, out = run
    g, tiles = summary.grid["name"], summary.tiles
    stacks = np.stack([_mosaic(out / "stacks" / d, g, tiles) for d in summary.dates])      # (t, band, y, x)
    truth = np.stack([_mosaic(out / "truth" / d, g, tiles)[0] for d in summary.dates])     # (t, y, x)
    return {
        "stacks": stacks, "truth": truth,
        "static": _mosaic(out / "static", g, tiles), "classes": _mosaic(out / "static", g, tiles, "_classes"),
        "hidden": _mosaic(out / "truth" / "static", g, tiles),
    }


# -- layout and provenance -----------------------------------------------------------------------------
def test_layout_and_manifest(run):
    cfg, summary, out = run
    grid = cfg.grid.build()
    window = cfg.region.window(grid)
    assert summary.dates == ["2024-04-01", "2024-04-07", "2024-04-13", "2024-04-19", "2024-04-25", "2024-05-01"]
    assert sorted(map(tuple, summary.tiles)) == sorted(grid.tiles_for_window(window))
    assert len(summary.tiles) == 4
    for d in summary.dates:
        for tr, tc in summary.tiles:
            assert (out / "stacks" / d / f"ease2_1km_{tr}_{tc}.tif").is_file()
            assert (out / "truth" / d / f"ease2_1km_{tr}_{tc}.tif").is_file()
    for tr, tc in summary.tiles:
        assert (out / "static" / f"ease2_1km_{tr}_{tc}.tif").is_file()
        assert (out / "static" / f"ease2_1km_{tr}_{tc}_classes.tif").is_file()
    assert summary.counts["stack_files"] == summary.counts["truth_files"] == 24
    assert summary.counts["stations"] == 12
    # no temporary or sidecar files left behind
    names = [p.name for p in out.rglob("*")]
    assert not [n for n in names if n.startswith(".") or n.endswith((".tmp", ".aux.xml"))]
    manifest = json.loads((out / "simulation.json").read_text())
    assert manifest["config_hash"] == cfg.hash() == summary.config_hash
    assert manifest["seed"] == cfg.simulate.seed
    assert manifest["grid"] == grid.describe()
    assert manifest["window"] == {"row_off": window.row_off, "col_off": window.col_off,
                                  "height": window.height, "width": window.width}
    assert manifest["dates"] == summary.dates
    assert [o["pass"] for o in manifest["overpasses"]][:2] == ["descending", "ascending"]
    assert manifest["counts"] == summary.counts
    assert str(out) not in (out / "simulation.json").read_text()   # relative paths only
    d = summary.to_dict()
    assert d["output"] == str(out) and d["counts"]["sensor_files"] >= 12


def test_deterministic_and_seeded(run, tmp_path):
    cfg, _, out = run
    again = tmp_path / "again"
    simulate(cfg, again)
    first, second = _files(out), _files(again)
    assert first.keys() == second.keys()
    differing = [k for k in first if first[k] != second[k]]
    assert differing == []

    other = tmp_path / "other_seed"
    simulate(_cfg("simulate.seed=7"), other)
    third = _files(other)
    for kind in ("stacks/2024-04-07/ease2_1km_68_549.tif", "truth/2024-04-07/ease2_1km_68_549.tif",
                 "static/ease2_1km_68_549.tif"):
        assert third[kind] != first[kind], kind


def test_rerun_replaces_files_in_place(run, tmp_path):
    """A second run into the same folder rewrites every file (atomically) and leaves no debris."""
    cfg, _, out = run
    target = tmp_path / "twice"
    simulate(cfg, target)
    stamp = _files(target)
    simulate(cfg, target)
    assert _files(target) == stamp


# -- GeoTIFF contract ------------------------------------------------------------------------------------
def test_geotiff_bands_crs_transform_nodata(run):
    cfg, summary, out = run
    grid = cfg.grid.build()
    for tr, tc in summary.tiles:
        expected = [
            (out / "stacks" / summary.dates[0] / f"{grid.name}_{tr}_{tc}.tif", STACK_BANDS, "float32"),
            (out / "truth" / summary.dates[0] / f"{grid.name}_{tr}_{tc}.tif", ("ssm",), "float32"),
            (out / "static" / f"{grid.name}_{tr}_{tc}.tif", STATIC_BANDS, "float32"),
            (out / "static" / f"{grid.name}_{tr}_{tc}_classes.tif", CLASS_BANDS, "uint8"),
            (out / "truth" / "static" / f"{grid.name}_{tr}_{tc}.tif", HIDDEN_BANDS, "float32"),
        ]
        for path, bands, dtype in expected:
            with rasterio.open(path) as ds:
                assert ds.descriptions == tuple(bands), path
                assert ds.crs == rasterio.crs.CRS.from_user_input(grid.crs)
                assert ds.transform.almost_equals(grid.tile_transform(tr, tc), precision=1e-6)
                assert (ds.height, ds.width) == (grid.tile_size, grid.tile_size)
                assert set(ds.dtypes) == {dtype}
                if dtype == "uint8":
                    assert ds.nodata == 0
                else:
                    assert ds.nodata is not None and np.isnan(ds.nodata)
                assert ds.compression is not None and ds.compression.value.lower() == "deflate"
                assert ds.block_shapes[0] == (32, 32)
                assert ds.tags()["CONFIG_HASH"] == cfg.hash()
    tr, tc = summary.tiles[0]
    with rasterio.open(out / "stacks" / "2024-04-07" / f"{grid.name}_{tr}_{tc}.tif") as ds:
        assert ds.tags()["DATE"] == "2024-04-07" and ds.tags()["PASS"] == "ascending"
        assert ds.units[0] == "dB"


def test_partial_tile_is_padded_with_nodata(tmp_path):
    """A region that does not fill its tiles: cells outside the region are nodata, not zeros."""
    cfg = load_config(overrides=["region.size_km=[40,24]", "region.snap_to_tiles=false", "grid.tile_size=32",
                                 "simulate.n_stations=2", "simulate.end=2024-04-01", "simulate.spinup_days=2",
                                 "simulate.min_stations_per_env=1"])
    summary = simulate(cfg, tmp_path / "partial")
    grid = cfg.grid.build()
    window = cfg.region.window(grid)
    n_valid = 0
    for tr, tc in summary.tiles:
        with rasterio.open(tmp_path / "partial" / "stacks" / "2024-04-01" / f"{grid.name}_{tr}_{tc}.tif") as ds:
            vv = ds.read(1)
        with rasterio.open(tmp_path / "partial" / "static" / f"{grid.name}_{tr}_{tc}_classes.tif") as ds:
            lc = ds.read(1)
        assert np.array_equal(np.isfinite(vv), lc > 0)
        n_valid += int(np.isfinite(vv).sum())
    assert n_valid == window.height * window.width
    assert n_valid < len(summary.tiles) * grid.tile_size**2       # the tiles really are partial


# -- in situ (ISMN) -------------------------------------------------------------------------------------
def test_ismn_reads_the_stations(run, tmp_path):
    ismn_interface = pytest.importorskip("ismn.interface")
    logging.getLogger("ismn_meta_collector").setLevel(logging.ERROR)
    cfg, summary, out = run
    stations = pd.read_csv(out / "truth" / "stations.csv")
    assert len(stations) == 12
    ds = ismn_interface.ISMN_Interface(str(out / "insitu"), meta_path=str(tmp_path / "ismn_meta"))
    nets = ds.collection.networks
    assert set(nets) == set(stations.network)
    assert set(nets) <= set(cfg.simulate.networks)
    found = {(n, s) for n, net in nets.items() for s in net.stations}
    assert found == set(zip(stations.network, stations.station))

    flags: dict[str, int] = {}
    depths = set()
    daily_pairs = []
    truth_cells = {}
    for row in stations.itertuples():
        st = nets[row.network].stations[row.station]
        assert st.lat == pytest.approx(row.lat, abs=1e-5) and st.lon == pytest.approx(row.lon, abs=1e-5)
        surface = [x for x in st.sensors.values() if x.depth.end <= 0.05]
        assert surface, f"{row.station_id} has no 0-5 cm sensor"
        for sensor in st.sensors.values():
            depths.add((sensor.depth.start, sensor.depth.end))
            df = sensor.read_data()
            for f, n in df["soil_moisture_flag"].value_counts().items():
                flags[f] = flags.get(f, 0) + int(n)
            missing = df["soil_moisture_flag"] == "M"
            assert (df.loc[missing, "soil_moisture"] == -9999).all()
            assert df.loc[~missing, "soil_moisture"].between(0.0, 0.6).all()
        good = surface[0].read_data()
        good = good.loc[good["soil_moisture_flag"] == "G", "soil_moisture"].resample("D").mean()
        truth_cells[row.station_id] = (row.row - summary.window["row_off"], row.col - summary.window["col_off"])
        daily_pairs.append((row.station_id, good))
    assert (0.0, 0.05) in depths
    total = sum(flags.values())
    assert flags["G"] / total > 0.85
    assert flags.get("M", 0) > 0
    assert any(f.startswith("D0") for f in flags)
    truth = _truth_series(out, summary)
    obs, tru = [], []
    for sid, series in daily_pairs:
        r, c = truth_cells[sid]
        obs.extend(series.reindex(pd.to_datetime(summary.dates)).to_numpy())
        tru.extend(truth[:, r, c])
    obs, tru = np.array(obs), np.array(tru)
    ok = np.isfinite(obs)
    assert ok.sum() > 50
    assert np.corrcoef(obs[ok], tru[ok])[0, 1] > 0.8           # representative but not perfect
    assert 0.005 < np.std(obs[ok] - tru[ok]) < 0.08


def _truth_series(out: Path, summary) -> np.ndarray:
    return np.stack([_mosaic(out / "truth" / d, summary.grid["name"], summary.tiles)[0] for d in summary.dates])


def test_stations_stratified_by_environment(run):
    cfg, summary, out = run
    stations = pd.read_csv(out / "truth" / "stations.csv")
    counts = stations.env.value_counts()
    assert counts.min() >= cfg.simulate.min_stations_per_env
    assert len(counts) == 4
    assert dict(counts) == summary.stations_per_env
    assert not stations.landcover.isin([50, 70, 80]).any()
    assert (stations.env == [environment(lc, cl) for lc, cl in zip(stations.landcover, stations.climate)]).all()


# -- physical plausibility -----------------------------------------------------------------------------
def test_classes_present(cube):
    lc, climate = cube["classes"]
    present = set(np.unique(lc).tolist())
    assert {50, 70, 80} <= present                                 # masked classes exist
    assert {10, 20, 30, 40, 60, 90} <= present
    land = lc != 80
    assert set(np.unique(koppen_main(climate[land])).tolist()) >= {"B", "C", "D"}
    assert (climate[land] > 0).all() and climate.max() <= 30
    lst = cube["stacks"][:, STACK_BANDS.index("lst_k")]
    frozen = (lst < 273.15) & land
    assert 0 < frozen.sum() < 0.05 * frozen.size                   # some frozen cell-dates, not many


def test_static_fields_plausible(cube):
    clay, sand, bd, elev, slope = cube["static"]
    assert np.all(clay + sand <= 100.0)
    assert 0 < clay.min() and sand.max() < 100
    assert 0.9 < bd.min() and bd.max() < 1.8
    assert elev.min() >= 0 and 500 < elev.max() < 4000
    assert 0 <= slope.min() and slope.max() < 45


def test_truth_within_bounds(cube):
    porosity, residual = cube["hidden"][0], cube["hidden"][1]
    ssm = cube["truth"]
    assert np.isfinite(ssm).all()
    assert (ssm >= residual - 1e-6).all() and (ssm <= porosity + 1e-6).all()
    np.testing.assert_allclose(porosity, simmod.porosity(cube["static"][2]), atol=1e-5)
    assert ssm.std(axis=0).mean() > 0.02                            # it rains and dries


def test_backscatter_ranges(cube):
    lc = cube["classes"][0]
    vv = cube["stacks"][:, STACK_BANDS.index("vv_db")]
    vh = cube["stacks"][:, STACK_BANDS.index("vh_db")]
    inc = cube["stacks"][:, STACK_BANDS.index("incidence_deg")]
    ndvi = cube["stacks"][:, STACK_BANDS.index("ndvi")]
    vegetated = np.isin(lc, (10, 20, 30, 40, 60, 90))[None].repeat(vv.shape[0], axis=0)
    lo, hi = np.percentile(vv[vegetated], [1, 99])
    assert -25.0 < lo and hi < -3.0
    assert np.median((vv - vh)[vegetated]) > 4.0                   # cross-pol well below co-pol
    assert np.percentile(vh[vegetated], 1) > -27.0                 # noise floor -25 dB
    water = (lc == 80)[None].repeat(vv.shape[0], axis=0)
    built = (lc == 50)[None].repeat(vv.shape[0], axis=0)
    assert np.median(vv[water]) < np.median(vv[vegetated]) < np.median(vv[built])
    assert 30.0 - 1e-4 <= inc.min() and inc.max() <= 46.0 + 1e-4
    # descending (first date) looks west: angle grows westwards; ascending the other way
    assert inc[0, :, 0].mean() > inc[0, :, -1].mean() and inc[1, :, 0].mean() < inc[1, :, -1].mean()
    assert np.median(ndvi[water]) < 0.05 < np.median(ndvi[vegetated])


@pytest.mark.parametrize("group, codes, r_min", [
    ("shrubgrass", (20, 30), 0.30),   # measured 0.47 (default 512 x 512 x 31 region: 0.62)
    ("cropland", (40,), 0.25),        # measured 0.40 (0.33)
    ("bare", (60,), 0.45),            # measured 0.72 (0.47)
    ("forest", (10,), 0.05),          # measured 0.20 (0.27): C band barely sees soil under forest
])
def test_vv_follows_soil_moisture_over_time(cube, group, codes, r_min):
    """Within a land-cover group, VV anomalies (per cell, over time) correlate with SSM anomalies."""
    lc = cube["classes"][0]
    m = np.isin(lc, codes)
    vv = cube["stacks"][:, STACK_BANDS.index("vv_db")][:, m]
    lst = cube["stacks"][:, STACK_BANDS.index("lst_k")][:, m]
    ssm = cube["truth"][:, m]
    ok = lst >= 273.15
    vv = np.where(ok, vv, np.nan)
    ssm = np.where(ok, ssm, np.nan)
    with np.errstate(invalid="ignore"):
        va, sa = vv - np.nanmean(vv, axis=0), ssm - np.nanmean(ssm, axis=0)
    k = np.isfinite(va) & np.isfinite(sa)
    assert k.sum() > 200
    assert np.corrcoef(va[k], sa[k])[0, 1] > r_min


def test_environments_behave_differently(cube):
    """Vegetation amount and season, roughness and soil moisture differ between environments."""
    lc, climate = cube["classes"]
    env = environment(lc, climate)
    ndvi = cube["stacks"][:, STACK_BANDS.index("ndvi")]
    ssm = cube["truth"]
    ks = cube["hidden"][HIDDEN_BANDS.index("ks")]
    forest, crop, grass, bare = (np.isin(lc, c) for c in ((10,), (40,), (30,), (60,)))
    assert ndvi[:, forest].mean() > ndvi[:, grass].mean() > ndvi[:, bare].mean()
    assert ndvi[-1, grass].mean() - ndvi[0, grass].mean() > 0.1          # grass greens up in April
    assert ks[bare].mean() > ks[grass].mean()
    wet = np.isin(lc, (90,))
    assert ssm[:, wet].mean() > ssm[:, ~wet & (lc != 80)].mean() + 0.1   # wetlands stay wet
    b, c = env == "shrubgrass_B", env == "shrubgrass_D"
    if b.sum() > 20 and c.sum() > 20:
        assert ssm[:, b].mean() < ssm[:, c].mean()                        # semi-arid drier than cold uplands


# -- helpers -------------------------------------------------------------------------------------------
def test_environment_and_koppen_helpers():
    assert list(koppen_main([0, 1, 5, 8, 16, 17, 28, 29, 30])) == ["", "A", "B", "C", "C", "D", "D", "E", "E"]
    env = environment(np.array([10, 95, 30, 100, 40, 60, 90, 50, 70, 80]),
                      np.array([15, 15, 7, 29, 8, 5, 26, 15, 29, 0]))
    assert list(env) == ["forest_C", "forest_C", "shrubgrass_B", "shrubgrass_E", "cropland_C", "bare_B",
                         "wetland_D", "", "", ""]
    assert environment(40, 0) == "cropland"
    assert simmod.overpass(0) == ("descending", 6) and simmod.overpass(1) == ("ascending", 18)
