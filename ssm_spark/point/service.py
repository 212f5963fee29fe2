"""The point service: a registry loaded once, one source, answers through produce's own code.

    source -> pixel row of the cell (:mod:`ssm_spark.point.cells`: the stack reader's value rules,
    environment, mask bits) -> with a change-detection registry, the cell's climatology
    (:mod:`ssm_spark.point.climatology`, as produce's ``read_clipped``) -> product row
    (:func:`ssm_spark.product.produce.predict_rows`: :meth:`Registry.predict` with the registry's
    WCM parameters and the model selected for the environment, QC bits)

A series reads every date's pixel row first, then runs ONE ``predict_rows`` on all of them (rows are
independent: the same numbers as one call per date, at the cost of one).
"""

from __future__ import annotations

import bisect
import contextlib
import datetime as dt
import logging
import math
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import pandas as pd

from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import GridError, InputError
from ssm_spark.physics.qc import describe as describe_qc
from ssm_spark.point.climatology import EarthEngineClimatology, find_climatology, needs_climatology
from ssm_spark.point.errors import (MaskedCellError, NoAcquisitionError, OutsideCoverageError, PointError,
                                    check_latlon, parse_date)
from ssm_spark.point.sources import EarthEngineSource, PointSource, ProductSource, StackSource
from ssm_spark.point.store import Listings, store_scope

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config
    from ssm_spark.models.registry import Registry

log = logging.getLogger(__name__)

__all__ = ["PointService", "MAX_SERIES_DAYS", "folder_scrubber"]

#: Longest series one call answers (days between start and end, inclusive).
MAX_SERIES_DAYS = 400
_MASK_FLAGS = ("FROZEN", "STEEP_SLOPE")


def _num(v: Any) -> float | None:
    if v is None:
        return None
    f = float(v)
    return f if math.isfinite(f) else None


class _Recorder:
    """The registry as :func:`predict_rows` sees it, keeping the frame :meth:`Registry.predict`
    returned (its physics features), so an answer shows the features it used without computing
    them twice."""

    def __init__(self, registry: "Registry") -> None:
        self.registry = registry
        self.last: pd.DataFrame | None = None

    def predict(self, df: pd.DataFrame, **kw: Any) -> pd.DataFrame:
        self.last = self.registry.predict(df, **kw)
        return self.last


