"""Earth Engine source, offline: request graphs built with the algorithm list earthengine-api ships
(docs/pipeline.md, "1. Inputs"), serialised and checked; the export task manager against a fake
backend with recorded-shape responses (429, transient and permanent failures, re-runs); sampling in
batches; credentials never leaking; an exported-shape GeoTIFF read by the stack reader."""

from __future__ import annotations

import datetime as dt
import json
import logging

import numpy as np
import pytest

from ee_recorded import calls as _calls
from ee_recorded import inline
from ee_recorded import constants as _constants

from ssm_spark.config import load_config

ee = pytest.importorskip("ee")

SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "earthengine.export.bucket=test-bucket"]


@pytest.fixture(scope="module", autouse=True)
def offline_ee():
    """earthengine-api initialised with no network, exactly as docs/pipeline.md says."""
    import ee.apitestcase

    ee.data._install_cloud_api_resource = lambda: None
    ee.data.getAlgorithms = ee.apitestcase.GetAlgorithms
    ee.Initialize(None, "", project="ssm-spark-test")
    yield


@pytest.fixture(scope="module")
def cfg():
    return load_config(overrides=SMALL)


def _inline(graph: dict):
    """A serialised graph with its shared values put back, arrays of constants as one list."""
    return inline(graph, constant_arrays=True)


def _graph(obj) -> dict:
    return _inline(json.loads(ee.serializer.toJSON(obj)))


def _names(graph: dict) -> list[str]:
    return [n for n, _ in _calls(graph)]


# ---------------------------------------------------------------------------------------- builders


def test_s1_request_collection_filters_dates_and_grid(cfg):
    from ssm_spark.sources.earthengine import requests as R

    grid = cfg.grid.build()
    ec = cfg.earthengine.model_copy(deep=True)
    ec.s1.orbit_pass = "DESCENDING"
    g = _graph(R.s1(ec, "2024-05-01", grid))
    consts = _constants(g)
    assert "COPERNICUS/S1_GRD" in consts
    # IW, both polarisations, the pass, the 10 m GRDH scenes
    for value in ("instrumentMode", "IW", "transmitterReceiverPolarisation", "VV", "VH", "orbitProperties_pass",
                  "DESCENDING", "resolution_meters"):
        assert value in consts, value
    assert "Collection.filter" in _names(g) and "Filter.listContains" in _names(g)
    # that UTC day: [2024-05-01, 2024-05-02)
    dr = [a for n, a in _calls(g) if n == "DateRange"]
    assert {(a["start"]["constantValue"], a["end"]["constantValue"]) for a in dr} == {("2024-05-01", "2024-05-02")}
    # on the grid: crs + crsTransform (not a scale), after a mean reduceResolution
    rp = [a for n, a in _calls(g) if n == "Image.reproject"]
    assert rp and all(a["crsTransform"]["constantValue"] == R.crs_transform(grid) for a in rp)
    assert R.crs_transform(grid) == [grid.cell, 0.0, grid.x0, 0.0, -grid.cell, grid.y0]
    assert all("scale" not in a for a in rp) and "EPSG:6933" in consts
    rr = [a for n, a in _calls(g) if n == "Image.reduceResolution"]
    assert rr and all(a["maxPixels"]["constantValue"] == ec.reduce_max_pixels for a in rr)
    assert "Reducer.mean" in _names(g)
    # the composite gets a fixed projection at the native 10 m first, so the cell is a mean, not a sample
    sdp = [a for n, a in _calls(g) if n == "Image.setDefaultProjection"]
    assert sdp and all(a["scale"]["constantValue"] == 10.0 for a in sdp)
    # averaged in linear power: 10^(dB/10) then 10 log10; border noise and edge angles masked
    assert {"Image.pow", "Image.log10", "Image.updateMask"} <= set(_names(g))
    assert -30.0 in consts and 30.0 in consts and 46.0 in consts
    assert ["vv_db", "vh_db"] in consts and ["incidence_deg"] in consts
    # a window and speckle filtering are options
    ec.s1.window_days, ec.s1.speckle = 2, "focal_median"
    g2 = _graph(R.s1(ec, "2024-05-01", grid))
    dr = [a for n, a in _calls(g2) if n == "DateRange"]
    assert {(a["start"]["constantValue"], a["end"]["constantValue"]) for a in dr} == {("2024-04-29", "2024-05-04")}
    assert "Image.focalMedian" in _names(g2)


