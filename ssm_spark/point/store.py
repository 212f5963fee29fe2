"""Point queries on object storage: listings kept a short while, GDAL's settings, one ranged read per tile row.

A point on stacks or a product on a store (``s3://``, and by the same code ``gs://``, ``abfss://``)
reads in place, never a download:

- :class:`Listings`: a folder's listing (names, folders, each object's size and ETag) kept
  :data:`LIST_TTL_S` seconds, so a warm point costs no LIST; a miss (a date or file not in the
  listing) lists again at most once a second. The (size, ETag) pair is the stamp by which an open
  dataset is known to be the object's current version (:class:`~ssm_spark.point.cells.OpenFiles`).
- :func:`gdal_scope`: GDAL's settings for reading rasters on a store with few requests
  (:data:`GDAL_OPTIONS`), each set only where the user has not set it (environment variable or
  GDAL configuration), for as long as a query of a service on a store runs.
- :func:`read_cell_row`: the row of one cell from a product tile file on the store with pyarrow
  over fsspec: the size known from the date's marker (no HEAD), the footer once per tile version
  (kept), the row groups whose ``row``/``col`` statistics can hold the cell, each read in one
  ranged GET of its column chunks.

Errors of the store (a missing bucket, credentials refused, the endpoint unreachable) become
:class:`~ssm_spark.point.errors.StoreError` naming the URL and the likely cause.
"""

from __future__ import annotations

import collections
import contextlib
import io
import os
import posixpath
import threading
import time
from typing import Any, Iterator

from ssm_spark import storage
from ssm_spark.point.errors import StoreError

__all__ = ["LIST_TTL_S", "GDAL_OPTIONS", "Listings", "gdal_scope", "store_scope", "store_error", "read_cell_row"]

#: Seconds a folder's listing on a store is trusted by default (``SSM_POINT_LIST_TTL_S`` overrides; 0: list
#: at every query).
LIST_TTL_S = 30.0
TTL_ENV = "SSM_POINT_LIST_TTL_S"


def list_ttl() -> float:
    """``SSM_POINT_LIST_TTL_S`` (default :data:`LIST_TTL_S`); a value that is not a number >= 0 is refused by name."""
    raw = os.environ.get(TTL_ENV)
    if raw in (None, ""):
        return LIST_TTL_S
    try:
        ttl = float(raw)
    except ValueError:
        ttl = -1.0
    if not 0 <= ttl < float("inf"):
        from ssm_spark.errors import ConfigError

        raise ConfigError(f"{TTL_ENV}={raw!r}: expected the seconds a store's folder listing is kept (a number >= 0)")
    return ttl
#: A miss (a date or file absent from a listing) lists again, but not more often than this.
MISS_RELIST_S = 1.0

#: GDAL settings for a point on a store (set only where the user has not set them):
#: no listing of the object's "folder" at open (a LIST per file otherwise), only raster names tried
#: (no sidecar probes: ``.aux.xml``, ``.ovr``, ``.msk``), a per-dataset cache of the bytes read
#: (headers and blocks of a kept dataset are read once), several ranges in one request and
#: consecutive ranges merged, and no process-wide cache of object bytes (``CPL_VSIL_CURL_NON_CACHED``:
#: a rewritten object re-opened must not be served the old one's bytes; kept datasets keep theirs in
#: their own cache and GDAL's block cache).
GDAL_OPTIONS = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff",
                "VSI_CACHE": "TRUE", "GDAL_HTTP_MULTIRANGE": "YES", "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
                "CPL_VSIL_CURL_NON_CACHED": "/vsis3/:/vsigs/:/vsiadls/:/vsiaz/"}

_scope_lock = threading.Lock()
_scope_depth = 0
_scope_set: list[str] = []


@contextlib.contextmanager
def store_scope() -> Iterator[dict[str, str]]:
    """What a query on a store runs in: :func:`gdal_scope` and :func:`ssm_spark.storage.shared_filesystems`
    (the stack checks' listings and lookups on one filesystem instance, not a new one each)."""
    with storage.shared_filesystems(), gdal_scope() as opts:
        yield opts