class PointService:
    """Point and series answers from a registry (loaded once) and one source.

    Parameters
    ----------
    cfg : Config
        ``grid`` and ``ingest`` sections (as for ``produce``); ``earthengine`` for ``source="ee"``.
    models : path-like, URL or Registry
        Model registry folder (``ssm-spark train``; a URL: its published version, a cached copy), or
        an open :class:`Registry`.
    stacks : path-like or URL, optional
        Feature-stack folder (the default source); on a store (``s3://bucket/stacks``) read in place
        through GDAL's ``/vsis3/`` paths (:mod:`ssm_spark.point.store`, docs/object_storage.md).
    static : path-like or URL, optional
        Static layers (default: ``static/`` beside ``stacks``).
    product : path-like or URL, optional
        An existing product folder or URL, used instead of stacks for the dates it has committed.
    source : str, optional
        ``"ee"`` (Earth Engine), or a path or URL: a product (has ``parquet/`` or ``product.json``)
        or a stacks folder. Overrides ``stacks``/``product``.
    cache_files : int, default 256
        Stack files kept open (:class:`~ssm_spark.point.cells.OpenFiles`; their decoded blocks
        stay in GDAL's block cache); 0: open and close them at every read.
    ee_client : optional
        The Earth Engine client for ``source="ee"`` (tests inject a recorded-response fake).
    climatology : path-like, optional
        For a registry with change detection and local stacks: the climatology folder ``produce``
        built (``OUTPUT/climatology``; default: the product's, else ``produce.climatology_dir``).
        With ``source="ee"`` and no ``climatology``, each cell's climatology comes from its Earth
        Engine series (:class:`~ssm_spark.point.climatology.EarthEngineClimatology`).

    Raises
    ------
    ModelRegistryError, InputError, ConfigError
    """

    def __init__(self, cfg: "Config", models: Any, stacks: str | os.PathLike | None = None, *,
                 static: str | os.PathLike | None = None, product: str | os.PathLike | None = None,
                 source: str | None = None, cache_files: int = 256, ee_client: Any = None,
                 climatology: str | os.PathLike | None = None) -> None:
        from ssm_spark import storage
        from ssm_spark.models.registry import Registry, load_registry

        t0 = time.perf_counter()
        # stacks and products on a store are read in place (point.store); registry and climatology: a cached copy
        if not isinstance(models, Registry) and storage.is_remote(models):  # published by train
            models = storage.local_copy(models, "model registry")
        self.cfg = cfg
        self.grid = cfg.grid.build()
        self.registry: Registry = models if isinstance(models, Registry) else load_registry(models)
        self.registry.warm()
        if source is not None:
            if source == "ee":
                stacks, product = None, None
            elif storage.is_remote(source):
                top = Listings(0).get(storage.url_of(source))
                if "product.json" in top or top.get("parquet", (False,))[0]:
                    stacks, product = None, source
                else:
                    stacks, product = source, None
            else:
                p = Path(source)
                if (p / "product.json").is_file() or (p / "parquet").is_dir():
                    stacks, product = None, p
                else:
                    stacks, product = p, None
        self.stacks: PointSource | None = None
        if source == "ee":
            self.stacks = EarthEngineSource(cfg, self.grid, ee_client)
        elif stacks is not None:
            self.stacks = StackSource(stacks, self.grid, static, cfg.ingest.band_aliases, cfg.ingest.max_slope_deg,
                                      open_files=cache_files)
        self.product = ProductSource(product, self.grid) if product is not None else None
        if self.stacks is None and self.product is None:
            raise InputError("point: give a source (--stacks PATH, --product PATH or --source ee|PATH)")
        self.climatology = None
        if self.stacks is not None and needs_climatology(cfg, self.registry):
            if isinstance(self.stacks, EarthEngineSource) and climatology is None:  # the cell's own EE series
                self.climatology = EarthEngineClimatology(
                    cfg, self.grid, self.stacks.client,
                    trained=(self.registry.manifest.get("training_data") or {}).get("date_range"))
            else:
                places = [climatology, product and _child(product, "climatology"), cfg.produce.climatology_dir]
                tried: list[str] = []
                local = [_local_climatology(cfg, self.grid, p, tried) for p in places]
                try:
                    self.climatology = find_climatology(cfg, self.grid, self.registry, local)
                except InputError as exc:
                    if not tried:
                        raise
                    raise InputError(f"{exc}; on the store, nothing published at {', '.join(tried)}") from None
        self.remote = any(getattr(s, "remote", False) for s in (self.stacks, self.product))
        self.load_seconds = time.perf_counter() - t0

    def _scope(self):
        """GDAL's settings and shared filesystems for reads on a store (:func:`~ssm_spark.point.store.store_scope`)
        around a query."""
        return store_scope() if self.remote else contextlib.nullcontext()

    # -- information
    def health(self) -> dict:
        srcs = [s.name for s in (self.stacks, self.product) if s is not None]
        return {"status": "ok", "manifest_id": self.registry.manifest_id, "grid": self.grid.name,
                "sources": srcs, "dates": len(self.dates()), "load_seconds": round(self.load_seconds, 3)}

    def dates(self) -> list[str]:
        out: set[str] = set()
        for s in (self.stacks, self.product):
            if s is not None:
                out.update(s.dates())
        return sorted(out)

    def cell(self, lat: Any, lon: Any) -> tuple[int, int, float, float]:
        """(row, col, lat, lon) of a point, or :class:`OutsideCoverageError` outside the grid."""
        la, lo = check_latlon(lat, lon)
        try:
            r, c = self.grid.to_cell(lo, la)
        except GridError as exc:
            raise OutsideCoverageError(f"lat {la}, lon {lo} is outside grid {self.grid.name} ({exc})") from exc
        return int(r), int(c), la, lo

    # -- answers
    def _predict(self, px: pd.DataFrame) -> tuple[list[dict], list[dict]]:
        """Product rows and features (raw inputs, coupled physics) of pixel rows: produce's
        climatology attach and ``predict_rows``, one call for all rows."""
        from ssm_spark.models import candidates
        from ssm_spark.product.tiles import predict_rows
        from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, STATIC_BANDS

        if self.climatology is not None:  # as produce's read_clipped: the cells' change-detection climatology
            px = self.climatology.attach(px)
        rec = _Recorder(self.registry)
        rows = predict_rows(px, rec).to_dict("records")
        phys = rec.last
        cols = {b: px[b].to_numpy() for b in DYNAMIC_BANDS + STATIC_BANDS if b in px}
        cls = {b: px[b].to_numpy() for b in CLASS_BANDS if b in px}
        cols.update({c: phys[c].to_numpy() for c in candidates.PHYSICS_FEATURES if c in phys})
        feats = []
        for i in range(len(rows)):
            f = {b: _num(a[i]) for b, a in cols.items() if b in DYNAMIC_BANDS + STATIC_BANDS}
            f.update({b: int(a[i]) for b, a in cls.items()})
            f.update({b: _num(a[i]) for b, a in cols.items() if b not in f})
            feats.append(f)
        return rows, feats

    def _answer(self, pr: dict, lat: float, lon: float, date: str, source: str, where: str,
                features: dict | None, t0: float) -> dict:
        qc = int(pr["qc"])
        mid = pr.get("model_id")
        parts = mid.split("/") if isinstance(mid, str) else []
        lon_c, lat_c = self.grid.to_lonlat(int(pr["row"]), int(pr["col"]))
        return {
            "lat": lat, "lon": lon, "date": date,
            "ssm": _num(pr["ssm"]), "ssm_p05": _num(pr["ssm_p05"]), "ssm_p95": _num(pr["ssm_p95"]),
            "units": "m3/m3", "qc": qc, "qc_flags": describe_qc(qc), "masked": bool(qc & MASK_BITS),
            "env": pr.get("env"), "unit": parts[1] if len(parts) == 3 else None,
            "candidate": parts[2] if len(parts) == 3 else None, "model_id": mid,
            "manifest_id": self.registry.manifest_id,
            "cell": {"grid": self.grid.name, "row": int(pr["row"]), "col": int(pr["col"]),
                     "tile_row": int(pr["tile_row"]), "tile_col": int(pr["tile_col"]),
                     "lon": round(float(lon_c), 7), "lat": round(float(lat_c), 7)},
            "features": features, "source": source, "file": where,
            "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3),
        }

    def _from_product(self, day: str) -> bool:
        return self.product is not None and (self.stacks is None or day in self.product.dates())

    def point(self, lat: Any, lon: Any, date: Any, *, strict: bool = True) -> dict:
        """SSM at a point on a date (see the module docstring for the code path).

        Parameters
        ----------
        lat, lon : float
            Degrees (WGS84).
        date : str or date
            ``YYYY-MM-DD``.
        strict : bool, default True
            Raise :class:`MaskedCellError` when the cell has no estimate; False: return the answer
            with null estimates and the QC bits.

        Returns
        -------
        dict
            ``ssm, ssm_p05, ssm_p95`` (m3/m3), ``qc`` and ``qc_flags``, ``env``, ``candidate``,
            ``model_id``, ``manifest_id``, ``cell`` (grid, row, col, tile, centre), ``features`` (raw
            inputs and coupled physics; null from a product), ``source``, ``file``, ``elapsed_ms``.

        Raises
        ------
        PointError
            Bad parameters; :class:`OutsideCoverageError`, :class:`NoAcquisitionError`,
            :class:`MaskedCellError`.
        """
        with self._scope():
            return self._point(lat, lon, date, strict)

    def _point(self, lat: Any, lon: Any, date: Any, strict: bool) -> dict:
        t0 = time.perf_counter()
        day = parse_date(date).isoformat()
        row, col, la, lo = self.cell(lat, lon)
        if self._from_product(day):
            pr, where = self.product.row(row, col, day)
            ans = self._answer(pr, la, lo, day, "product", where, None, t0)
        else:
            px, where = self.stacks.pixel(row, col, day)
            if len(px) == 0:
                near = self._nearest_with_data(row, col, day)
                raise NoAcquisitionError(f"no acquisition at lat {la}, lon {lo} (cell row {row}, col {col}) on {day}: "
                                         f"no backscatter there in {where}; nearest dates with one: "
                                         f"{', '.join(near) if near else 'none found'}", nearest=near, date=day)
            rows, feats = self._predict(px)
            ans = self._answer(rows[0], la, lo, day, self.stacks.name, where, feats[0], t0)
        if strict and ans["ssm"] is None:
            flags = ans["qc_flags"]
            masks = [f for f in flags if f.startswith("MASKED") or f in _MASK_FLAGS]
            why = (f"masked: QC {ans['qc']} = {' | '.join(masks)}" if masks else
                   f"no estimate from {ans['model_id'] or 'the served model'}: QC {ans['qc']} = "
                   f"{' | '.join(flags) or 'no bit set'}")
            raise MaskedCellError(f"lat {la}, lon {lo} (cell row {row}, col {col}, env {ans['env']}) on {day}: {why}",
                                  result=ans, date=day)
        return ans

    def _nearest_with_data(self, row: int, col: int, day: str, k: int = 2, tries: int = 8) -> list[str]:
        """The nearest dates (up to ``k`` each side, looking at most ``tries`` dates away) with backscatter
        at the cell."""
        dates = [d for d in self.dates() if d != day]
        i = bisect.bisect_left(dates, day)
        found: list[str] = []
        for side in (range(i - 1, max(-1, i - 1 - tries), -1), range(i, min(len(dates), i + tries))):
            n = 0
            for j in side:
                try:
                    px, _ = self.stacks.pixel(row, col, dates[j])
                except PointError:
                    continue
                if len(px):
                    found.append(dates[j])
                    n += 1
                    if n == k:
                        break
        return sorted(found)

    def series(self, lat: Any, lon: Any, start: Any, end: Any, *, max_days: int = MAX_SERIES_DAYS) -> dict:
        """Every date with data between ``start`` and ``end`` (inclusive) at a point.

        Returns
        -------
        dict
            ``points``: answers (as :meth:`point`, masked dates included with null estimates and
            their QC), ``skipped``: ``{date, reason}`` of dates without an acquisition at the cell.

        Raises
        ------
        PointError
            Bad parameters, ``end`` before ``start``, a range longer than ``max_days``, a point
            outside the grid.
        """
        with self._scope():
            return self._series(lat, lon, start, end, max_days)

    def _series(self, lat: Any, lon: Any, start: Any, end: Any, max_days: int) -> dict:
        t0 = time.perf_counter()
        d0, d1 = parse_date(start, "start"), parse_date(end, "end")
        if d1 < d0:
            raise PointError(f"end {d1} is before start {d0}")
        if (d1 - d0).days + 1 > max_days:
            raise PointError(f"start {d0} .. end {d1} spans {(d1 - d0).days + 1} days; at most {max_days} per series")
        row, col, la, lo = self.cell(lat, lon)
        if isinstance(self.stacks, EarthEngineSource):
            days = [(d0 + dt.timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)]
        else:
            days = [d for d in self.dates() if d0.isoformat() <= d <= d1.isoformat()]
        points, skipped = [], []
        from_stacks = []
        for d in days:
            if not self._from_product(d):
                from_stacks.append(d)
                continue
            try:
                pr, where = self.product.row(row, col, d)
            except (NoAcquisitionError, OutsideCoverageError) as exc:
                skipped.append({"date": d, "reason": str(exc).split(";")[0]})
                continue
            points.append(self._answer(pr, la, lo, d, "product", where, None, t0))
        if from_stacks:
            px, info = self.stacks.pixels(row, col, from_stacks)
            with_row = [(d, where) for d, where, why in info if why is None]
            skipped += [{"date": d, "reason": why} for d, _, why in info if why is not None]
            if len(px):  # one predict_rows call for every date
                rows, feats = self._predict(px)
                for (d, where), pr, f in zip(with_row, rows, feats):
                    points.append(self._answer(pr, la, lo, d, self.stacks.name, where, f, t0))
        points.sort(key=lambda a: a["date"])
        skipped.sort(key=lambda s: s["date"])
        return {"lat": la, "lon": lo, "start": d0.isoformat(), "end": d1.isoformat(),
                "cell": {"grid": self.grid.name, "row": row, "col": col}, "manifest_id": self.registry.manifest_id,
                "n": len(points), "points": points, "skipped": skipped,
                "elapsed_ms": round((time.perf_counter() - t0) * 1000, 3)}


