"""Point retrieval (ssm_spark.point) and the HTTP service (ssm_spark.serve) on a small simulated region:
the point answer equals the product's Parquet value for the same cell and date (stacks, cached stacks,
product and Earth-Engine-shaped inputs alike), clear errors, the CLI, and the real server on loopback
answering good and hostile requests."""

from __future__ import annotations

import http.client
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssm_spark.config import load_config
from ssm_spark.environments import MASK_BITS
from ssm_spark.physics.qc import QC
from regions import trained_region

# 2 x 2 tiles of 32 cells, 6 dates; change detection on (min_dates 4), so the registry has a
# change-detection calibration and produce attaches each cell's climatology to its rows
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3",
         "physics.change_detection.min_dates=4"]
DATE = "2024-04-07"
DATES = ["2024-04-01", "2024-04-07", "2024-04-13", "2024-04-19", "2024-04-25", "2024-05-01"]


@pytest.fixture(scope="module")
def region(spark, tmp_path_factory):
    """Simulated 2 x 2 tiles of 32 cells, 6 dates; a registry (with change detection) trained on it;
    the product of DATE (with the region's climatology)."""
    from ssm_spark.product.produce import produce

    root = tmp_path_factory.mktemp("point")
    cfg = load_config(overrides=SMALL)
    trained_region(spark, cfg, root)
    summary = produce(spark, cfg, root / "models", root / "sim" / "stacks", None, DATE, DATE, root / "product")
    assert summary["produced"] == 1 and summary["climatology"]["computed"] == 4
    prod = pd.read_parquet(root / "product" / "parquet" / f"date={DATE}")
    return cfg, root, prod.sort_values(["row", "col"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def service(region):
    from ssm_spark.point import PointService

    cfg, root, _ = region
    return PointService(cfg, root / "models", root / "sim" / "stacks", climatology=root / "product" / "climatology")


def _sample(prod: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """n cells with an estimate and every masked cell kind present, seeded."""
    rng = np.random.default_rng(seed)
    ok = prod[prod["ssm"].notna()]
    masked = prod[(prod["qc"] & MASK_BITS) != 0]
    pick = ok.iloc[rng.choice(len(ok), size=min(n, len(ok)), replace=False)]
    per_kind = masked.groupby(masked["qc"] & MASK_BITS).head(2)
    return pd.concat([pick, per_kind])


def _assert_same(ans: dict, row: pd.Series) -> None:
    assert (ans["cell"]["row"], ans["cell"]["col"]) == (row["row"], row["col"])
    assert ans["qc"] == int(row["qc"]) and ans["env"] == row["env"]
    for k in ("ssm", "ssm_p05", "ssm_p95"):
        if pd.isna(row[k]):
            assert ans[k] is None, (k, ans)
        else:
            assert ans[k] == pytest.approx(float(row[k]), abs=1e-6), (k, ans, row.to_dict())
    assert ans["model_id"] == (None if pd.isna(row["model_id"]) else row["model_id"])


@pytest.mark.spark
@pytest.mark.slow
def test_point_equals_the_product_for_the_same_cell_and_date(region, service):
    from ssm_spark.point import MaskedCellError, PointService

    cfg, root, prod = region
    grid = cfg.grid.build()
    assert service.climatology is not None and len(service.climatology.tiles) == 4
    cached = PointService(cfg, service.registry, root / "sim" / "stacks", cache_files=4,
                          climatology=root / "product" / "climatology")
    from_product = PointService(cfg, service.registry, source=str(root / "product"))
    cells = _sample(prod, 60, 1)
    assert ((cells["qc"] & MASK_BITS) != 0).any() and cells["ssm"].notna().sum() >= 60
    for _, row in cells.iterrows():
        lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
        for svc in (service, cached, from_product):
            ans = svc.point(lat, lon, DATE, strict=False)
            _assert_same(ans, row)
        if pd.isna(row["ssm"]):
            with pytest.raises(MaskedCellError) as ei:
                service.point(lat, lon, DATE)
            bits = [b for b in ans["qc_flags"] if b.startswith("MASKED") or b in ("FROZEN", "STEEP_SLOPE")]
            assert bits and all(b in str(ei.value) for b in bits)
            assert ei.value.info["result"]["qc"] == int(row["qc"])
    land = prod[(prod["qc"] & MASK_BITS) == 0]
    assert ((land["qc"] & int(QC.CHANGE_DETECTION_MISSING)) == 0).mean() > 0.9  # the climatology in play
    from ssm_spark.errors import InputError

    with pytest.raises(InputError, match="uses change detection.*--climatology"):
        PointService(cfg, service.registry, root / "sim" / "stacks", climatology=root / "nowhere")
    ans = service.point(*grid.to_lonlat(int(cells.iloc[0]["row"]), int(cells.iloc[0]["col"]))[::-1], DATE)
    assert ans["candidate"] == ans["model_id"].split("/")[2] and ans["manifest_id"] == service.registry.manifest_id
    assert {"vv_db", "ndvi", "mv_wcm", "landcover"} <= set(ans["features"]) and ans["source"] == "stacks"


@pytest.mark.spark
@pytest.mark.slow
def test_earth_engine_values_go_through_the_same_reader(region, service, monkeypatch):
    """A cell's band values as Earth Engine sampling returns them -> the same answer as the stack file."""
    from ssm_spark.point import PointService
    from ssm_spark.sources.stacks import FEATURE_BANDS

    cfg, root, prod = region
    grid = cfg.grid.build()
    rows = _sample(prod, 8, 2)

    class FakeEE:
        """Answers sample requests with the stack's own values (recorded-response shape)."""

        def __init__(self):
            self.requests = 0

        def get_info(self, request, what=""):
            self.requests += 1
            feats = []
            for i, (r, c) in enumerate(self.cells):
                px, _ = service.stacks.pixel(r, c, self.date)
                props = {b: (None if pd.isna(px[b].iloc[0]) else float(px[b].iloc[0])) for b in FEATURE_BANDS}
                feats.append({"type": "Feature", "geometry": None, "properties": {"i": i, **props}})
            return {"type": "FeatureCollection", "features": feats}

    fake = FakeEE()
    import ssm_spark.sources.earthengine.sample as S

    def cells_request(cfg_, grid_, cells, date, offset=0):  # the request itself: tests/test_earthengine.py
        fake.cells, fake.date = list(cells), str(date)

    monkeypatch.setattr(S, "cells_request", cells_request)
    ee_svc = PointService(cfg, service.registry, source="ee", ee_client=fake,
                          climatology=root / "product" / "climatology")
    for _, row in rows.iterrows():
        lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
        ans = ee_svc.point(lat, lon, DATE, strict=False)
        _assert_same(ans, row)
        assert ans["source"] == "ee"
    assert fake.requests == len(rows)


@pytest.mark.spark
@pytest.mark.slow
def test_earth_engine_point_with_its_own_climatology_equals_the_product(region, service):
    """--source ee with a change-detection registry and no climatology folder: each cell's climatology
    from its Earth Engine series over the reference window (recorded responses holding the stacks'
    values), then the same answer as the product, point and series alike."""
    import math

    from ee_recorded import HttpError, RecordedEE

    from ssm_spark.errors import ConfigError
    from ssm_spark.point import PointService
    from ssm_spark.point.climatology import EarthEngineClimatology
    from ssm_spark.sources.earthengine.client import offline

    offline("ssm-spark-test")
    cfg, root, prod = region
    grid = cfg.grid.build()

    def values(r, c, d):
        try:
            v, _ = service.stacks.values(r, c, d)
        except Exception:  # noqa: BLE001 - no file of that date: a feature without bands
            return {}
        return {b: (None if math.isnan(x) else x) for b, x in v.items()}

    def scenes(r, c, start, end):
        return [d for d in DATES if start <= d <= end]

    # no window configured: the registry's training period (the dates its training climatologies came from)
    plain = PointService(cfg, service.registry, source="ee",
                         ee_client=RecordedEE(cfg.earthengine, grid, values, scenes))
    trained = service.registry.manifest["training_data"]["date_range"]
    assert [d.isoformat() for d in plain.climatology.window] == trained and trained[0] == DATES[0]
    bad = cfg.model_copy(deep=True)
    bad.physics.change_detection.window_start, bad.physics.change_detection.window_end = DATES[-1], DATES[0]
    with pytest.raises(ConfigError, match="the end is before the start"):
        PointService(bad, service.registry, source="ee", ee_client=plain.stacks.client)
    c = cfg.model_copy(deep=True)
    c.physics.change_detection.window_start, c.physics.change_detection.window_end = DATES[0], DATES[-1]
    client = RecordedEE(c.earthengine, grid, values, scenes, failures=[HttpError(429, "Too many requests")])
    ee_svc = PointService(c, service.registry, source="ee", ee_client=client)
    assert isinstance(ee_svc.climatology, EarthEngineClimatology)
    rows = _sample(prod, 6, 4)
    for _, row in rows.iterrows():
        lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
        _assert_same(ee_svc.point(lat, lon, DATE, strict=False), row)
    assert len(client.sleeps) == 1 and ee_svc.climatology.computed == len(rows)
    row = rows.iloc[0]
    lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
    n = client.calls
    s = ee_svc.series(lat, lon, DATES[0], DATES[-1])
    local = service.series(lat, lon, DATES[0], DATES[-1])
    assert [p["date"] for p in s["points"]] == DATES
    assert client.calls - n == 2  # the scene dates, then the 6 dates in one request
    for a, b in zip(s["points"], local["points"]):
        assert (a["ssm"], a["qc"], a["model_id"]) == (b["ssm"], b["qc"], b["model_id"]) and a["source"] == "ee"
    assert s["skipped"] == [] and ee_svc.climatology.computed == len(rows)  # the cell's climatology kept
    from ssm_spark.point import NoAcquisitionError

    with pytest.raises(NoAcquisitionError, match="nearest dates with one: 2024-04-01, 2024-04-07, 2024-04-13") as ei:
        ee_svc.point(lat, lon, "2024-04-08")
    assert ei.value.info["nearest"] == ["2024-04-01", "2024-04-07", "2024-04-13", "2024-04-19"]


@pytest.mark.spark
@pytest.mark.slow
def test_clear_errors_outside_grid_coverage_and_dates(region, service):
    from ssm_spark.errors import InputError
    from ssm_spark.point import NoAcquisitionError, OutsideCoverageError, PointError

    cfg, root, prod = region
    grid = cfg.grid.build()
    lon, lat = grid.to_lonlat(int(prod.iloc[0]["row"]), int(prod.iloc[0]["col"]))
    with pytest.raises(OutsideCoverageError, match="outside grid ease2_1km"):
        service.point(88.0, lon, DATE)
    with pytest.raises(OutsideCoverageError, match="outside the stacks of 2024-04-07"):
        service.point(lat, lon + 5, DATE)
    with pytest.raises(NoAcquisitionError, match="nearest dates with stacks: 2024-04-01, 2024-04-07") as ei:
        service.point(lat, lon, "2024-04-05")
    assert ei.value.info["nearest"][:2] == ["2024-04-01", "2024-04-07"] and isinstance(ei.value, InputError)
    for bad in ("2024-13-01", "../../etc/passwd", "2024-4-7", "\uff12\uff10\uff12\uff14-04-01", "2024-04-01x"):
        with pytest.raises(PointError, match="date"):
            service.point(lat, lon, bad)
    with pytest.raises(PointError, match="expected a date YYYY-MM-DD"):  # full-width digits are not a date
        service.point(lat, lon, "\uff12\uff10\uff12\uff14-04-01")
    for la, lo in ((float("nan"), lon), (lat, float("inf")), (95.0, lon), ("x", lon)):
        with pytest.raises(PointError):
            service.point(la, lo, DATE)
    s = service.series(lat, lon, "2024-04-01", "2024-05-01")
    assert [p["date"] for p in s["points"]] == DATES
    assert s["points"][1]["ssm"] == service.point(lat, lon, DATE, strict=False)["ssm"]
    with pytest.raises(PointError, match="at most 400"):
        service.series(lat, lon, "2000-01-01", "2024-01-01")


@pytest.mark.spark
@pytest.mark.slow
def test_cli_point_json_and_exit_codes(region, capsys):
    from ssm_spark.cli import main

    cfg, root, prod = region
    grid = cfg.grid.build()
    row = prod[prod["ssm"].notna()].iloc[3]
    lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
    base = ["point", *sum((["--set", o] for o in SMALL), []), "--models", str(root / "models"), "--climatology",
            str(root / "product" / "climatology"), "--source", str(root / "sim" / "stacks"), "--lat", str(lat),
            "--lon", str(lon)]
    assert main(base + ["--date", DATE, "--json"]) == 0
    _assert_same(json.loads(capsys.readouterr().out), row)
    assert main(base + ["--date", "2024-04-08"]) == 2
    assert "nearest dates with stacks: 2024-04-01, 2024-04-07, 2024-04-13" in capsys.readouterr().err
    masked = prod[(prod["qc"] & MASK_BITS) != 0].iloc[0]
    mlon, mlat = grid.to_lonlat(int(masked["row"]), int(masked["col"]))
    assert main(base[:-4] + ["--lat", str(mlat), "--lon", str(mlon), "--date", DATE]) == 2
    assert "masked: QC" in capsys.readouterr().err
    assert main(base + ["--date", "2024-04-01", "--end", "2024-04-13", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 3


def _get(port: int, target: str, method: str = "GET") -> tuple[int, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request(method, target)
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.getheader("Content-Type") == "application/json", body
        assert "Traceback" not in body
        return resp.status, json.loads(body)
    finally:
        conn.close()


@pytest.mark.spark
@pytest.mark.slow
def test_http_service_on_loopback(region, service):
    from ssm_spark.serve import serve_in_thread

    cfg, root, prod = region
    grid = cfg.grid.build()
    srv = serve_in_thread(service, "127.0.0.1", 0)
    try:
        host, port = srv.server_address[:2]
        assert host == "127.0.0.1" and srv.url == f"http://127.0.0.1:{port}"
        st, body = _get(port, "/health")
        assert st == 200 and body["status"] == "ok" and body["manifest_id"] == service.registry.manifest_id
        row = prod[prod["ssm"].notna()].iloc[10]
        lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
        st, body = _get(port, f"/point?lat={lat!r}&lon={lon!r}&date={DATE}")
        assert st == 200 and body["file"].startswith("<stacks>/") and str(root) not in json.dumps(body)
        _assert_same(body, row)
        st, body = _get(port, f"/series?lat={lat!r}&lon={lon!r}&start=2024-04-01&end=2024-04-13")
        assert st == 200 and body["n"] == 3 and body["points"][1]["ssm"] == pytest.approx(row["ssm"], abs=1e-6)
        masked = prod[(prod["qc"] & MASK_BITS) != 0].iloc[0]
        mlon, mlat = grid.to_lonlat(int(masked["row"]), int(masked["col"]))
        st, body = _get(port, f"/point?lat={mlat!r}&lon={mlon!r}&date={DATE}")
        assert st == 422 and body["result"]["qc"] == int(masked["qc"]) and "masked" in body["error"]
        q = f"lat={lat!r}&lon={lon!r}"
        hostile = {
            f"/point?lat=nan&lon={lon}&date={DATE}": (400, "finite"),
            f"/point?lat=inf&lon={lon}&date={DATE}": (400, "finite"),
            f"/point?lat=1e400&lon={lon}&date={DATE}": (400, "finite"),
            f"/point?lat=abc&lon={lon}&date={DATE}": (400, "not a number"),
            f"/point?lat=91&lon={lon}&date={DATE}": (400, "outside"),
            f"/point?{q}&date=../../etc/passwd": (400, "expected a date"),
            f"/point?{q}&date=%2Fetc%2Fpasswd": (400, "expected a date"),
            f"/point?{q}&date=2024-02-30": (400, "calendar"),
            f"/point?{q}": (400, "missing parameter 'date'"),
            f"/point?{q}&date={DATE}&date={DATE}": (400, "2 times"),
            f"/point?{q}&date={DATE}&file=/etc/passwd": (400, "unknown parameter"),
            f"/point?{q}&date=2024-04-08": (404, "no stacks dated 2024-04-08 in <stacks>"),
            f"/point?lat=0&lon=0&date={DATE}": (404, "outside the stacks"),
            f"/series?{q}&start=1900-01-01&end=2100-12-31": (400, "at most"),
            f"/series?{q}&start=2024-04-13&end=2024-04-01": (400, "before start"),
            f"/point?{q}&date=2024-04-01%00": (400, "expected a date"),
            f"/point?lat=1%2C2&lon={lon}&date={DATE}": (400, "not a number"),
            f"/point?lat={'9' * 40}&lon={lon}&date={DATE}": (400, "too long"),
            f"/point?{q}&date={DATE}&%zz": (400, "malformed query string"),
            f"/series?{q}&start=2024-04-01": (400, "missing parameter 'end'"),
            "/etc/passwd": (404, "no endpoint"),
            "/%2e%2e/%2e%2e/etc/passwd": (404, "no endpoint"),
            "/point/../../etc/passwd": (404, "no endpoint"),
            "/docs": (404, "no endpoint"),  # FastAPI's page would load its JavaScript from a CDN
            "/point?" + "a" * 5000: (414, "longer than"),
        }
        for target, (want, text) in hostile.items():
            st, body = _get(port, target)
            assert st == want and text in body["error"], (target, st, body)
        for method in ("POST", "PUT", "DELETE"):
            st, body = _get(port, f"/point?{q}&date={DATE}", method=method)
            assert st == 405 and f"method {method} not allowed" in body["error"]
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("HEAD", f"/point?{q}&date={DATE}")
        resp = conn.getresponse()
        assert resp.status == 200 and resp.read() == b"" and int(resp.getheader("Content-Length")) > 100
        conn.close()
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/openapi.json")
        spec = json.loads(conn.getresponse().read())
        conn.close()
        assert {p["name"] for p in spec["paths"]["/series"]["get"]["parameters"]} == {"lat", "lon", "start", "end"}
    finally:
        srv.server_close()
    assert not srv.thread.is_alive()


@pytest.mark.spark
@pytest.mark.slow
def test_serve_command_starts_uvicorn_on_loopback_and_answers(region):
    """``ssm-spark serve`` as a user starts it: a separate process, port 0, the address from its log."""
    import re
    import subprocess
    import sys

    cfg, root, prod = region
    grid = cfg.grid.build()
    cmd = [sys.executable, "-m", "ssm_spark", "serve", *sum((["--set", o] for o in SMALL), []),
           "--models", str(root / "models"), "--stacks", str(root / "sim" / "stacks"),
           "--climatology", str(root / "product" / "climatology"), "--port", "0"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in proc.stderr:
            seen.append(line)
            m = re.search(r"on http://([\d.]+):(\d+) ", line)
            if m:
                break
        assert m, "".join(seen)
        assert m.group(1) == "127.0.0.1"  # loopback unless told otherwise
        row = prod[prod["ssm"].notna()].iloc[2]
        lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
        deadline = time.monotonic() + 30
        while True:  # the log line comes just before uvicorn listens
            try:
                st, body = _get(int(m.group(2)), f"/point?lat={lat!r}&lon={lon!r}&date={DATE}")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert st == 200
        _assert_same(body, row)
    finally:
        proc.terminate()
        assert proc.wait(30) == 0 or proc.returncode == -15


@pytest.mark.spark
@pytest.mark.slow
def test_earth_engine_export_shaped_stacks_go_through_produce_and_point(spark, region, service, tmp_path):
    """Files of the shape Earth Engine exports write (the export requests' crsTransform and region,
    noData -9999, no band names), named by ee-export --finalize: produce and point read them and give
    the product of the original stacks."""
    import rasterio
    from affine import Affine

    from ssm_spark.point import PointService
    from ssm_spark.product.produce import produce
    from ssm_spark.product.region import resolve_region
    from ssm_spark.sources.earthengine import export as X
    from ssm_spark.sources.earthengine.client import offline

    cfg, root, prod = region
    grid = cfg.grid.build()
    offline()
    ec = cfg.earthengine.model_copy(deep=True)
    ec.export.bucket = "test-bucket"
    items = X.plan(grid, resolve_region(None, cfg, grid).tiles, DATES)  # every date: the climatology needs them
    state = {}
    for it in items:
        req = X.serialize(X.build_task(it, ec, grid))
        text = json.dumps(req["expression"])
        assert json.dumps(X.R.crs_transform(grid)) in text
        x0, y0, x1, y1 = X.R.tile_bounds(grid, it.tile_row, it.tile_col)
        a, b, c, d, e, f = X.R.crs_transform(grid)
        transform = Affine(a, b, c, d, e, f) * Affine.translation(round((x0 - c) / a), round((y1 - f) / e))
        src_path = root / "sim" / (f"stacks/{it.date}/" if it.kind == "dynamic" else "static/") / Path(it.file).name
        with rasterio.open(src_path) as src:
            assert src.transform.almost_equals(transform) and (src.width, src.height) == (round((x1 - x0) / a),) * 2
            names = list(src.descriptions)
            data = np.stack([src.read(names.index(bn) + 1) for bn in it.bands])
        nodata = 0 if it.dtype == "uint8" else X.EXPORT_NODATA
        if it.dtype != "uint8":
            data = np.where(np.isnan(data), X.EXPORT_NODATA, data)
        out = tmp_path / it.file
        out.parent.mkdir(parents=True, exist_ok=True)
        with rasterio.open(out, "w", driver="GTiff", width=data.shape[2], height=data.shape[1], count=len(it.bands),
                           dtype=it.dtype, crs="EPSG:6933", transform=transform, nodata=nodata) as dst:
            dst.write(data.astype(it.dtype))
        state[it.key] = {"file": it.file, "state": "COMPLETED", "bands": list(it.bands), "dtype": it.dtype}
    (tmp_path / X.STATE_FILE).write_text(json.dumps({"version": 1, "tasks": state}))
    assert len(X.finalize(tmp_path)["named"]) == len(items)
    s = produce(spark, cfg, root / "models", tmp_path / "stacks", None, DATE, DATE, tmp_path / "product")
    assert s["produced"] == 1 and s["failed_files"] == []
    again = pd.read_parquet(tmp_path / "product" / "parquet" / f"date={DATE}").sort_values(["row", "col"])
    again = again.reset_index(drop=True)
    pd.testing.assert_frame_equal(again[["row", "col", "ssm", "ssm_p05", "ssm_p95", "env", "model_id", "qc"]],
                                  prod[["row", "col", "ssm", "ssm_p05", "ssm_p95", "env", "model_id", "qc"]])
    assert s["climatology"]["computed"] == 4
    svc = PointService(cfg, root / "models", tmp_path / "stacks", climatology=tmp_path / "product" / "climatology")
    assert svc.climatology is not None and svc.climatology.tiles == service.climatology.tiles
    row = prod[prod["ssm"].notna()].iloc[7]
    lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
    _assert_same(svc.point(lat, lon, DATE), row)


@pytest.mark.spark
@pytest.mark.slow
def test_a_running_service_sees_new_dates(region, service, tmp_path):
    import shutil

    from ssm_spark.point import NoAcquisitionError, PointService

    cfg, root, prod = region
    grid = cfg.grid.build()
    stacks = tmp_path / "stacks"
    shutil.copytree(root / "sim" / "stacks" / DATES[0], stacks / DATES[0])
    shutil.copytree(root / "sim" / "static", tmp_path / "static")
    svc = PointService(cfg, service.registry, stacks, cache_files=2, climatology=root / "product" / "climatology")
    row = prod[prod["ssm"].notna()].iloc[5]
    lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
    with pytest.raises(NoAcquisitionError, match=f"nearest dates with stacks: {DATES[0]}"):
        svc.point(lat, lon, DATE)
    shutil.copytree(root / "sim" / "stacks" / DATE, stacks / DATE)  # a new date arrives
    _assert_same(svc.point(lat, lon, DATE), row)
    assert svc.health()["dates"] == 2
