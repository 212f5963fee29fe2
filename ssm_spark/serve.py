"""``ssm-spark serve``: the point service over HTTP, a FastAPI application on uvicorn.

Endpoints (GET and HEAD, JSON answers; the OpenAPI description at ``/openapi.json``; no ``/docs``
page: FastAPI's loads its JavaScript from a CDN, and the service must work offline)::

    /health                                   {"status": "ok", "manifest_id", "grid", "sources", "dates"}
    /point?lat=LAT&lon=LON&date=YYYY-MM-DD    the answer of PointService.point
    /series?lat=LAT&lon=LON&start=D&end=D     the answer of PointService.series (at most max_series_days)
    /browse/...                               the product browser (ssm_spark.browser), with --product

The registry is loaded once, at start-up. Errors are JSON ``{"error": message, "status": code, ...}``
with a 4xx status that says what is wrong: 400 bad or missing parameters (NaN, infinite, out of range,
not a date, unknown or repeated parameters), 404 no such endpoint, outside the grid or coverage, or no
acquisition (with the nearest dates), 405 a method other than GET/HEAD, 414 a request target longer
than the limit, 422 a masked cell (with its QC bits and the full answer), 503 more requests at once
than the server takes. Anything unexpected answers 500 with a request id; the traceback goes to the
server's log only, never to the client. The server's folders appear in answers as ``<stacks>`` and
``<product>``.

Why our own parameter check rather than FastAPI's typed ``Query`` validation alone: a strict service
refuses unknown and repeated parameters (``?date=a&date=b`` would otherwise silently take the last),
and the answers keep the project's error shape; the parameters are still declared on the routes, so
the OpenAPI description lists them.

Safe by default: binds to 127.0.0.1 unless ``--host`` says otherwise; bounded series length, request
target and concurrency (uvicorn's ``limit_concurrency``: 503 beyond it); request bodies are never
read. Handlers are plain functions, run in the server's thread pool; the registry and caches are
thread-safe (a kept dataset is read under its own lock). At start-up every stack file is checked
against the grid once (:meth:`StackSource.check_all`), so no query pays for it.
"""

from __future__ import annotations

import argparse
import errno
import json
import logging
import math
import socket
import threading
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable
from urllib.parse import parse_qs

from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from ssm_spark import storage
from ssm_spark.errors import InputError
from ssm_spark.point import MAX_SERIES_DAYS, PointError, PointService, StackSource
from ssm_spark.point.service import folder_scrubber

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config

log = logging.getLogger(__name__)

__all__ = ["create_app", "serve_in_thread", "Running", "run", "MAX_URL_BYTES", "MAX_CONCURRENCY"]

#: Longest request target accepted (bytes).
MAX_URL_BYTES = 2048
#: Requests served at once (more answer 503).
MAX_CONCURRENCY = 64
_PARAMS = {"/point": ("lat", "lon", "date"), "/series": ("lat", "lon", "start", "end"), "/health": ()}
_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _params(path: str, query: str) -> dict[str, str]:
    """The parameters of ``path`` from the raw query string: each once, none unknown, coordinates finite."""
    want = _PARAMS[path]
    try:
        q = parse_qs(query, keep_blank_values=True, strict_parsing=bool(query), max_num_fields=16)
    except ValueError as exc:
        raise _BadRequest(400, f"malformed query string ({exc})") from exc
    unknown = sorted(set(q) - set(want))
    if unknown:
        raise _BadRequest(400, f"unknown parameter(s) {unknown[:5]} for {path}; expected {list(want)}")
    out = {}
    for k in want:
        v = q.get(k)
        if not v or v == [""]:
            raise _BadRequest(400, f"missing parameter {k!r} for {path} (expected {'&'.join(f'{w}=' for w in want)})")
        if len(v) > 1:
            raise _BadRequest(400, f"parameter {k!r} given {len(v)} times")
        out[k] = v[0]
    for k in ("lat", "lon"):
        if k in out:
            s = out[k].strip()
            if len(s) > 32:
                raise _BadRequest(400, f"{k}: too long to be a coordinate")
            try:
                f = float(s)
            except ValueError:
                raise _BadRequest(400, f"{k} {s[:32]!r}: not a number (degrees)") from None
            if not math.isfinite(f):
                raise _BadRequest(400, f"{k} {s!r}: not a finite number")
    return out