def test_dynamic_static_classes_stacks_have_our_bands_and_sources(cfg):
    from ssm_spark.sources.earthengine import requests as R
    from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, STATIC_BANDS

    grid = cfg.grid.build()
    ec = cfg.earthengine
    dyn = _graph(R.dynamic_stack(ec, "2024-05-01", grid))
    c = _constants(dyn)
    assert list(DYNAMIC_BANDS) in c and "Image.toFloat" in _names(dyn)
    for cid in ("COPERNICUS/S1_GRD", "COPERNICUS/S2_SR_HARMONIZED", "MODIS/061/MOD11A1", "UCSB-CHG/CHIRPS/DAILY"):
        assert cid in c, cid
    # S2: SCL classes masked, B8/B4 NDVI, interpolation before/after the date (qualityMosaic)
    assert ec.ndvi.s2_scl_masked in c and ["B8", "B4"] in c and "ImageCollection.qualityMosaic" in _names(dyn)
    # MODIS LST scale factor, CHIRPS antecedent sum of 5 days ending on the date
    assert 0.02 in c and {"reduce.sum", "reduce.mean"} <= set(_names(dyn))
    scales = {a["scale"]["constantValue"] for n, a in _calls(dyn) if n == "Image.setDefaultProjection"}
    assert scales == {10.0, 1000.0, 5566.0}  # S1 and S2, MODIS LST, CHIRPS
    ranges = {(a["start"]["constantValue"], a["end"]["constantValue"]) for n, a in _calls(dyn) if n == "DateRange"}
    assert ("2024-04-27", "2024-05-02") in ranges  # precip: 04-27 .. 05-01 inclusive
    assert ("2024-04-30", "2024-05-03") in ranges  # LST +- 1 day
    assert ("2024-04-15", "2024-05-18") in ranges  # NDVI +- 16 days
    st = _graph(R.static_stack(ec, grid))
    c = _constants(st)
    assert list(STATIC_BANDS) in c and "Terrain.slope" in _names(st)
    for cid in ("projects/soilgrids-isric/clay_mean", "projects/soilgrids-isric/sand_mean",
                "projects/soilgrids-isric/bdod_mean", "COPERNICUS/DEM/GLO30"):
        assert cid in c, cid
    assert 0.1 in c and 0.01 in c  # g/kg -> %, cg/cm3 -> g/cm3
    cl = _graph(R.classes_stack(ec, grid))
    assert list(CLASS_BANDS) in _constants(cl) and "Image.toUint8" in _names(cl) and "Reducer.mode" in _names(cl)
    assert "ESA/WorldCover/v200" in _constants(cl)
    assert [a["scale"]["constantValue"] for n, a in _calls(cl) if n == "Image.setDefaultProjection"] == [10.0]
    # other sources from config
    ec2 = ec.model_copy(deep=True)
    ec2.ndvi.source, ec2.precip.source = "modis", "era5_land"
    c2 = _constants(_graph(R.dynamic_stack(ec2, "2024-05-01", grid)))
    assert "MODIS/061/MOD13Q1" in c2 and "ECMWF/ERA5_LAND/DAILY_AGGR" in c2 and 1000.0 in c2
    assert "COPERNICUS/S2_SR_HARMONIZED" not in c2


# ------------------------------------------------------------------------------------------ exports


