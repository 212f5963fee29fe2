"""The product browser (ssm_spark.browser) over a real small product: tiles are the Parquet's values in
the quicklooks' colour map, the series is the Parquet's, the point service answers dates without
product, hostile paths and parameters are refused with 4xx JSON, and the page works in headless
Chromium (tiles loaded, slider, click, series drawn with the Parquet's values; a screenshot kept).

The product: 2 x 2 tiles of 16 cells simulated over 4 dates, a registry trained without Spark on
synthetic matchups (tests/test_produce_memory.py's, seconds), ``produce`` run on the first 3 dates;
the 4th has stacks only, so the page sends its clicks to the point service."""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import re
import shutil
import socket
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest

from ssm_spark.config import load_config

ROOT = Path(__file__).resolve().parents[1]
SMALL = ["region.size_km=[32, 32]", "grid.tile_size=16", "simulate.n_stations=4", "simulate.min_stations_per_env=1",
         "simulate.start=2024-04-01", "simulate.end=2024-04-19", "simulate.revisit_days=6", "simulate.spinup_days=5"]
DATES = ["2024-04-01", "2024-04-07", "2024-04-13", "2024-04-19"]
PRODUCED = DATES[:3]
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")


@pytest.fixture(scope="module")
def region(spark, tmp_path_factory):
    """The product of PRODUCED, the stacks of DATES, the point service, the product's rows."""
    from test_produce_memory import _registry  # the Spark-free synthetic registry (seconds)

    from ssm_spark.point import PointService
    from ssm_spark.product.produce import produce
    from ssm_spark.sources.simulate import simulate

    root = tmp_path_factory.mktemp("browser")
    cfg = load_config(overrides=SMALL)
    simulate(cfg, root / "sim")
    assert sorted(p.name for p in (root / "sim" / "stacks").iterdir()) == DATES
    _registry(root / "models")
    summary = produce(spark, cfg, root / "models", root / "sim" / "stacks", None, PRODUCED[0], PRODUCED[-1],
                      root / "product")
    assert summary["produced"] == len(PRODUCED)
    rows = pd.read_parquet(root / "product" / "parquet")
    rows["date"] = rows["date"].astype(str)
    service = PointService(cfg, root / "models", root / "sim" / "stacks")
    return SimpleNamespace(cfg=cfg, root=root, product=root / "product", grid=cfg.grid.build(), rows=rows,
                           service=service)


@pytest.fixture(scope="module")
def server(region):
    """``ssm-spark serve``'s application with the point service and the product, on loopback:
    (host, port, url)."""
    from ssm_spark.serve import serve_in_thread

    running = serve_in_thread(region.service, product=region.product)
    host, port = running.server_address
    yield SimpleNamespace(host=host, port=port, url=running.url)
    running.shutdown()


def _get(server, target: str) -> tuple[int, dict, bytes]:
    """GET with the request target sent as written (no client-side normalisation or encoding)."""
    c = http.client.HTTPConnection(server.host, server.port, timeout=30)
    try:
        c.putrequest("GET", target, skip_accept_encoding=True)
        c.endheaders()
        r = c.getresponse()
        return r.status, {k.lower(): v for k, v in r.getheaders()}, r.read()
    finally:
        c.close()


def _json(server, target: str, status: int = 200) -> dict:
    st, headers, body = _get(server, target)
    assert st == status and headers["content-type"] == "application/json", (target, st, body[:300])
    return json.loads(body)


def _centre(region, row: int, col: int) -> tuple[float, float]:
    lon, lat = region.grid.to_lonlat(row, col)
    return lat, lon


def _cells(region, n: int, seed: int) -> pd.DataFrame:
    """n cells with an estimate on every product date, seeded."""
    ok = region.rows[region.rows["ssm"].notna()].groupby(["row", "col"]).size()
    full = ok[ok == len(PRODUCED)].index.to_frame(index=False)
    return full.sample(n=min(n, len(full)), random_state=seed)


# ------------------------------------------------------------------------------------------ tiles


