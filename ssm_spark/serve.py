"""``ssm-spark serve``: the point service over HTTP (standard library ``http.server``, no framework).

Endpoints (GET only, JSON answers)::

    /health                                   {"status": "ok", "manifest_id", "grid", "sources", "dates"}
    /point?lat=LAT&lon=LON&date=YYYY-MM-DD    the answer of PointService.point
    /series?lat=LAT&lon=LON&start=D&end=D     the answer of PointService.series (at most max_series_days)

The registry is loaded once, at start-up. Errors are JSON ``{"error": message, ...}`` with a 4xx
status that says what is wrong: 400 bad or missing parameters (NaN, infinite, out of range, not a
date, unknown or repeated parameters), 404 outside the grid or coverage / no acquisition (with the
nearest dates), 405 a method other than GET/HEAD, 414 a request line longer than the limit, 422 a
masked cell (with its QC bits and the full answer). Anything unexpected answers 500 with a request
id; the traceback goes to the server's log only, never to the client. The server's folders appear
in answers as ``<stacks>`` and ``<product>``.

Safe by default: binds to 127.0.0.1 unless ``--host`` says otherwise; bounded series length and
request size; one thread per connection (``ThreadingHTTPServer``); the registry and caches are
thread-safe (a kept dataset is read under its own lock). At start-up every stack file is checked
against the grid once (:meth:`StackSource.check_all`), so no query pays for it.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import threading
import uuid
from http import HTTPStatus
from pathlib import Path
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from ssm_spark.point import MAX_SERIES_DAYS, PointError, PointService, StackSource

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config

log = logging.getLogger(__name__)

__all__ = ["make_server", "serve_in_thread", "run", "MAX_URL_BYTES"]

#: Longest request target accepted (bytes).
MAX_URL_BYTES = 2048
_PARAMS = {"/point": ("lat", "lon", "date"), "/series": ("lat", "lon", "start", "end"), "/health": ()}


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _params(path: str, query: str) -> dict[str, str]:
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


def _handler(service: PointService, max_series_days: int) -> type[BaseHTTPRequestHandler]:
    # the server's folders are not the client's business: answers name them <stacks>, <product>
    roots = sorted(((str(Path(getattr(src, "root")).resolve()), f"<{src.name}>") for src in
                    (service.stacks, service.product) if src is not None and hasattr(src, "root")),
                   key=lambda kv: -len(kv[0]))
    roots += [(str(getattr(src, "root")), f"<{src.name}>") for src in (service.stacks, service.product)
              if src is not None and hasattr(src, "root")]

    def scrub(text: str) -> str:
        for path, name in roots:
            text = text.replace(path, name)
        return text

    class Handler(BaseHTTPRequestHandler):
        server_version = "ssm-spark"
        sys_version = ""
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.info("%s %s", self.address_string(), format % args)

        def _send(self, status: int, body: dict, head: bool = False) -> None:
            data = scrub(json.dumps(body, allow_nan=False, default=str)).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.end_headers()
            if not head:
                self.wfile.write(data)

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # the stdlib's own errors (bad request line, 414, unsupported method) as JSON too
            try:
                self._send(code, {"error": message or HTTPStatus(code).phrase, "status": code})
            except OSError:
                pass

        def _answer(self, head: bool = False) -> None:
            if len(self.path) > MAX_URL_BYTES:
                self._send(414, {"error": f"request target longer than {MAX_URL_BYTES} bytes", "status": 414}, head)
                return
            parts = urlsplit(self.path)
            if parts.path not in _PARAMS:
                self._send(404, {"error": f"no endpoint {parts.path[:64]!r}; use /point, /series or /health",
                                 "status": 404}, head)
                return
            try:
                p = _params(parts.path, parts.query)
                if parts.path == "/health":
                    body = service.health()
                elif parts.path == "/point":
                    body = service.point(p["lat"], p["lon"], p["date"])
                else:
                    body = service.series(p["lat"], p["lon"], p["start"], p["end"], max_days=max_series_days)
                self._send(200, body, head)
            except _BadRequest as exc:
                self._send(exc.status, {"error": str(exc), "status": exc.status}, head)
            except PointError as exc:
                body = {"error": str(exc), "status": exc.status, **{k: v for k, v in exc.info.items()}}
                self._send(exc.status, body, head)
            except Exception:  # noqa: BLE001 - never a traceback to the client
                rid = uuid.uuid4().hex[:12]
                log.exception("request %s failed: %s", rid, self.path[:200])
                self._send(500, {"error": "internal error; the server log has the details", "request_id": rid,
                                 "status": 500}, head)

        def do_GET(self) -> None:  # noqa: N802 - stdlib name
            self._answer()

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(head=True)

        def _not_allowed(self) -> None:
            self.close_connection = True
            self._send(405, {"error": f"method {self.command} not allowed; use GET", "status": 405})

        do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed  # noqa: N815

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 64


def make_server(service: PointService, host: str = "127.0.0.1", port: int = 8080,
                max_series_days: int = MAX_SERIES_DAYS) -> ThreadingHTTPServer:
    """An HTTP server answering from ``service`` (not started; ``port=0`` picks a free port)."""
    srv = _Server((host, port), _handler(service, max_series_days))
    return srv


def serve_in_thread(service: PointService, host: str = "127.0.0.1", port: int = 0,
                    max_series_days: int = MAX_SERIES_DAYS) -> tuple[ThreadingHTTPServer, threading.Thread]:
    """Start a server in a daemon thread (tests, notebooks); ``server.shutdown()`` stops it."""
    srv = make_server(service, host, port, max_series_days)
    th = threading.Thread(target=srv.serve_forever, name="ssm-spark-serve", daemon=True)
    th.start()
    return srv, th


def run(args: argparse.Namespace, cfg: "Config") -> int:
    """``ssm-spark serve``: runs until interrupted."""
    svc = PointService(cfg, args.models, args.stacks, static=args.static, product=args.product, source=args.source,
                       cache_files=args.cache_files, climatology=args.climatology)
    if isinstance(svc.stacks, StackSource):  # every file checked once now, not at its first query
        log.info("serve: %d stack files checked", svc.stacks.check_all())
    srv = make_server(svc, args.host, args.port, args.max_series_days or MAX_SERIES_DAYS)
    host, port = srv.server_address[:2]
    log.info("serving %s on http://%s:%d (/point, /series, /health); registry loaded in %.2f s", svc.registry,
             host, port, svc.load_seconds)
    try:
        srv.serve_forever()
    finally:
        srv.server_close()
    return 0
