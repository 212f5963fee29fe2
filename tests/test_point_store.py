"""Point queries on stacks and products on object storage by URL, against a real S3 server (SeaweedFS,
started here on loopback): the answers equal those on the local copies of the same files, a warm point
costs no LIST, a rewritten object is read anew, a product tile is read in one ranged request, and a
missing bucket, refused credentials or a listing failing mid-series are errors naming the URL. Slow:
the whole service (a trained registry with change detection, produce's product) by URL against the
local one, point by point and as a series, through the CLI and over HTTP."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssm_spark import storage
from ssm_spark.config import load_config
from ssm_spark.errors import InputError

import s3server

BUCKET = "ssm-point"
SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3",
         "physics.change_detection.min_dates=4"]
DATE = "2024-04-07"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """SeaweedFS's S3 gateway on loopback, its keys in the environment (restored after), a bucket."""
    with s3server.serving(tmp_path_factory.mktemp("seaweedfs"), BUCKET, kill=True) as srv:
        yield srv


def _put(local: Path, url: str) -> None:
    fs = storage.filesystem(url)
    fs.put(str(local), storage.fs_path(url), recursive=True)


@pytest.fixture(scope="module")
def sim(s3, tmp_path_factory):
    """A simulated region's stacks and static layers (no Spark), uploaded to the store."""
    from ssm_spark.sources.simulate import simulate

    root = tmp_path_factory.mktemp("point-store")
    cfg = load_config(overrides=SMALL)
    simulate(cfg, root / "sim")
    _put(root / "sim" / "stacks", f"s3://{BUCKET}/sim/stacks")
    _put(root / "sim" / "static", f"s3://{BUCKET}/sim/static")
    return cfg, root


@pytest.fixture()
def bad_keys(s3):
    """Credentials the server refuses (its own keys restored after)."""
    good = os.environ["AWS_SECRET_ACCESS_KEY"]
    os.environ["AWS_SECRET_ACCESS_KEY"] = "wrong" + good[5:]
    yield
    os.environ["AWS_SECRET_ACCESS_KEY"] = good


def _cells(src, date: str, n: int, seed: int) -> list[tuple[int, int]]:
    rng = np.random.default_rng(seed)
    src.check_all()
    out = []
    for f in src._inv[date]:
        rr = rng.integers(0, f.height, n)
        cc = rng.integers(0, f.width, n)
        out += [(f.row_off + int(r), f.col_off + int(c)) for r, c in zip(rr, cc)]
    return out


def test_stacks_by_url_equal_the_local_stacks_and_a_warm_point_lists_nothing(sim):
    from ssm_spark.point import StackSource

    cfg, root = sim
    grid = cfg.grid.build()
    local = StackSource(root / "sim" / "stacks", grid)
    url = StackSource(f"s3://{BUCKET}/sim/stacks", grid, listing_ttl=600)
    assert url.static == f"/vsis3/{BUCKET}/sim/static"  # static/ beside the stacks, found on the store
    assert url.dates() == local.dates() and len(url.dates()) == 6
    cells = _cells(local, DATE, 3, 1)
    for r, c in cells:
        a, wa = local.pixel(r, c, DATE)
        b, wb = url.pixel(r, c, DATE)
        pd.testing.assert_frame_equal(a, b, rtol=0, atol=1e-7)
        assert wb == f"s3://{BUCKET}/sim/stacks/{DATE}/{Path(wa).name}"
    lists, opened = url.listings.lists, url.files.opened
    for r, c in cells:  # warm: the kept listings and datasets, no request to list or open
        url.pixel(r, c, DATE)
    assert url.listings.lists == lists and url.files.opened == opened
    # a series: every date at once, equal to the local one (and its skipped dates' reasons alike)
    r, c = cells[0]
    pa, ia = local.pixels(r, c, local.dates())
    pb, ib = url.pixels(r, c, url.dates())
    pd.testing.assert_frame_equal(pa, pb, rtol=0, atol=1e-7)
    assert [(d, why) for d, _, why in ia] == [(d, why) for d, _, why in ib]
    # a date that is not there: the nearest dates named, as locally
    from ssm_spark.point import NoAcquisitionError

    with pytest.raises(NoAcquisitionError, match=f"no stacks dated 2024-04-08 in s3://{BUCKET}/sim/stacks.*"
                                                 "2024-04-07"):
        url.pixel(r, c, "2024-04-08")


