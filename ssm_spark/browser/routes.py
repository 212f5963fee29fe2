"""The browser's HTTP routes (FastAPI), all under ``/browse``; GET only, errors as JSON.

=====================================================  ==========================================================
``/browse/``                                           the page (``static/index.html``)
``/browse/static/<path>``                              the page's files and the vendored Leaflet
``/browse/api/meta``                                   grid, region tiles and bounds, colour range and stops, QC classes
``/browse/api/dates``                                  committed dates, and the point service's dates without product
``/browse/tiles/<date>/<z>/<x>/<y>.png?layer=ssm|qc``  a Web Mercator tile of a committed date
``/browse/api/series?lat=&lon=``                       the cell's ssm, p05, p95, qc on every committed date (Parquet)
``/browse/api/point?lat=&lon=&date=``                  one date: the Parquet row, else ``service.point``
=====================================================  ==========================================================

Every parameter is checked before it is used: dates are real ``YYYY-MM-DD`` dates the folder has
committed (tiles, rows) or the service knows, ``z/x/y`` integers inside the zoom's tile range,
coordinates finite degrees, static paths plain relative names that resolve inside the static folder.
Refusals are ``{"error": message, "status": code}`` with a 4xx code naming the parameter and the
cause; anything unexpected answers 500 with a request id (the traceback goes to the log only). The
server's folders appear in answers as ``<product>`` and ``<stacks>``.
"""

from __future__ import annotations

import json
import logging
import math
import re
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute

from ssm_spark.browser.folder import BadParameter, ProductFolder, iso_date
from ssm_spark.browser.tiles import MAX_ZOOM, NO_ESTIMATE_OTHER, QC_CLASSES, TileRenderer, colour_stops
from ssm_spark.errors import InputError
from ssm_spark.physics.qc import describe as describe_qc
from ssm_spark.point.errors import PointError
from ssm_spark.point.service import folder_scrubber

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.point import PointService

log = logging.getLogger(__name__)

__all__ = ["router", "STATIC", "PREFIX"]

PREFIX = "/browse"
STATIC = Path(__file__).resolve().parent / "static"
MAX_PATH = 200
_TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8", ".png": "image/png",
          ".svg": "image/svg+xml", ".html": "text/html; charset=utf-8", ".md": "text/plain; charset=utf-8",
          ".txt": "text/plain; charset=utf-8", "": "text/plain; charset=utf-8"}
#: The page loads nothing from anywhere else (no CDN); the browser enforces it.
_CSP = "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; object-src 'none'"
_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-cache"}


def _json(body: Any, status: int = 200, scrub: Callable[[str], str] = str) -> Response:
    return Response(scrub(json.dumps(body, allow_nan=False, default=str)), status, media_type="application/json",
                    headers=_HEADERS)


def _route_class(scrub: Callable[[str], str]) -> type[APIRoute]:
    """Routes whose every failure is a JSON answer (parameter errors 4xx, the rest 500 with an id)."""

    class Guarded(APIRoute):
        def get_route_handler(self) -> Callable:
            handler = super().get_route_handler()

            async def guarded(request: Request) -> Response:
                try:
                    return await handler(request)
                except BadParameter as exc:
                    return _json({"error": str(exc), "status": exc.status}, exc.status, scrub)
                except PointError as exc:
                    return _json({"error": str(exc), "status": exc.status, **exc.info}, exc.status, scrub)
                except RequestValidationError as exc:
                    what = "; ".join(f"{'.'.join(map(str, e.get('loc', ())))}: {e.get('msg')}" for e in exc.errors())
                    return _json({"error": f"bad request ({what[:300]})", "status": 400}, 400)
                except Exception:  # noqa: BLE001 - never a traceback to the client
                    rid = uuid.uuid4().hex[:12]
                    log.exception("browser request %s failed: %s", rid, str(request.url.path)[:200])
                    return _json({"error": "internal error; the server log has the details", "request_id": rid,
                                  "status": 500}, 500)

            return guarded

    return Guarded