def _tile_pixels(region, z: int, x: int, y: int):
    """For each pixel of a Web Mercator tile: its cell (row, col) and whether its centre is well
    inside that cell (more than 0.15 of a cell from every edge, so nearest resampling is unambiguous)."""
    import morecantile
    from pyproj import Transformer

    b = morecantile.tms.get("WebMercatorQuad").xy_bounds(morecantile.Tile(x, y, z))
    res = (b.right - b.left) / 256
    mx, my = np.meshgrid(b.left + (np.arange(256) + 0.5) * res, b.top - (np.arange(256) + 0.5) * res)
    lon, lat = Transformer.from_crs("EPSG:3857", "EPSG:4326", always_xy=True).transform(mx, my)
    gx, gy = region.grid.to_xy(lon, lat)
    fc, fr = (gx - region.grid.x0) / region.grid.cell, (region.grid.y0 - gy) / region.grid.cell
    clear = (np.abs(fc - np.floor(fc) - 0.5) < 0.35) & (np.abs(fr - np.floor(fr) - 0.5) < 0.35)
    return np.floor(fr).astype(int), np.floor(fc).astype(int), clear


def _png(data: bytes) -> np.ndarray:
    from PIL import Image

    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG" and img.size == (256, 256)
    return np.asarray(img.convert("RGBA"))


@pytest.mark.spark
def test_tiles_are_the_parquet_values_in_the_quicklook_colours(region, server):
    """Every clear pixel of the tiles over the region has the colour matplotlib gives the cell's
    Parquet ssm in the quicklook's map and range; cells without an estimate and outside the product
    are transparent; the QC layer colours exactly the cells without an estimate."""
    import matplotlib
    import morecantile

    from ssm_spark.browser.tiles import QC_CLASSES
    from ssm_spark.product.quicklook import COLORMAP

    date = PRODUCED[1]
    lo, hi = region.cfg.produce.quicklook_range
    cmap, norm = matplotlib.colormaps[COLORMAP], matplotlib.colors.Normalize(lo, hi)
    day = region.rows[region.rows["date"] == date].set_index(["row", "col"])
    z = 10
    lon0, lat0, lon1, lat1 = day["lon"].min(), day["lat"].min(), day["lon"].max(), day["lat"].max()
    tms = morecantile.tms.get("WebMercatorQuad")
    tiles = list(tms.tiles(lon0, lat0, lon1, lat1, [z]))
    assert len(tiles) >= 2
    checked = {"colour": 0, "transparent": 0, "qc": 0}
    for t in tiles:
        st, headers, body = _get(server, f"/browse/tiles/{date}/{z}/{t.x}/{t.y}.png")
        assert st == 200 and headers["content-type"] == "image/png"
        rgba = _png(body)
        st, _, qbody = _get(server, f"/browse/tiles/{date}/{z}/{t.x}/{t.y}.png?layer=qc")
        assert st == 200
        qrgba = _png(qbody)
        rows, cols, clear = _tile_pixels(region, z, t.x, t.y)
        keys = pd.MultiIndex.from_arrays([rows[clear], cols[clear]])
        got = day.reindex(keys)
        ssm = got["ssm"].to_numpy(dtype="f8")
        has = np.isfinite(ssm)
        want = cmap(norm(ssm[has]), bytes=True)
        np.testing.assert_array_equal(rgba[clear][has], want)
        assert (rgba[clear][~has][:, 3] == 0).all()  # no estimate or no product row: transparent
        # the QC mask: product cells without an estimate, in the colour of their first class
        qc = got["qc"].to_numpy()
        masked = ~has & got["qc"].notna().to_numpy()
        assert (qrgba[clear][has][:, 3] == 0).all() and (qrgba[clear][masked][:, 3] > 0).all()
        for bits, colour in zip(qc[masked].astype(int), qrgba[clear][masked]):
            first = next((c for _, m, c in QC_CLASSES if bits & m), None)
            if first is not None:
                assert tuple(colour) == first, bits
        checked["colour"] += int(has.sum())
        checked["transparent"] += int((~has).sum())
        checked["qc"] += int(masked.sum())
    assert checked["colour"] > 2000 and checked["transparent"] > 1000 and checked["qc"] > 50, checked
    # a tile far from the product: valid, fully transparent
    st, _, body = _get(server, f"/browse/tiles/{date}/{z}/0/0.png")
    assert st == 200 and (_png(body)[..., 3] == 0).all()