@contextlib.contextmanager
def gdal_scope() -> Iterator[dict[str, str]]:
    """:data:`GDAL_OPTIONS` in GDAL's configuration while any query on a store runs; yields those set.

    Why not ``rasterio.Env`` per query: GDAL's configuration is process-wide while rasterio's
    bookkeeping of it is per thread, so one handler thread leaving its ``Env`` would clear the
    settings under another one still reading. Here the first query in sets them (only those neither
    in the environment nor in GDAL's configuration already), the last one out removes them.
    """
    global _scope_depth
    from rasterio._env import del_gdal_config, get_gdal_config, set_gdal_config

    with _scope_lock:
        if _scope_depth == 0:
            _scope_set[:] = []
            for k, v in GDAL_OPTIONS.items():
                if k not in os.environ and get_gdal_config(k, normalize=False) is None:
                    set_gdal_config(k, v, normalize=False)
                    _scope_set.append(k)
        _scope_depth += 1
        mine = {k: GDAL_OPTIONS[k] for k in _scope_set}
    try:
        yield mine
    finally:
        with _scope_lock:
            _scope_depth -= 1
            if _scope_depth == 0:
                for k in _scope_set:
                    del_gdal_config(k)
                _scope_set[:] = []


def store_error(url: str, what: str, exc: BaseException) -> StoreError:
    """A store's failure as :class:`StoreError`: the URL, what was being done, the cause, the likely fix."""
    status = getattr(exc, "errno", None)
    text = f"{type(exc).__name__}: {exc}"
    if isinstance(exc, PermissionError) or "403" in text or "AccessDenied" in text or "signature" in text.lower():
        hint = f"the store refused the credentials (403): {storage.credentials_hint(url)}, and that they may read it"
    elif isinstance(exc, FileNotFoundError) or status == 2 or "NoSuchBucket" in text or "does not exist" in text:
        hint = "no such bucket or key: check the URL's bucket and prefix"
    else:
        hint = storage.credentials_hint(url)
    return StoreError(f"{url}: cannot {what} ({text}); {hint}")


class Listings:
    """Listings of folders on a store (GDAL virtual paths ``/vsis3/b/k`` or URLs), each kept ``ttl`` seconds.

    ``get(folder)`` -> ``{name: (is_folder, stamp)}`` with ``stamp`` = (size, ETag) of an object
    (``LastModified`` where a store gives no ETag). ``lists`` counts the LIST calls made (tests).
    """

    def __init__(self, ttl: float | None = None) -> None:
        self.ttl = list_ttl() if ttl is None else float(ttl)
        self._fs: dict[str, Any] = {}
        self._cache: dict[str, tuple[float, dict[str, tuple[bool, tuple]]]] = {}
        self._lock = threading.Lock()
        self.lists = 0

    def get(self, folder: str, max_age: float | None = None) -> dict[str, tuple[bool, tuple]]:
        """The folder's entries, listed again when older than ``max_age`` (default ``ttl``); ``{}``:
        nothing under it. Raises :class:`StoreError` when the store refuses the listing."""
        key = str(folder).rstrip("/")
        age = self.ttl if max_age is None else max_age
        with self._lock:
            got = self._cache.get(key)
        if got is not None and time.monotonic() - got[0] <= age:
            return got[1]
        url = storage.url_of(key)
        fs = self.fs(url)
        root = storage.fs_path(url)
        try:
            entries = fs.ls(root, detail=True)
        except FileNotFoundError:
            entries = []
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
            raise store_error(url, "list it", exc) from exc
        out: dict[str, tuple[bool, tuple]] = {}
        for e in entries:
            name = e["name"].rstrip("/")
            if name == root:
                continue
            is_dir = e.get("type") == "directory"
            tag = e.get("ETag") or e.get("etag") or str(e.get("LastModified") or e.get("mtime") or "")
            out[posixpath.basename(name)] = (is_dir, (0, "") if is_dir else (int(e.get("size") or 0), str(tag)))
        with self._lock:
            self._cache[key] = (time.monotonic(), out)
            self.lists += 1
        return out

    def fs(self, url: str) -> Any:
        """The source's own filesystem of ``url``'s scheme, made once (a new one costs ~150 ms: botocore's client)."""
        scheme = url.split("://", 1)[0]
        with self._lock:
            fs = self._fs.get(scheme)
            if fs is None:
                fs = self._fs[scheme] = storage.filesystem(url)
            return fs

    def age(self, folder: str) -> float:
        """Seconds since ``folder`` was last listed (infinite: never)."""
        with self._lock:
            got = self._cache.get(str(folder).rstrip("/"))
        return float("inf") if got is None else time.monotonic() - got[0]

    def stamp(self, path: str) -> tuple:
        """(size, ETag) of an object from its folder's listing; FileNotFoundError when the listing has none."""
        folder, name = posixpath.split(str(path))
        got = self.get(folder).get(name)
        if got is None or got[0]:
            raise FileNotFoundError(path)
        return got[1]

    def forget(self, folder: str) -> None:
        """Drop a folder's listing (a read failed: the next query lists it anew)."""
        with self._lock:
            self._cache.pop(str(folder).rstrip("/"), None)