def _query(request: Request, want: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, str]:
    """The query's parameters: each of ``want`` once, ``optional`` at most once, nothing else."""
    q = request.query_params
    unknown = sorted(set(q.keys()) - set(want) - set(optional))
    if unknown:
        raise BadParameter(400, f"unknown parameter(s) {[u[:32] for u in unknown[:5]]}; expected "
                                f"{list(want + optional)}")
    out = {}
    for k in want + optional:
        vals = q.getlist(k)
        if len(vals) > 1:
            raise BadParameter(400, f"parameter {k!r} given {len(vals)} times")
        if not vals or vals[0] == "":
            if k in want:
                raise BadParameter(400, f"missing parameter {k!r} (expected {'&'.join(w + '=' for w in want)})")
            continue
        if len(vals[0]) > 64:
            raise BadParameter(400, f"parameter {k!r}: longer than 64 characters")
        if "\x00" in vals[0]:
            raise BadParameter(400, f"parameter {k!r}: a NUL byte")
        out[k] = vals[0]
    return out


def _coord(value: str, what: str, limit: float) -> float:
    try:
        f = float(value.strip())
    except ValueError:
        raise BadParameter(400, f"{what} {value[:32]!r}: not a number (degrees)") from None
    if not math.isfinite(f) or abs(f) > limit:
        raise BadParameter(400, f"{what} {value[:32]!r}: expected finite degrees in [-{limit:g}, {limit:g}]")
    return f


def _latlon(p: dict[str, str]) -> tuple[float, float]:
    return _coord(p["lat"], "lat", 90.0), _coord(p["lon"], "lon", 180.0)


def _tile_index(value: str, what: str, top: int) -> int:
    if not re.fullmatch(r"[0-9]{1,7}", value, re.ASCII) or int(value) > top:
        raise BadParameter(400, f"{what} {value[:16]!r}: expected an integer 0..{top}")
    return int(value)


def _static_file(path: str) -> Path:
    """The static file a request names, or 400/404: no NUL, no backslash, not absolute, no ``.``/``..``
    or empty segment, resolved (links followed) inside :data:`STATIC`, a known kind of file."""
    if len(path) > MAX_PATH:
        raise BadParameter(400, f"path: longer than {MAX_PATH} characters")
    if "\x00" in path or "\\" in path:
        raise BadParameter(400, "path: a NUL byte or a backslash")
    if path.startswith("/") or re.match(r"[A-Za-z]:", path):
        raise BadParameter(400, f"path {path[:64]!r}: absolute; name a file of the static folder")
    if any(part in ("", ".", "..") for part in path.split("/")):
        raise BadParameter(400, f"path {path[:64]!r}: '.', '..' or empty segments are refused")
    full = (STATIC / path).resolve()
    if not full.is_relative_to(STATIC):
        raise BadParameter(400, f"path {path[:64]!r}: leaves the static folder")
    if not full.is_file() or full.suffix not in _TYPES:
        raise BadParameter(404, f"path {path[:64]!r}: no such file in the browser's static folder")
    return full