def test_a_rewritten_object_is_read_anew_after_its_listing_expires(sim):
    from ssm_spark.point import StackSource

    cfg, root = sim
    grid = cfg.grid.build()
    local = StackSource(root / "sim" / "stacks", grid)
    url = StackSource(f"s3://{BUCKET}/sim/stacks", grid, listing_ttl=0.2)
    r, c = _cells(local, "2024-04-13", 1, 2)[0]
    before, where = url.pixel(r, c, "2024-04-13")
    name = Path(where).name
    other = root / "sim" / "stacks" / "2024-04-19" / name  # the same tile, another date's values
    storage.filesystem(where).put_file(str(other), storage.fs_path(where))
    time.sleep(0.3)
    after, _ = url.pixel(r, c, "2024-04-13")
    want, _ = local.pixel(r, c, "2024-04-19")
    assert not np.isclose(before["vv_db"].iloc[0], after["vv_db"].iloc[0])
    np.testing.assert_allclose(after["vv_db"].to_numpy(), want["vv_db"].to_numpy(), atol=1e-7)
    storage.filesystem(where).put_file(str(root / "sim" / "stacks" / "2024-04-13" / name), storage.fs_path(where))


def test_store_errors_name_the_url_and_the_cause(sim, bad_keys):
    from ssm_spark.point import StackSource
    from ssm_spark.point.errors import StoreError

    cfg, _ = sim
    grid = cfg.grid.build()
    with pytest.raises(StoreError, match=rf"s3://{BUCKET}/sim/stacks: cannot list it .*credentials"):
        StackSource(f"s3://{BUCKET}/sim/stacks", grid)


def test_missing_bucket_and_a_listing_failing_mid_series(sim):
    from ssm_spark.point import StackSource
    from ssm_spark.point.errors import StoreError

    cfg, _ = sim
    grid = cfg.grid.build()
    with pytest.raises(InputError, match="s3://no-such-bucket-x/stacks: stacks folder not found on the store"):
        StackSource("s3://no-such-bucket-x/stacks", grid)
    url = StackSource(f"s3://{BUCKET}/sim/stacks", grid, listing_ttl=0)
    good = os.environ["AWS_SECRET_ACCESS_KEY"]
    try:
        url.listings._fs.clear()  # the next listing signs with the new (wrong) key
        os.environ["AWS_SECRET_ACCESS_KEY"] = "wrong" + good[5:]
        with pytest.raises(StoreError, match=rf"s3://{BUCKET}/sim/stacks.*cannot list it.*refused the credentials"):
            url.pixels(100, 100, url._dates)
    finally:
        os.environ["AWS_SECRET_ACCESS_KEY"] = good