# ------------------------------------------------------------------------------------ JSON APIs


@pytest.mark.spark
def test_dates_series_and_point_answers_are_the_product_s(region, server):
    st, headers, _ = _get(server, "/")
    assert st == 307 and headers["location"].endswith("/browse/")
    st, headers, page = _get(server, "/browse/")
    assert st == 200 and b"static/browser.js" in page and "default-src 'self'" in headers["content-security-policy"]
    kinds = {".js": "text/javascript", ".css": "text/css", "": "text/plain"}
    for ref in re.findall(rb'(?:src|href)="(static/[^"]+)"', page):  # every file the page names is served
        st, headers, body = _get(server, "/browse/" + ref.decode())
        assert st == 200 and headers["content-type"].startswith(kinds[Path(ref.decode()).suffix]) and body, ref
    dates = _json(server, "/browse/api/dates")
    assert dates == {"dates": DATES, "product": PRODUCED, "without_product": DATES[3:]}
    meta = _json(server, "/browse/api/meta")
    assert meta["grid"] == region.grid.name and meta["point_service"] is True and len(meta["tiles"]) == 4
    assert meta["range"] == list(region.cfg.produce.quicklook_range) and len(meta["colours"]) == 11
    (la0, lo0), (la1, lo1) = meta["bounds"]
    assert la0 <= region.rows["lat"].min() and la1 >= region.rows["lat"].max()
    assert lo0 <= region.rows["lon"].min() and lo1 >= region.rows["lon"].max()

    never = region.rows.groupby(["row", "col"])["ssm"].count()  # cells without an estimate on any date
    masked = never[never == 0].index.to_frame(index=False).head(3)
    for _, cell in pd.concat([_cells(region, 6, 1), masked]).iterrows():
        r, c = int(cell["row"]), int(cell["col"])
        lat, lon = _centre(region, r, c)
        s = _json(server, f"/browse/api/series?lat={lat!r}&lon={lon!r}")
        want = region.rows[(region.rows["row"] == r) & (region.rows["col"] == c)].sort_values("date")
        assert (s["cell"]["row"], s["cell"]["col"]) == (r, c) and s["dates"] == list(want["date"])
        for k in ("ssm", "ssm_p05", "ssm_p95"):
            exp = [None if pd.isna(v) else pytest.approx(float(v), abs=1e-7) for v in want[k]]
            assert s[k] == exp, (k, r, c)
        assert s["qc"] == [int(v) for v in want["qc"]]
        # one date of the product: the same row; the date without product: the point service's answer
        p = _json(server, f"/browse/api/point?lat={lat!r}&lon={lon!r}&date={PRODUCED[0]}")
        assert p["source"] == "product" and p["ssm"] == s["ssm"][0] and p["qc"] == s["qc"][0]
        p = _json(server, f"/browse/api/point?lat={lat!r}&lon={lon!r}&date={DATES[3]}")
        ref = region.service.point(lat, lon, DATES[3], strict=False)
        assert p["source"] == "stacks" and p["date"] == DATES[3] and p["cell"]["row"] == r
        assert p["ssm"] == ref["ssm"] and p["qc"] == ref["qc"]
        assert str(region.root) not in json.dumps(p)  # the server's folders are not named
    assert s["ssm"][0] is None  # the last cell is a masked one


@pytest.mark.spark
def test_router_refuses_what_is_not_a_product_or_another_grid(region, tmp_path):
    from ssm_spark import browser
    from ssm_spark.errors import InputError
    from ssm_spark.point import PointService

    with pytest.raises(InputError, match="not a product folder"):
        browser.router(tmp_path, None)
    other = load_config(overrides=SMALL + ["grid.tile_size=32"])
    svc = PointService(other, region.service.registry, region.root / "sim" / "stacks")
    with pytest.raises(InputError, match="tiles of 16.*tiles of 32"):
        browser.router(region.product, svc)


# --------------------------------------------------------------------------------- hostile requests