def router(product: Path, service: "PointService | None" = None, *,
           vrange: tuple[float, float] | None = None) -> APIRouter:
    """The browser's routes over ``product`` (see the module docstring).

    Parameters
    ----------
    product : path
        A product folder (``ssm-spark produce``).
    service : PointService, optional
        Answers clicks on dates without product (its dates join the slider's).
    vrange : (float, float), optional
        Colour range of ``ssm`` (default: the service's ``produce.quicklook_range``, else the
        configuration's default, as the quicklooks).

    Raises
    ------
    InputError
        Not a product folder, or a service on another grid.
    """
    folder = ProductFolder(product)
    if service is not None and (service.grid.name, service.grid.tile_size) != (folder.grid.name,
                                                                                folder.grid.tile_size):
        raise InputError(f"{product}: the product's grid {folder.grid.name} (tiles of {folder.grid.tile_size}) is "
                         f"not the point service's {service.grid.name} (tiles of {service.grid.tile_size})")
    if vrange is None:
        from ssm_spark.config import ProduceConfig

        vrange = tuple(service.cfg.produce.quicklook_range if service is not None else
                       ProduceConfig().quicklook_range)
    tiles = TileRenderer(vrange)
    scrub = folder_scrubber(service, product)
    r = APIRouter(prefix=PREFIX, route_class=_route_class(scrub))

    @r.get("", include_in_schema=False)
    def to_page() -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=307)

    @r.get("/")
    def page(request: Request) -> Response:
        _query(request, ())
        return Response((STATIC / "index.html").read_bytes(), media_type="text/html; charset=utf-8",
                        headers={**_HEADERS, "Content-Security-Policy": _CSP})

    @r.get("/static/{path:path}")
    def static(path: str, request: Request) -> Response:
        _query(request, ())
        full = _static_file(path)
        return Response(full.read_bytes(), media_type=_TYPES[full.suffix], headers=_HEADERS)

    @r.get("/api/meta")
    def meta(request: Request) -> Response:
        _query(request, ())
        g = folder.grid
        polys = [g.tile_polygon(tr, tc, densify=4) for tr, tc in folder.tiles()]
        rings = [[[round(y, 6), round(x, 6)] for x, y in p.exterior.coords] for p in polys]
        bounds = None
        if polys:
            xs = [x for p in polys for x in p.bounds[0::2]]
            ys = [y for p in polys for y in p.bounds[1::2]]
            bounds = [[min(ys), min(xs)], [max(ys), max(xs)]]
        m = folder.meta
        return _json({"product": m.get("product"), "grid": g.name, "tile_size": g.tile_size,
                      "region": (m.get("region") or {}).get("name"), "manifest_id": m.get("manifest_id"),
                      "bounds": bounds, "tiles": rings, "range": list(tiles.vrange), "colours": colour_stops(),
                      "qc_classes": [{"name": n, "bits": b, "colour": "rgba(%d,%d,%d,%.2f)" % (*c[:3], c[3] / 255)}
                                     for n, b, c in (*QC_CLASSES, (NO_ESTIMATE_OTHER[0], 0, NO_ESTIMATE_OTHER[1]))],
                      "max_zoom": MAX_ZOOM, "point_service": service is not None})

    @r.get("/api/dates")
    def dates(request: Request) -> Response:
        _query(request, ())
        done = folder.dates()
        other = sorted(set(service.dates()) - set(done)) if service is not None else []
        both = sorted({*done, *other})
        return _json({"dates": both, "product": done, "without_product": other})

    @r.get("/tiles/{date}/{z}/{x}/{y}.png")
    def tile(date: str, z: str, x: str, y: str, request: Request) -> Response:
        p = _query(request, (), ("layer",))
        layer = p.get("layer", "ssm")
        if layer not in ("ssm", "qc"):
            raise BadParameter(400, f"layer {layer[:16]!r}: expected ssm or qc")
        zi = _tile_index(z, "z", MAX_ZOOM)
        xi, yi = _tile_index(x, "x", 2**zi - 1), _tile_index(y, "y", 2**zi - 1)
        vrt = folder.vrt(date)
        try:
            png = tiles.tile(vrt, zi, xi, yi, layer)
        except KeyError as exc:
            raise BadParameter(404, f"layer {layer}: {exc.args[0]}") from None
        return Response(png, media_type="image/png", headers={**_HEADERS, "Cache-Control": "max-age=60"})

    @r.get("/api/series")
    def series(request: Request) -> Response:
        lat, lon = _latlon(_query(request, ("lat", "lon")))
        return _json({"lat": lat, "lon": lon, "source": "product", "units": "m3/m3", **folder.series(lat, lon)})

    @r.get("/api/point")
    def point(request: Request) -> Response:
        p = _query(request, ("lat", "lon", "date"))
        lat, lon = _latlon(p)
        day = iso_date(p["date"])
        if day in folder.dates():
            rc = folder.cell(lat, lon)
            rec = folder.row(*rc, day)
            if rec is None:
                raise BadParameter(404, f"no product row for cell (row {rc[0]}, col {rc[1]}) on {day} (outside the "
                                        "product's region, or no acquisition there that date)")
            ans = {k: (None if rec[k] is None or rec[k] != rec[k] else float(rec[k]))
                   for k in ("ssm", "ssm_p05", "ssm_p95")}
            return _json({"lat": lat, "lon": lon, "date": day, "source": "product", "units": "m3/m3", **ans,
                          "qc": int(rec["qc"]), "qc_flags": describe_qc(int(rec["qc"])), "env": rec.get("env"),
                          "model_id": rec.get("model_id"), "cell": {"grid": folder.grid.name, "row": rc[0],
                                                                    "col": rc[1]}})
        if service is None:
            raise BadParameter(404, f"date {day}: no committed product of that date, and no point service (start "
                                    "ssm-spark serve with --models and --stacks for point retrievals)")
        return _json(service.point(lat, lon, day, strict=False), scrub=scrub)

    @r.get("/{rest:path}", include_in_schema=False)
    def unknown(rest: str) -> Response:
        raise BadParameter(404, f"no browser endpoint {('/browse/' + rest)[:80]!r}; the page is {PREFIX}/")

    return r