class _Footers:
    """Parquet footers (FileMetaData) of product tiles, by (key, size, ETag-like version), at most ``size``."""

    def __init__(self, size: int = 512) -> None:
        self.size = size
        self._d: "collections.OrderedDict[tuple, Any]" = collections.OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> Any:
        with self._lock:
            md = self._d.get(key)
            if md is not None:
                self._d.move_to_end(key)
            return md

    def put(self, key: tuple, md: Any) -> None:
        with self._lock:
            self._d[key] = md
            while len(self._d) > self.size:
                self._d.popitem(last=False)


FOOTERS = _Footers()


def _may_hold(rg: Any, names: list[str], row: int, col: int) -> bool:
    """Whether a row group's ``row``/``col`` statistics allow the cell (no statistics: it may)."""
    for name, v in (("row", row), ("col", col)):
        if name not in names:
            continue
        st = rg.column(names.index(name)).statistics
        if st is not None and st.has_min_max and not (st.min <= v <= st.max):
            return False
    return True


class _Ranges(io.RawIOBase):
    """A read-only file of an object that GETs exactly the ranges asked (one request per read that
    no earlier range holds), keeping them: pyarrow's footer read (the last 64 KiB) then serves a small
    tile's row groups too. (fsspec's caches either read ahead, trim what they hold, or fetch block by
    block.)"""

    def __init__(self, fs: Any, key: str, size: int) -> None:
        super().__init__()
        self.fs, self.key, self.size, self.pos = fs, key, int(size), 0
        self.parts: list[tuple[int, bytes]] = []
        self.requests = self.fetched = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = 0) -> int:
        self.pos = {0: 0, 1: self.pos, 2: self.size}[whence] + int(offset)
        return self.pos

    def readinto(self, buf: Any) -> int:
        start, end = self.pos, min(self.size, self.pos + len(buf))
        if end <= start:
            return 0
        for p0, data in self.parts:
            if p0 <= start and end <= p0 + len(data):
                chunk = data[start - p0:end - p0]
                break
        else:
            chunk = self.fs.cat_file(self.key, start=start, end=end)
            self.requests += 1
            self.fetched += len(chunk)
            self.parts.append((start, chunk))
        buf[:len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def read_cell_row(fs: Any, url: str, size: int | None, version: str, row: int, col: int,
                  counters: dict | None = None) -> dict | None:
    """The first row of cell (``row``, ``col``) in the Parquet tile at ``url`` (``fs``: its fsspec
    filesystem), as a dict (None: no such row).

    ``size`` (the marker's, saving a HEAD) and ``version`` (what changes when the tile is rewritten:
    the marker's digest) key the kept footer. Row groups whose statistics exclude the cell are not
    read; each other one is one ranged read of its column chunks (pyarrow's pre-buffering coalesces
    them; :class:`_Ranges` GETs what pyarrow asks, nothing more). ``counters`` gets ``requests`` and
    ``bytes`` added (tests, benchmarks).

    Raises
    ------
    StoreError
        The store refused or failed the reads.
    """
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    key = storage.fs_path(url)
    fkey = (url, size, version)
    try:
        if size is None:
            size = int(fs.info(key)["size"])
        fh = _Ranges(fs, key, size)
        md = FOOTERS.get(fkey)
        pf = pq.ParquetFile(fh, metadata=md, pre_buffer=True)
        if md is None:
            FOOTERS.put(fkey, pf.metadata)
        md = pf.metadata
        names = [md.schema.column(i).name for i in range(md.num_columns)]
        found = None
        for i in range(md.num_row_groups):
            if not _may_hold(md.row_group(i), names, row, col):
                continue
            t = pf.read_row_group(i)
            hit = t.filter(pc.and_(pc.equal(t["row"], int(row)), pc.equal(t["col"], int(col))))
            if hit.num_rows:
                found = hit.slice(0, 1).to_pylist()[0]
                break
        if counters is not None:
            counters["requests"] = counters.get("requests", 0) + fh.requests
            counters["bytes"] = counters.get("bytes", 0) + fh.fetched
        return found
    except FileNotFoundError as exc:
        raise store_error(url, "read it (listed by its date's marker, but missing: the date is being "
                          "published again?)", exc) from exc
    except Exception as exc:  # noqa: BLE001 - botocore's / pyarrow's errors, named in ours
        raise store_error(url, "read the cell's row", exc) from exc