def _child(folder: str | os.PathLike, name: str) -> str | Path:
    from ssm_spark import storage

    return f"{str(folder).rstrip('/')}/{name}" if storage.is_remote(folder) else Path(folder) / name


def _local_climatology(cfg: "Config", grid: Any, place: Any, tried: list[str]) -> Any:
    """A climatology place as :func:`find_climatology` takes it: a URL (``DIR`` or ``DIR/<key>``, published
    by produce) becomes the cached local copy of its ``<key>/`` (None when nothing is published there)."""
    from ssm_spark import storage
    from ssm_spark.product.climatology import climatology_key

    if not place or not storage.is_remote(place):
        return place
    url, key = storage.url_of(str(place)).rstrip("/"), climatology_key(cfg, grid)
    for cand in ((url, url) if url.endswith(f"/{key}") else (f"{url}/{key}",)):
        try:
            return storage.local_copy(cand, "change-detection climatology")
        except InputError as exc:
            log.info("point: no climatology at %s (%s)", cand, exc)
            tried.append(cand)
    return None


def _store_forms(root: str) -> list[str]:
    """The ways a URL on a store can appear in a message: the URL, GDAL's path, the bucket/key path."""
    from ssm_spark import storage

    return [root, storage.gdal_path(root), storage.fs_path(root)]