HOSTILE = [
    # static files: traversal written plainly, percent-encoded, absolute, NUL, backslash, over-long
    ("/browse/static/../../../../../../etc/passwd", 400, "segments are refused"),
    ("/browse/static/%2e%2e%2f%2e%2e%2f%2e%2e%2f%2e%2e%2fetc%2fpasswd", 400, "segments are refused"),
    ("/browse/static/vendor/..%2F..%2Froutes.py", 400, "segments are refused"),
    ("/browse/static/%2Fetc%2Fpasswd", 400, "absolute"),
    ("/browse/static//etc/passwd", 400, "absolute"),
    ("/browse/static/browser.js%00.png", 400, "NUL"),
    ("/browse/static/..%5c..%5c..%5cetc%5cpasswd", 400, "backslash"),
    ("/browse/static/C:%2Fwindows%2Fwin.ini", 400, "absolute"),
    ("/browse/static/" + "a/" * 150 + "x.js", 400, "longer than"),
    ("/browse/static/vendor", 404, "no such file"),
    ("/browse/static/index.py", 404, "no such file"),
    # tiles: dates that are no date, not committed, traversal in the date, bounded z/x/y, the layer
    ("/browse/tiles/..%2F..%2Fproduct.json/1/0/0.png", 404, "no browser endpoint"),
    ("/browse/tiles/../1/0/0.png", 400, "expected a date"),
    ("/browse/tiles/%2e%2e/1/0/0.png", 400, "expected a date"),
    ("/browse/tiles/2024-02-30/1/0/0.png", 400, "no such calendar date"),
    ("/browse/tiles/2024-13-01/1/0/0.png", 400, "no such calendar date"),
    ("/browse/tiles/%EF%BC%92024-04-01/1/0/0.png", 400, "expected a date"),
    ("/browse/tiles/2024-04-01%00/1/0/0.png", 400, "expected a date"),
    ("/browse/tiles/" + "2" * 1500 + "/1/0/0.png", 400, "expected a date"),
    ("/browse/tiles/2024-04-19/1/0/0.png", 404, "no committed product"),
    ("/browse/tiles/2024-04-01/19/0/0.png", 400, "z '19'"),
    ("/browse/tiles/2024-04-01/5/32/0.png", 400, "x '32'"),
    ("/browse/tiles/2024-04-01/5/-1/0.png", 400, "x '-1'"),
    ("/browse/tiles/2024-04-01/5/0/1e3.png", 400, "y '1e3'"),
    ("/browse/tiles/2024-04-01/5/0/" + "9" * 40 + ".png", 400, "expected an integer"),
    ("/browse/tiles/2024-04-01/5/0/0.png?layer=..%2F..%2Fetc%2Fpasswd", 400, "expected ssm or qc"),
    ("/browse/tiles/2024-04-01/5/0/0.png?layer=ssm&layer=qc", 400, "given 2 times"),
    ("/browse/tiles/2024-04-01/5/0/0.png?path=/etc/passwd", 400, "unknown parameter"),
    # series and point: coordinates, dates
    ("/browse/api/series?lat=nan&lon=2.5", 400, "finite degrees"),
    ("/browse/api/series?lat=44&lon=inf", 400, "finite degrees"),
    ("/browse/api/series?lat=1e309&lon=2.5", 400, "finite degrees"),
    ("/browse/api/series?lat=91&lon=2.5", 400, "finite degrees"),
    ("/browse/api/series?lat=44&lon=%2Fetc%2Fpasswd", 400, "not a number"),
    ("/browse/api/series?lat=44", 400, "missing parameter 'lon'"),
    ("/browse/api/series?lat=44&lon=2.5&lat=45", 400, "given 2 times"),
    ("/browse/api/series?lat=44&lon=" + "1" * 1500, 400, "longer than 64"),
    ("/browse/api/series?lat=44%00&lon=2.5", 400, "NUL"),
    ("/browse/api/series?lat=0&lon=0", 404, "no product row"),
    ("/browse/api/series?lat=89.9&lon=0", 404, "outside grid"),
    ("/browse/api/point?lat=44&lon=2.5&date=2024-04-19%2F..%2F..%2Fx", 400, "expected a date"),
    ("/browse/api/point?lat=44&lon=2.5&date=2024-04-31", 400, "no such calendar date"),
    ("/browse/api/point?lat=44&lon=2.5&date=%2E%2E%2F%2E%2E", 400, "expected a date"),
    ("/browse/%2e%2e/%2e%2e/product.json", 404, "no browser endpoint"),
    ("/browse/..%2F..%2Fparquet", 404, "no browser endpoint"),
]