def test_export_plan_regions_are_the_grid_tiles(cfg):
    from ssm_spark.product.region import resolve_region
    from ssm_spark.sources.earthengine import export as X
    from ssm_spark.sources.earthengine import requests as R

    grid = cfg.grid.build()
    rgn = resolve_region(None, cfg, grid)
    items = X.plan(grid, rgn.tiles, ["2024-05-01", "2024-05-07"])
    assert len(items) == 4 * 2 + 4 * 2  # static + classes per tile, dynamic per tile and date
    assert len({it.key for it in items}) == len(items)
    for it in items:
        req = X.serialize(X.build_task(it, cfg.earthengine, grid))
        dest = req["fileExportOptions"]
        assert dest["fileFormat"] == "GEO_TIFF" and dest["cloudStorageDestination"]["bucket"] == "test-bucket"
        assert dest["cloudStorageDestination"]["filenamePrefix"] == f"ssm-spark/{it.file[:-4]}"
        assert dest["geoTiffOptions"]["noData"]["floatValue"] == (0 if it.dtype == "uint8" else X.EXPORT_NODATA)
        expr = _inline(req["expression"])
        calls = _calls(expr)
        clip = [a for n, a in calls if n == "Image.clip"]
        rect = [a for n, a in _calls({"x": clip}) if n == "GeometryConstructors.Rectangle"]
        w = grid.tile_window(it.tile_row, it.tile_col)
        x0, y1 = grid.x0 + w.col_off * grid.cell, grid.y0 - w.row_off * grid.cell
        want = [x0, y1 - w.height * grid.cell, x0 + w.width * grid.cell, y1]
        np.testing.assert_allclose(rect[0]["coordinates"]["constantValue"], want, rtol=0, atol=1e-6)
        assert rect[0]["geodesic"]["constantValue"] is False
        outer = [a for n, a in calls if n == "Image.reproject"]
        assert all(a["crsTransform"]["constantValue"] == R.crs_transform(grid) for a in outer)
        band_lists = [c for c in _constants(expr) if isinstance(c, list) and c == list(it.bands)]
        assert band_lists, it
    drive = cfg.earthengine.model_copy(deep=True)
    drive.export.destination = "drive"
    req = X.serialize(X.build_task(items[0], drive, grid))
    assert req["fileExportOptions"]["driveDestination"]["folder"] == "ssm-spark"
    nobucket = cfg.earthengine.model_copy(deep=True)
    nobucket.export.bucket = None
    from ssm_spark.errors import ConfigError

    with pytest.raises(ConfigError, match="earthengine.export.bucket"):
        X.build_task(items[0], nobucket, grid)


class HttpError429(Exception):
    """The shape of googleapiclient's HttpError: ``resp.status`` and a message."""

    def __init__(self, status: int, msg: str):
        super().__init__(f"<HttpError {status}: {msg}>")
        self.resp = type("Resp", (), {"status": status})()


class FakeBackend:
    """Task backend answering like Earth Engine's batch API, scripted per file."""

    def __init__(self, script: dict[str, list]):
        self.script = {k: list(v) for k, v in script.items()}  # file -> submit outcomes then status sequences
        self.submits: list[str] = []
        self.tasks: dict[str, list] = {}
        self.n = 0

    def submit(self, item, task) -> str:
        self.submits.append(item.file)
        steps = self.script.get(item.file, [])
        if steps and isinstance(steps[0], Exception):
            raise steps.pop(0)
        self.n += 1
        tid = f"TASK{self.n:04d}"
        seq = steps.pop(0) if steps else ["RUNNING", "COMPLETED"]
        self.tasks[tid] = list(seq)
        return tid

    def status(self, task_id: str) -> dict:
        seq = self.tasks[task_id]
        st = seq.pop(0) if len(seq) > 1 else seq[0]
        state, _, msg = st.partition(":")
        return {"state": state, "error_message": msg or None}


def _manager(cfg, tmp_path, backend, sleeps):
    from ssm_spark.sources.earthengine import export as X

    grid = cfg.grid.build()
    t = {"now": 0.0}

    def sleep(s):
        sleeps.append(s)
        t["now"] += s

    def build(it):
        task = X.build_task(it, cfg.earthengine, grid)
        return task, X.serialize(task)

    return X.TaskManager(backend, tmp_path, cfg.earthengine, build, sleep=sleep, clock=lambda: t["now"])