def _tile(n_rows: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = np.repeat(np.arange(64, 64 + n_rows // 32), 32).astype("i4")
    cols = np.tile(np.arange(32, 64), n_rows // 32).astype("i4")
    return pd.DataFrame({"grid": "ease2_1km", "row": rows, "col": cols, "tile_row": (rows // 32).astype("i4"),
                         "tile_col": (cols // 32).astype("i4"), "ssm": rng.uniform(0.05, 0.5, n_rows).astype("f4"),
                         "ssm_p05": rng.uniform(0, 0.05, n_rows).astype("f4"),
                         "ssm_p95": rng.uniform(0.5, 0.6, n_rows).astype("f4"),
                         "qc": rng.integers(0, 4, n_rows).astype("i4"), "env": "cropland/temperate",
                         "model_id": "m/u/xgb", **{f"x{i}": rng.normal(size=n_rows) for i in range(10)}})


def test_a_product_tile_on_the_store_is_one_ranged_read(s3, tmp_path):
    """Committed dates only; the tile's footer kept, each point one request for its row group."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ssm_spark.point import NoAcquisitionError, OutsideCoverageError, ProductSource

    cfg = load_config(overrides=["grid.tile_size=32"])
    grid = cfg.grid.build()
    prod = tmp_path / "product"
    name = f"{grid.name}_2_1.parquet"
    for d, committed in (("2024-04-01", True), ("2024-04-07", True), ("2024-04-13", False)):
        part = prod / "parquet" / f"date={d}"
        part.mkdir(parents=True)
        tile = _tile(1024, len(d))
        tile = tile[(tile["row"] != 80) | (tile["col"] != 50)]  # a cell of the tile's window without a row
        pq.write_table(pa.Table.from_pandas(tile, preserve_index=False), part / name,
                       compression="zstd", row_group_size=128, write_statistics=True)
        if committed:
            (part / "_SUCCESS.json").write_text(json.dumps(
                {"status": "complete", "outputs": {f"parquet/date={d}/{name}": (part / name).stat().st_size}}))
    url = f"s3://{BUCKET}/tiles/product"
    _put(prod, url)
    local, remote = ProductSource(prod, grid), ProductSource(url, grid, listing_ttl=600)
    assert remote.dates() == local.dates() == ["2024-04-01", "2024-04-07"]
    size = (prod / "parquet" / "date=2024-04-01" / name).stat().st_size
    for i, (r, c) in enumerate([(64, 32), (70, 40), (95, 63)]):
        a, wa = local.row(r, c, "2024-04-01")
        before = dict(remote.reads)
        b, wb = remote.row(r, c, "2024-04-01")
        assert a == b and wb == f"{url}/parquet/date=2024-04-01/{name}"
        got = {k: remote.reads[k] - before.get(k, 0) for k in remote.reads}
        assert size > 65536 and got["requests"] == (2 if i == 0 else 1), got  # the footer once, then a range
        # the row group holding the cell (and, the first time, the footer's 64 KiB), not the tile
        assert got["bytes"] < (65536 if i == 0 else 0) + size / 4, (got, size)
    with pytest.raises(NoAcquisitionError, match="no complete product dated 2024-04-13.*2024-04-07"):
        remote.row(70, 40, "2024-04-13")  # its files are there, its marker is not
    with pytest.raises(OutsideCoverageError, match="no tile file"):
        remote.row(0, 0, "2024-04-01")
    for src in (local, remote):
        with pytest.raises(NoAcquisitionError, match="no product row for cell"):
            src.row(80, 50, "2024-04-07")  # in the tile's window, not in its rows
    # committed since: a date asked for is looked up again (its marker)
    marker = {"status": "complete", "outputs": {f"parquet/date=2024-04-13/{name}": size}}
    storage.write_bytes(f"{url}/parquet/date=2024-04-13/_SUCCESS.json", json.dumps(marker).encode())
    (prod / "parquet" / "date=2024-04-13" / "_SUCCESS.json").write_text(json.dumps(marker))
    time.sleep(1.1)
    assert remote.row(70, 40, "2024-04-13")[0] == local.row(70, 40, "2024-04-13")[0]


# ----------------------------------------------------------------------------- the whole service (slow)

@pytest.fixture(scope="module")
def region(spark, s3, tmp_path_factory):
    """A trained registry (with change detection), produce's product of DATE; stacks, static, product and
    registry uploaded to the store."""
    from ssm_spark.product.produce import produce
    from regions import trained_region

    root = tmp_path_factory.mktemp("point-store-region")
    cfg = load_config(overrides=SMALL)
    trained_region(spark, cfg, root)
    summary = produce(spark, cfg, root / "models", root / "sim" / "stacks", None, DATE, DATE, root / "product")
    assert summary["produced"] == 1
    base = f"s3://{BUCKET}/region"
    for sub in ("sim/stacks", "sim/static"):
        _put(root / sub, f"{base}/{sub}")
    _put(root / "product", f"{base}/product")
    for key in (root / "product" / "climatology").iterdir():  # as produce --output s3:// publishes it
        if key.is_dir():
            storage.publish(key, f"{base}/product/climatology/{key.name}", "climatology")
    storage.publish(root / "models", f"{base}/models", "model registry")
    return cfg, root, base


def _same(a: dict, b: dict) -> None:
    """Two answers equal (numbers to 1e-7), but for the time they took."""
    for k in a:
        if k == "elapsed_ms":
            continue
        if isinstance(a[k], float):
            assert b[k] == pytest.approx(a[k], abs=1e-7), k
        elif isinstance(a[k], dict):
            assert a[k].keys() == b[k].keys(), k
            for j in a[k]:
                if isinstance(a[k][j], float):
                    assert b[k][j] == pytest.approx(a[k][j], abs=1e-7), (k, j)
                else:
                    assert b[k][j] == a[k][j], (k, j)
        else:
            assert b[k] == a[k], (k, a[k], b[k])


@pytest.mark.spark
@pytest.mark.slow
def test_the_service_by_url_answers_as_on_the_local_copies(region):
    from ssm_spark.point import PointService
    from ssm_spark.point.service import folder_scrubber

    cfg, root, base = region
    grid = cfg.grid.build()
    clim = root / "product" / "climatology"
    local = PointService(cfg, root / "models", root / "sim" / "stacks", climatology=clim)
    url = PointService(cfg, f"{base}/models", f"{base}/sim/stacks", product=f"{base}/product")
    assert url.climatology is not None  # the product's own, fetched from <product>/climatology
    assert url.registry.manifest_id == local.registry.manifest_id
    prod_local = PointService(cfg, local.registry, source=str(root / "product"))
    prod_url = PointService(cfg, local.registry, source=f"{base}/product")
    assert isinstance(prod_url.product.root, str) and prod_url.stacks is None
    prod = pd.read_parquet(root / "product" / "parquet" / f"date={DATE}")
    ok = prod[prod["ssm"].notna()].sample(12, random_state=3)
    scrub_l, scrub_u = folder_scrubber(local), folder_scrubber(url)
    stacks_only = PointService(cfg, local.registry, f"{base}/sim/stacks", climatology=clim)
    for _, row in ok.iterrows():
        lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
        for other_date in ("2024-04-13", "2024-05-01"):  # not in the product: from the stacks
            a, b = local.point(lat, lon, other_date, strict=False), url.point(lat, lon, other_date, strict=False)
            _same({**a, "file": scrub_l(a["file"])}, {**b, "file": scrub_u(b["file"])})
            assert scrub_u(b["file"]).startswith("<stacks>/") and b["source"] == "stacks"
        a, b = local.point(lat, lon, DATE, strict=False), stacks_only.point(lat, lon, DATE, strict=False)
        _same({**a, "file": ""}, {**b, "file": ""})
        a, b = prod_local.point(lat, lon, DATE), prod_url.point(lat, lon, DATE)
        _same({**a, "file": folder_scrubber(prod_local)(a["file"])},
              {**b, "file": folder_scrubber(prod_url)(b["file"])})
        assert url.point(lat, lon, DATE)["source"] == "product"
        assert b["ssm"] == pytest.approx(float(row["ssm"]), abs=1e-6)
    lon, lat = grid.to_lonlat(int(ok.iloc[0]["row"]), int(ok.iloc[0]["col"]))
    sa = local.series(lat, lon, "2024-04-01", "2024-05-01")
    sb = stacks_only.series(lat, lon, "2024-04-01", "2024-05-01")
    assert sa["n"] == sb["n"] >= 5 and sa["skipped"] == sb["skipped"]
    for a, b in zip(sa["points"], sb["points"]):
        _same({**a, "file": scrub_l(a["file"]), "elapsed_ms": 0},
              {**b, "file": folder_scrubber(stacks_only)(b["file"]), "elapsed_ms": 0})
    text = scrub_u(json.dumps(url.series(lat, lon, "2024-04-01", "2024-05-01")))
    assert BUCKET not in text and os.environ["AWS_SECRET_ACCESS_KEY"] not in text and "<product>/date=" in text


@pytest.mark.spark
@pytest.mark.slow
def test_cli_point_and_serve_by_url(region, capsys):
    import http.client

    from ssm_spark.cli import main
    from ssm_spark.point import PointService
    from ssm_spark.serve import serve_in_thread

    cfg, root, base = region
    grid = cfg.grid.build()
    prod = pd.read_parquet(root / "product" / "parquet" / f"date={DATE}")
    row = prod[prod["ssm"].notna()].iloc[5]
    lon, lat = grid.to_lonlat(int(row["row"]), int(row["col"]))
    args = [*sum((["--set", o] for o in SMALL), []), "--models", f"{base}/models", "--lat", str(lat), "--lon",
            str(lon), "--date", DATE, "--json", "--source", f"{base}/product"]
    assert main(["point", *args]) == 0
    ans = json.loads(capsys.readouterr().out)
    assert ans["ssm"] == pytest.approx(float(row["ssm"]), abs=1e-6) and ans["source"] == "product"
    assert main(["point", *[a.replace(BUCKET, "no-such-bucket-x") if a.startswith("s3://") and "product" in a
                            else a for a in args]]) == 2
    assert "no-such-bucket-x" in capsys.readouterr().err
    svc = PointService(cfg, f"{base}/models", f"{base}/sim/stacks", product=f"{base}/product")
    running = serve_in_thread(svc)
    try:
        conn = http.client.HTTPConnection(*running.server_address, timeout=30)
        conn.request("GET", f"/point?lat={lat}&lon={lon}&date=2024-05-01")
        resp = conn.getresponse()
        body = resp.read().decode()
        assert resp.status in (200, 422), body
        assert "<stacks>/2024-05-01/" in body and BUCKET not in body and "/vsis3/" not in body
    finally:
        running.server_close()


def test_the_browser_refuses_a_product_by_url():
    from ssm_spark.serve import create_app

    with pytest.raises(InputError, match="product browser .*reads a product folder, not s3://b/product"):
        create_app(None, "s3://b/product")


def test_a_bad_listing_ttl_is_refused_by_name(monkeypatch):
    from ssm_spark.errors import ConfigError
    from ssm_spark.point.store import Listings

    monkeypatch.setenv("SSM_POINT_LIST_TTL_S", "12.5")
    assert Listings().ttl == 12.5
    for bad in ("soon", "-1", "nan", "inf"):
        monkeypatch.setenv("SSM_POINT_LIST_TTL_S", bad)
        with pytest.raises(ConfigError, match=f"SSM_POINT_LIST_TTL_S={bad!r}"):
            Listings()
    monkeypatch.delenv("SSM_POINT_LIST_TTL_S")
    assert Listings().ttl == 30.0