@pytest.mark.spark
def test_hostile_requests_get_4xx_json_and_no_file(region, server):
    secrets = [b"root:", b"<VRTDataset", b"PAR1", b"import ", b"manifest_id\": \"", str(region.root).encode()]
    for target, status, message in HOSTILE:
        st, headers, body = _get(server, target)
        assert (st, headers.get("content-type")) == (status, "application/json"), (target, st, body[:200])
        ans = json.loads(body)
        assert ans["status"] == status and message in ans["error"], (target, ans)
        assert not any(s in body for s in secrets), (target, body[:200])
    # a raw NUL byte in the request line never reaches the routes: the HTTP parser refuses it
    with socket.create_connection((server.host, server.port), timeout=10) as s:
        s.sendall(b"GET /browse/static/\x00../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = s.recv(4096)
    assert reply.startswith(b"HTTP/1.1 400") and b"root:" not in reply


def test_a_link_out_of_the_static_folder_is_refused(tmp_path, monkeypatch):
    """A file or link inside the static folder that resolves outside it is refused (resolve + check)."""
    from ssm_spark.browser import routes
    from ssm_spark.browser.folder import BadParameter

    outside = tmp_path / "secret.txt"
    outside.write_text("secret")
    static = tmp_path / "static"
    static.mkdir()
    (static / "ok.js").write_text("ok")
    (static / "link.txt").symlink_to(outside)
    (static / "dir").symlink_to(tmp_path)
    monkeypatch.setattr(routes, "STATIC", static.resolve())
    assert routes._static_file("ok.js") == static.resolve() / "ok.js"
    for path in ("link.txt", "dir/secret.txt"):
        with pytest.raises(BadParameter, match="leaves the static folder") as ei:
            routes._static_file(path)
        assert ei.value.status == 400


def test_static_files_are_vendored_package_data():
    """The page loads only files of the package (no CDN), each is package data in setup.py, and the
    vendored Leaflet is the npm release its README names (sha256)."""
    from ssm_spark.browser import STATIC

    html = (STATIC / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    loaded = [r for r in refs if not r.endswith("LICENSE") and r != "data:,"]
    assert loaded and all(r.startswith("static/") and (STATIC / r[7:]).is_file() for r in loaded), refs
    for f in ("index.html", "browser.js", "browser.css"):
        text = (STATIC / f).read_text()
        assert not re.search(r"(?:src|href|url)\s*[=(]\s*[\"']?(?:https?:)?//", text), f
    assert "https://" not in (STATIC / "browser.js").read_text()
    vendor = STATIC / "vendor"
    sums = re.findall(r"^([0-9a-f]{64})  (\S+)$", (vendor / "README.md").read_text(), re.M)
    assert {p for _, p in sums} == {"leaflet/leaflet.js", "leaflet/leaflet.css"}
    for digest, rel in sums:
        assert hashlib.sha256((vendor / rel).read_bytes()).hexdigest() == digest, rel
    assert "Redistribution and use in source and binary forms" in (vendor / "leaflet" / "LICENSE").read_text()
    # package_data lists one "<folder>/*" per folder of static files (a new folder must be added there)
    globs = set(re.findall(r'"(browser/static[^"]*)"', (ROOT / "setup.py").read_text()))
    folders = {p.parent.relative_to(STATIC.parent.parent).as_posix() + "/*" for p in STATIC.rglob("*") if p.is_file()}
    assert folders and folders <= globs, folders - globs


# ------------------------------------------------------------------------------ headless Chromium


def _chrome(profile: Path):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    missing = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
    assert not missing, f"{missing} not installed: run scripts/setup.sh --test (Debian chromium, chromium-driver)"
    opts = Options()
    opts.binary_location = str(CHROMIUM)
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
              "--disable-background-networking", "--disable-component-update", "--disable-sync",
              "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,800",
              "--force-device-scale-factor=1", "--force-color-profile=srgb"):
        opts.add_argument(a)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=opts)
    driver.set_page_load_timeout(60)
    driver.set_script_timeout(30)
    return driver