def test_task_manager_retries_records_and_resumes(cfg, tmp_path, caplog):
    from ssm_spark.sources.earthengine import export as X

    grid = cfg.grid.build()
    ec = cfg.earthengine.model_copy(deep=True)
    ec.export.max_in_flight, ec.export.poll_seconds = 2, 30.0
    c = cfg.model_copy(update={"earthengine": ec})
    tiles = [(t[0], t[1]) for t in sorted(__import__("ssm_spark.product.region", fromlist=["x"]).resolve_region(
        None, cfg, grid).tiles)][:2]
    items = X.plan(grid, tiles, ["2024-05-01"], static=False)
    a, b = items[0].file, items[1].file
    backend = FakeBackend({
        a: [HttpError429(429, "Too many concurrent tasks"), HttpError429(429, "Quota exceeded"),
            ["READY", "RUNNING", "COMPLETED"]],
        b: [["RUNNING", "FAILED:Internal error, please try again"], ["RUNNING", "FAILED:Image.select: Pattern 'VV' "
                                                                               "did not match any bands."]],
    })
    sleeps: list[float] = []
    with caplog.at_level(logging.INFO):
        summary = _manager(c, tmp_path, backend, sleeps).run(items)
    assert backend.submits == [a, a, a, b, b]  # two 429s then accepted; b resubmitted once (transient failure)
    assert summary["completed"] == 1 and [f["file"] for f in summary["failed"]] == [b]
    assert "did not match any bands" in summary["failed"][0]["error"]
    # exponential backoff with jitter on the 429s: ~5 s then ~10 s
    assert 2.5 <= sleeps[0] <= 7.5 and 5.0 <= sleeps[1] <= 15.0
    state = json.loads((tmp_path / X.STATE_FILE).read_text())["tasks"]
    assert state[a]["state"] == "COMPLETED" and state[a]["attempts"] == 3 and state[a]["task_id"]
    assert state[b]["state"] == "FAILED" and state[b]["attempts"] == 2 and state[a]["bands"] == list(items[0].bands)
    assert "exports: 1/2 complete" in caplog.text

    # a re-run submits only what failed; the complete one is left alone
    backend2 = FakeBackend({})
    summary = _manager(c, tmp_path, backend2, []).run(items)
    assert backend2.submits == [b] and summary["complete_before"] == 1 and summary["failed"] == []
    # a changed request (another NDVI source) is resubmitted
    ec2 = ec.model_copy(deep=True)
    ec2.ndvi.source = "modis"
    backend3 = FakeBackend({})
    _manager(cfg.model_copy(update={"earthengine": ec2}), tmp_path, backend3, []).run(items)
    assert backend3.submits == [a, b]


def test_task_manager_resumes_running_tasks_and_permanent_submit_errors(cfg, tmp_path):
    from ssm_spark.sources.earthengine import export as X

    grid = cfg.grid.build()
    items = X.plan(grid, [(0, 0)], ["2024-05-01"], static=False)
    # hand-written state: a task still RUNNING from an interrupted run
    mgr = _manager(cfg, tmp_path, FakeBackend({}), [])
    _, req = mgr.build(items[0])
    (tmp_path / X.STATE_FILE).write_text(json.dumps({"version": 1, "tasks": {items[0].key: {
        "file": items[0].file, "state": "RUNNING", "task_id": "OLD1", "attempts": 1,
        "request_sha256": X.request_hash(req), "bands": list(items[0].bands)}}}))
    backend = FakeBackend({})
    backend.tasks["OLD1"] = ["RUNNING", "COMPLETED"]
    summary = _manager(cfg, tmp_path, backend, []).run(items)
    assert backend.submits == [] and summary["resumed"] == 1 and summary["completed"] == 1
    # a permanent submission error is recorded at once, not retried
    items2 = X.plan(grid, [(0, 1)], ["2024-05-01"], static=False)
    backend = FakeBackend({items2[0].file: [HttpError429(400, "Invalid argument: region")]})
    summary = _manager(cfg, tmp_path, backend, []).run(items2)
    assert backend.submits == [items2[0].file] and "permanent" in summary["failed"][0]["error"]
    with pytest.raises(Exception, match="unreadable export state"):
        (tmp_path / X.STATE_FILE).write_text("{not json")
        _manager(cfg, tmp_path, FakeBackend({}), [])