def create_app(service: PointService | None, product: Path | str | None = None,
               max_series_days: int = MAX_SERIES_DAYS) -> FastAPI:
    """The FastAPI application answering from ``service``; with ``product`` (a folder), the browser under
    ``/browse`` (a product on a store by URL is refused by name: the browser reads a folder)."""
    if storage.is_remote(product):
        raise InputError(f"serve: the product browser (/browse/) reads a product folder, not {product}: serve a "
                         "local copy or a mounted path (point and series queries do answer from a product by URL)")
    product = Path(product) if product is not None else None
    scrub = folder_scrubber(service, product)
    app = FastAPI(title="ssm-spark", summary="Surface soil moisture at a point, from the registry's models",
                  version=__import__("ssm_spark").__version__, docs_url=None, redoc_url=None)

    def answer(status: int, body: dict, head: bool = False) -> Response:
        data = scrub(json.dumps(body, allow_nan=False, default=str)).encode()
        return Response(b"" if head else data, status_code=status, media_type="application/json",
                        headers={**_HEADERS, "Content-Length": str(len(data))})

    def error(status: int, message: str, head: bool = False, **extra: Any) -> Response:
        return answer(status, {"error": message, "status": status, **extra}, head)

    def call(request: Request, path: str, fn: Callable[[dict[str, str]], dict]) -> Response:
        head = request.method == "HEAD"
        try:
            return answer(200, fn(_params(path, request.url.query)), head)
        except _BadRequest as exc:
            return error(exc.status, str(exc), head)
        except PointError as exc:
            return error(exc.status, str(exc), head, **exc.info)
        except Exception:  # noqa: BLE001 - never a traceback to the client
            rid = uuid.uuid4().hex[:12]
            log.exception("request %s failed: %s", rid, str(request.url)[:200])
            return error(500, "internal error; the server log has the details", head, request_id=rid)

    @app.middleware("http")
    async def bounded_target(request: Request, call_next):  # noqa: ANN001, ANN202 - Starlette's signature
        target = request.scope.get("raw_path", b"") + b"?" + request.scope.get("query_string", b"")
        if len(target) > MAX_URL_BYTES:
            return error(414, f"request target longer than {MAX_URL_BYTES} bytes", request.method == "HEAD")
        return await call_next(request)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        head = request.method == "HEAD"
        if exc.status_code == 404:
            return error(404, f"no endpoint {request.url.path[:64]!r}; use /point, /series, /health"
                         + (" or /browse/" if product is not None else ""), head)
        if exc.status_code == 405:
            return error(405, f"method {request.method} not allowed; use GET", head)
        return error(exc.status_code, str(exc.detail), head)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> Response:
        # the declared parameters are all strings: only a missing one gets here; say it as _params would
        head = request.method == "HEAD"
        if request.url.path in _PARAMS:
            try:
                _params(request.url.path, request.url.query)
            except _BadRequest as bad:
                return error(bad.status, str(bad), head)
        first = exc.errors()[0] if exc.errors() else {}
        return error(400, f"invalid request: {first.get('loc', '')} {first.get('msg', 'bad parameter')}", head)

    if service is not None:
        lat_q = Query(description="latitude, WGS84 degrees")
        lon_q = Query(description="longitude, WGS84 degrees")

        @app.head("/health", include_in_schema=False)
        @app.get("/health", summary="the service and its registry")
        def health(request: Request) -> Response:
            return call(request, "/health", lambda p: service.health())

        @app.head("/point", include_in_schema=False)
        @app.get("/point", summary="SSM at one cell and date")
        def point(request: Request, lat: str = lat_q, lon: str = lon_q,
                  date: str = Query(description="YYYY-MM-DD")) -> Response:
            return call(request, "/point", lambda p: service.point(p["lat"], p["lon"], p["date"]))

        @app.head("/series", include_in_schema=False)
        @app.get("/series", summary="SSM at one cell over dates")
        def series(request: Request, lat: str = lat_q, lon: str = lon_q,
                   start: str = Query(description="first date, YYYY-MM-DD"),
                   end: str = Query(description=f"last date, YYYY-MM-DD (at most {max_series_days} days)")) -> Response:
            return call(request, "/series",
                        lambda p: service.series(p["lat"], p["lon"], p["start"], p["end"], max_days=max_series_days))

    if product is not None:
        from ssm_spark import browser

        app.include_router(browser.router(product, service))

        @app.get("/", include_in_schema=False)
        def root() -> Response:
            return RedirectResponse("/browse/", status_code=307)

    return app