def _wait(driver, script: str, what: str, timeout: float = 60.0):
    """Poll a JS expression until it is truthy; its value."""
    deadline = time.monotonic() + timeout
    while True:
        v = driver.execute_script("return " + script)
        if v:
            return v
        if time.monotonic() > deadline:
            state = driver.execute_script("return JSON.stringify(window.ssmBrowser && window.ssmBrowser.state.tiles)")
            raise AssertionError(f"timed out waiting for {what} ({script}); tiles state {state}")
        time.sleep(0.1)


_TILES_OF = """(function (date) {
  var imgs = Array.prototype.slice.call(document.querySelectorAll('#map img.leaflet-tile'));
  return imgs.filter(function (i) { return i.src.indexOf('/tiles/' + date + '/') >= 0; })
             .map(function (i) {
               return [i.src, i.complete, i.naturalWidth, i.classList.contains('leaflet-tile-loaded')];
             });
})"""


def _tiles_shown(driver, date: str) -> list:
    return driver.execute_script(f"return {_TILES_OF}(arguments[0])", date)


def _click_cell(driver, region, row: int, col: int) -> tuple[float, float]:
    """Click the map at a cell's centre; the click's position in the map element."""
    from selenium.webdriver.common.action_chains import ActionChains

    lat, lon = _centre(region, row, col)
    x, y = driver.execute_script("var p = window.ssmBrowser.map.latLngToContainerPoint([arguments[0], arguments[1]]);"
                                 "return [p.x, p.y];", lat, lon)
    m = driver.find_element("id", "map")
    ActionChains(driver).move_to_element_with_offset(m, round(x - m.size["width"] / 2),
                                                     round(y - m.size["height"] / 2)).click().perform()
    return x, y


def _drawn(driver) -> list[dict]:
    return driver.execute_script("""return Array.prototype.map.call(document.querySelectorAll('#chart circle.pt'),
        function (c) { return {date: c.dataset.date, ssm: c.dataset.ssm, p05: c.dataset.p05, p95: c.dataset.p95,
                               current: c.classList.contains('current')}; });""")