def test_dry_run_prints_plan_and_requests_without_network(tmp_path, capsys):
    from ssm_spark.cli import main

    rc = main(["ee-export", *sum((["--set", s] for s in SMALL), []), "--output", str(tmp_path), "--dates",
               "2024-05-01", "--dry-run"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["grid"] == "ease2_1km" and out["dates"] == ["2024-05-01"]
    assert len(out["exports"]) == 4 * 3 and not (tmp_path / "ee_export_state.json").exists()
    assert all("expression" in e["request"] for e in out["exports"])



@pytest.mark.parametrize("dates, says", [(["--start", "2024-05-01"], "--start without --end"),
                                         (["--end", "2024-05-01"], "--end without --start"),
                                         (["--dates", "2024-05-01", "--start", "2024-05-01", "--end", "2024-05-02"],
                                          "not both"),
                                         (["--start", "2024-05-02", "--end", "2024-05-01"], "before --start")])
def test_export_dates_half_given_or_doubly_given_are_refused(tmp_path, capsys, dates, says):
    from ssm_spark.cli import main

    rc = main(["ee-export", *sum((["--set", s] for s in SMALL), []), "--output", str(tmp_path), *dates, "--dry-run"])
    assert rc == 2 and says in capsys.readouterr().err

def test_exported_geotiff_is_read_by_the_stack_reader(cfg, tmp_path):
    """A GeoTIFF of the shape an export writes (the request's crsTransform and region, no band
    names) is named by --finalize and read by the stack reader on the grid."""
    import rasterio
    from affine import Affine

    from ssm_spark.sources.earthengine import export as X
    from ssm_spark.sources.stacks import discover, read_file_cells

    grid = cfg.grid.build()
    tr, tc = 70, 550
    items = X.plan(grid, [(tr, tc)], ["2024-05-01"])
    rng = np.random.default_rng(0)
    state = {}
    for it in items:
        req = X.serialize(X.build_task(it, cfg.earthengine, grid))
        calls = _calls(_inline(req["expression"]))
        ct = [a for n, a in calls if n == "Image.reproject"][-1]["crsTransform"]["constantValue"]
        rect = [a for n, a in calls if n == "GeometryConstructors.Rectangle"][0]["coordinates"]["constantValue"]
        a, b, c, d, e, f = ct
        width, height = round((rect[2] - rect[0]) / a), round((rect[3] - rect[1]) / -e)
        col0, row0 = round((rect[0] - c) / a), round((rect[3] - f) / e)
        transform = Affine(a, b, c, d, e, f) * Affine.translation(col0, row0)
        p = tmp_path / it.file
        p.parent.mkdir(parents=True, exist_ok=True)
        n = len(it.bands)
        if it.dtype == "uint8":
            data = np.stack([np.full((height, width), 40), np.full((height, width), 8)]).astype("uint8")
        else:
            lo = {"vv_db": -12, "vh_db": -19, "incidence_deg": 38, "ndvi": 0.5, "lst_k": 290, "precip_mm": 3,
                  "clay_pct": 20, "sand_pct": 40, "bulk_density": 1.3, "elevation_m": 300, "slope_deg": 2}
            data = np.stack([lo[bn] + rng.uniform(0, 0.5, (height, width)) for bn in it.bands]).astype("float32")
            if it.kind == "dynamic":  # no scene over the first row: masked, written as the export's noData
                data[:2, 0, :] = X.EXPORT_NODATA
        with rasterio.open(p, "w", driver="GTiff", width=width, height=height, count=n, dtype=it.dtype,
                           crs="EPSG:6933", transform=transform,
                           nodata=0 if it.dtype == "uint8" else X.EXPORT_NODATA) as dst:  # no band descriptions
            dst.write(data)
        state[it.key] = {"file": it.file, "state": "COMPLETED", "bands": list(it.bands), "dtype": it.dtype}
    (tmp_path / X.STATE_FILE).write_text(json.dumps({"version": 1, "tasks": state}))
    assert discover(tmp_path / "stacks", grid, tmp_path / "static").files == []  # unnamed bands: quarantined
    res = X.finalize(tmp_path)
    assert sorted(res["named"]) == sorted(it.file for it in items) and res["missing"] == []
    inv = discover(tmp_path / "stacks", grid, tmp_path / "static")
    assert inv.quarantine == [] and len(inv.files) == 1
    f = inv.files[0]
    assert (f.row_off, f.col_off, f.height, f.width) == (tr * 32, tc * 32, 32, 32)
    px = read_file_cells(f, grid, 20.0)
    assert len(px) == 31 * 32 and (px["row"] > tr * 32).all()  # the masked row is no pixel of that date
    assert (px["env"] == "cropland_C").all() and px["vv_db"].between(-12, -11).all()
    assert px["ndvi"].between(0.5, 1.0).all() and px["bulk_density"].between(1.3, 1.8).all()


# ----------------------------------------------------------------------------------------- sampling


def test_sampling_is_batched_within_limits_and_on_the_grid(cfg):
    from ssm_spark.sources.earthengine import requests as R
    from ssm_spark.sources.earthengine import sample as S

    grid = cfg.grid.build()
    ec = cfg.earthengine.model_copy(deep=True)
    ec.sample.max_points_per_request = 40
    cells = [(2100 + i // 10, 17500 + i % 10) for i in range(95)]
    g = _graph(S.cells_request(ec, grid, cells[:40], "2024-05-01"))
    rr = [a for n, a in _calls(g) if n == "Image.reduceRegions"]
    assert len(rr) == 1 and rr[0]["crsTransform"]["constantValue"] == R.crs_transform(grid)
    assert "Reducer.first" in _names(g)
    pts = [a for n, a in _calls(g) if n == "GeometryConstructors.Point"]
    assert len(pts) == 40
    np.testing.assert_allclose(pts[0]["coordinates"]["constantValue"], grid.cell_to_xy(*cells[0]))
    with pytest.raises(ValueError, match="max_points_per_request"):
        S.cells_request(ec, grid, cells[:41], "2024-05-01")

    class Recorded:
        """Answers like getInfo on a FeatureCollection; no value for cell 7 (outside the scene)."""

        def __init__(self):
            self.sizes = []

        def get_info(self, req, what=""):
            feats = [f for n, a in _calls(_graph(req)) if n == "Feature" for f in [a]]
            self.sizes.append(len(feats))
            out = []
            for a in feats:
                md = a["metadata"]
                props = md["constantValue"] if "constantValue" in md else {
                    k: v["constantValue"] for k, v in md["dictionaryValue"]["values"].items()}
                i = props["i"]
                if i == 7:
                    continue
                out.append({"type": "Feature", "properties": {"i": i, "vv_db": -10.0 - i / 100, "vh_db": None}})
            return {"type": "FeatureCollection", "features": out}

    client = Recorded()
    vals = S.sample_cells(client, ec, grid, cells, "2024-05-01")
    assert client.sizes == [40, 40, 15]
    assert vals[7] is None and vals[94]["vv_db"] == pytest.approx(-10.94) and vals[94]["vh_db"] is None
    assert set(vals[0]) == set(S.BANDS)


# -------------------------------------------------------------------------------------- credentials


def test_credentials_errors_name_the_setting_and_never_the_secret(cfg, tmp_path, caplog, monkeypatch):
    from ssm_spark.sources.earthengine import client as C

    ec = cfg.earthengine.model_copy(deep=True)
    monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
    with pytest.raises(C.CredentialsError, match="earthengine.project is not set"):
        C.EEClient.connect(ec)
    ec.project = "my-project"
    ec.credentials = str(tmp_path / "missing.json")
    with pytest.raises(C.CredentialsError, match="missing.json \\(from earthengine.credentials\\) not found"):
        C.EEClient.connect(ec)
    secret = "-----BEGIN PRIVATE KEY-----SECRET-MATERIAL-----END PRIVATE KEY-----"
    bad = tmp_path / "key.json"
    bad.write_text(json.dumps({"type": "user", "client_email": "x@y", "private_key": secret}))
    ec.credentials = None
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(bad))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(C.CredentialsError, match="from GOOGLE_APPLICATION_CREDENTIALS\\) is not a service-account") as ei:
            C.EEClient.connect(ec)
    assert "SECRET" not in str(ei.value) and "SECRET" not in caplog.text and ei.value.__cause__ is None
    # a key that parses but cannot sign: the error still names the setting, not the contents
    bad.write_text(json.dumps({"type": "service_account", "client_email": "svc@p.iam.gserviceaccount.com",
                               "private_key": secret, "private_key_id": "k1", "token_uri": "https://x/token"}))
    with caplog.at_level(logging.DEBUG):
        with pytest.raises(C.CredentialsError) as ei:
            C.EEClient.connect(ec)
    assert "SECRET" not in str(ei.value) and "SECRET" not in caplog.text


def test_transient_classification_and_retry(cfg):
    from ssm_spark.sources.earthengine.client import EarthEngineError, is_transient, retry

    assert is_transient(HttpError429(429, "x")) and is_transient(HttpError429(503, "x"))
    assert is_transient(Exception("Earth Engine capacity exceeded: Too many requests"))
    assert not is_transient(Exception("Collection query aborted after accumulating over 5000 elements."))
    assert not is_transient(HttpError429(400, "bad"))
    calls, sleeps = [], []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise HttpError429(429, "quota")
        return "ok"

    assert retry(flaky, "x", attempts=4, backoff_s=1.0, sleep=sleeps.append) == "ok" and len(sleeps) == 2
    with pytest.raises(EarthEngineError, match="transient, gave up after 2"):
        retry(lambda: (_ for _ in ()).throw(HttpError429(500, "boom")), "y", attempts=2, sleep=lambda s: None)


def test_matchup_sampling_batches_stations_by_dates(cfg):
    """Stations x dates: at most max_points_per_request points (over all dates of a request) and
    max_dates_per_request dates per request; rows without backscatter are no matchups."""
    import pandas as pd

    from ssm_spark.sources.earthengine import sample as S

    grid = cfg.grid.build()
    ec = cfg.earthengine.model_copy(deep=True)
    ec.sample.max_points_per_request, ec.sample.max_dates_per_request = 30, 4
    st = pd.DataFrame({"station_id": [f"s{i}" for i in range(12)], "lon": np.linspace(2.2, 2.8, 12),
                       "lat": np.linspace(43.8, 44.2, 12)})
    dates = [dt.date(2024, 5, 1) + dt.timedelta(days=6 * k) for k in range(6)]

    class Recorded:
        def __init__(self):
            self.shapes = []

        def get_info(self, req, what=""):
            feats = [a for n, a in _calls(_graph(req)) if n == "Feature"]
            md = [a["metadata"]["constantValue"] if "constantValue" in a["metadata"] else {
                k: v["constantValue"] for k, v in a["metadata"]["dictionaryValue"]["values"].items()} for a in feats]
            self.shapes.append((len(feats), len({m["date"] for m in md})))
            return {"features": [{"properties": {**m, "vv_db": -11.0 if m["i"] % 3 else None,
                                                 "vh_db": None}} for m in md]}

    client = Recorded()
    out = S.sample_matchups(client, ec, grid, st, dates)
    assert all(n <= 30 and nd <= 4 for n, nd in client.shapes) and sum(n for n, _ in client.shapes) == 12 * 6
    # grouped by date: two dates of 12 stations fill a request (a third would make 36 > 30 points)
    assert client.shapes == [(24, 2)] * 3
    assert len(out) == 6 * 8 and set(out["date"]) == set(dates) and (out["vv_db"] == -11.0).all()
    r, c = grid.to_cell(st["lon"].to_numpy(), st["lat"].to_numpy())
    assert set(zip(out["row"], out["col"])) <= set(zip(r.tolist(), c.tolist()))