class Running:
    """A server started by :func:`serve_in_thread`: its address, and ``shutdown()`` to stop it."""

    def __init__(self, server: Any, sock: socket.socket, thread: threading.Thread) -> None:
        self._server, self._sock, self.thread = server, sock, thread
        self.server_address = sock.getsockname()[:2]
        self.url = f"http://{self.server_address[0]}:{self.server_address[1]}"

    def shutdown(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self.thread.join(timeout)

    def server_close(self) -> None:
        self.shutdown()
        self._sock.close()


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket on ``host:port``, else :class:`InputError` naming them and the likely cause."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        cause = {errno.EADDRINUSE: "another server already listens there: stop it or give another --port",
                 errno.EACCES: "ports below 1024 need privileges: give --port 1024 or above",
                 errno.EADDRNOTAVAIL: "no interface of this machine has that address: check --host"}
        raise InputError(f"serve: cannot listen on {host}:{port}: {exc.strerror or exc} "
                         f"({cause.get(exc.errno, 'check --host and --port')})") from exc
    sock.set_inheritable(True)
    return sock


def _server(app: FastAPI) -> Any:
    import uvicorn

    # log_config=None: keep the project's logging; uvicorn's own loggers propagate to it
    config = uvicorn.Config(app, log_config=None, access_log=False, limit_concurrency=MAX_CONCURRENCY,
                            timeout_keep_alive=5, server_header=False, date_header=True)
    return uvicorn.Server(config)


def serve_in_thread(service: PointService | None, host: str = "127.0.0.1", port: int = 0,
                    max_series_days: int = MAX_SERIES_DAYS, product: Path | str | None = None) -> Running:
    """Start a server in a daemon thread (tests, notebooks; ``port=0`` picks a free port); returns when
    it answers. ``running.shutdown()`` stops it."""
    sock = _bind(host, port)
    server = _server(create_app(service, product, max_series_days))
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="ssm-spark-serve", daemon=True)
    th.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not th.is_alive() or time.monotonic() > deadline:
            sock.close()
            raise RuntimeError(f"serve: the server on {host}:{port} did not start (see the log)")
        time.sleep(0.01)
    return Running(server, sock, th)


def run(args: argparse.Namespace, cfg: "Config") -> int:
    """``ssm-spark serve``: runs until interrupted."""
    svc = PointService(cfg, args.models, args.stacks, static=args.static, product=args.product, source=args.source,
                       cache_files=args.cache_files, climatology=args.climatology)
    if isinstance(svc.stacks, StackSource):  # every file checked once now, not at its first query
        with svc._scope():
            log.info("serve: %d stack files checked", svc.stacks.check_all())
    browse = args.product
    if storage.is_remote(browse):  # the browser reads a product folder's COGs, VRTs and quicklooks
        log.warning("serve: /browse/ is not served for a product on a store (%s): points and series answer "
                    "from it; for the browser, serve a local copy or a mounted path", browse)
        browse = None
    app = create_app(svc, browse, args.max_series_days or MAX_SERIES_DAYS)
    sock = _bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    log.info("serving %s on http://%s:%d (/point, /series, /health%s); registry loaded in %.2f s", svc.registry,
             host, port, ", /browse/" if browse else "", svc.load_seconds)
    try:
        _server(app).run(sockets=[sock])
    finally:
        sock.close()
    return 0