@pytest.mark.slow
@pytest.mark.spark
def test_the_page_in_headless_chromium(region, server, tmp_path):
    """Load the page, wait for its tiles, move the slider, click a cell: the series drawn is the
    Parquet's; on the date without product the click shows the point retrieval; the QC layer loads;
    no console error (a blocked or missing resource would be one). Screenshot: tmp_path/browser.png."""
    import matplotlib
    from PIL import Image
    from selenium.webdriver.common.keys import Keys

    from ssm_spark.product.quicklook import COLORMAP

    profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=tmp_path))
    driver = _chrome(profile)
    try:
        driver.get(server.url + "/browse/")
        _wait(driver, "window.ssmBrowser && window.ssmBrowser.state.ready", "the page")
        state = driver.execute_script("return window.ssmBrowser.state")
        assert state["dates"] == DATES and state["date"] == PRODUCED[-1]
        _wait(driver, f"window.ssmBrowser.state.tiles.done && window.ssmBrowser.state.tiles.date === '{PRODUCED[-1]}'",
              "the first tiles")
        shown = _tiles_shown(driver, PRODUCED[-1])
        assert shown and all(ok and w == 256 and loaded for _, ok, w, loaded in shown), shown

        # the slider, moved with the keyboard as a user would: one date back
        slider = driver.find_element("id", "slider")
        slider.send_keys(Keys.ARROW_LEFT)
        date = PRODUCED[1]
        _wait(driver, f"window.ssmBrowser.state.tiles.done && window.ssmBrowser.state.tiles.date === '{date}'",
              "the tiles of the slider's date")
        assert driver.find_element("id", "date-label").text == date
        shown = _tiles_shown(driver, date)
        assert shown and all(ok and w == 256 and loaded for _, ok, w, loaded in shown), shown
        assert driver.execute_script("return window.ssmBrowser.state.tiles")["errors"] == 0

        # click a cell with an estimate on every date: the chart draws the Parquet's series
        cell = _cells(region, 1, 7).iloc[0]
        r, c = int(cell["row"]), int(cell["col"])
        px = _click_cell(driver, region, r, c)
        _wait(driver, "window.ssmBrowser.state.chart.done", "the series chart")
        assert f"row {r}, col {c}" in driver.find_element("id", "cell-info").text
        want = region.rows[(region.rows["row"] == r) & (region.rows["col"] == c)].sort_values("date")
        drawn = _drawn(driver)
        assert [d["date"] for d in drawn] == PRODUCED == list(want["date"])
        for d, (_, w) in zip(drawn, want.iterrows()):
            for k, col in (("ssm", "ssm"), ("p05", "ssm_p05"), ("p95", "ssm_p95")):
                assert float(d[k]) == pytest.approx(float(w[col]), abs=1e-7), (d, k)
            assert d["current"] == (d["date"] == date)
        assert driver.find_elements("css selector", "#chart polygon.band")

        # what the screen shows at the click is the cell's colour (inside the click marker's ring)
        shot = tmp_path / "browser.png"
        assert driver.save_screenshot(str(shot)) and shot.stat().st_size > 20_000
        m = driver.find_element("id", "map")
        img = np.asarray(Image.open(shot).convert("RGB"))
        at = img[int(m.location["y"] + px[1]), int(m.location["x"] + px[0])]
        lo, hi = region.cfg.produce.quicklook_range
        ssm = float(want[want["date"] == date]["ssm"].iloc[0])
        colour = matplotlib.colormaps[COLORMAP](matplotlib.colors.Normalize(lo, hi)(ssm), bytes=True)[:3]
        assert np.abs(at.astype(int) - np.array(colour)).max() <= 3, (at, colour)
        if os.environ.get("SSM_BROWSER_SCREENSHOT"):  # keep a copy where asked (e.g. a CI artifact folder)
            shutil.copy(shot, os.environ["SSM_BROWSER_SCREENSHOT"])

        # the QC mask on demand: its tiles load over the map, its legend shows
        assert not driver.find_element("id", "qc-legend").is_displayed()
        assert not driver.find_elements("css selector", "#map img[src*='layer=qc']")
        driver.find_element("id", "qc-toggle").click()
        _wait(driver, f"""(function () {{ var q = Array.prototype.filter.call(document.querySelectorAll('#map img'),
              function (i) {{ return i.src.indexOf('/tiles/{date}/') >= 0 && i.src.indexOf('layer=qc') >= 0; }});
              return q.length > 0 && q.every(function (i) {{ return i.complete && i.naturalWidth === 256; }}); }})()""",
              "the QC tiles")
        assert driver.find_element("id", "qc-legend").is_displayed()

        # to the date without product (the slider's end): no tiles; a click asks the point service
        slider.send_keys(Keys.END)
        _wait(driver, f"window.ssmBrowser.state.date === '{DATES[3]}'", "the last date")
        assert "no product" in driver.find_element("id", "date-label").text
        _click_cell(driver, region, r, c)
        _wait(driver, "window.ssmBrowser.state.chart.done && window.ssmBrowser.state.point", "the point retrieval")
        ref = region.service.point(*_centre(region, r, c), DATES[3], strict=False)
        info = driver.find_element("id", "point-info").text
        assert f"Point retrieval (stacks) on {DATES[3]}" in info and f"{ref['ssm']:.3f}" in info
        extra = driver.execute_script("var p = document.querySelector('#chart polygon.pt-point');"
                                      "return p && [p.dataset.date, p.dataset.ssm];")
        assert extra[0] == DATES[3] and float(extra[1]) == pytest.approx(ref["ssm"], abs=1e-9)
        assert len(_drawn(driver)) == len(PRODUCED)  # the product's series is still the Parquet's
        assert not driver.find_elements("css selector", f"#map img[src*='/tiles/{DATES[3]}/']")
        driver.save_screenshot(str(tmp_path / "browser_point.png"))

        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], errors
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