def folder_scrubber(service: "PointService | None", product: str | os.PathLike | None = None) -> Callable[[str], str]:
    """A function replacing the server's folders (the service's stacks and product, ``product``) by
    ``<stacks>`` / ``<product>`` in an answer's text: the client is not told where the files live. A
    folder on a store is replaced in each of its forms (URL, ``/vsis3/`` path, ``bucket/key``), and
    the store's keys in the environment (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
    ``AWS_SESSION_TOKEN``) by ``<credentials>`` should a message ever carry one."""
    from ssm_spark import storage

    roots: list[tuple[str, str]] = []
    for src in (getattr(service, "stacks", None), getattr(service, "product", None)):
        if src is not None and hasattr(src, "root"):
            if getattr(src, "remote", False):
                roots += [(f, f"<{src.name}>") for f in _store_forms(str(src.root))]
                if src.name == "product" and str(src.root).endswith("/parquet"):
                    roots += [(f, "<product>") for f in _store_forms(str(src.root)[:-len("/parquet")])]
            else:
                roots += [(str(Path(src.root).resolve()), f"<{src.name}>"), (str(src.root), f"<{src.name}>")]
    if product is not None:
        if storage.is_remote(product):
            roots += [(f, "<product>") for f in _store_forms(storage.url_of(str(product)).rstrip("/"))]
        else:
            roots += [(str(Path(product).resolve()), "<product>"), (str(product), "<product>")]
    roots += [(v, "<credentials>") for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")
              if len(v := os.environ.get(k) or "") >= 8]
    roots.sort(key=lambda kv: -len(kv[0]))

    def scrub(text: str) -> str:
        for path, name in roots:
            text = text.replace(path, name)
        return text

    return scrub
