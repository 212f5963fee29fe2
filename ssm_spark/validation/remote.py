"""A product on an object store, read for validation: only its committed dates, checked, cached.

``ssm-spark produce --output s3://...`` publishes a date's objects first and its marker
``parquet/date=<date>/_SUCCESS.json`` last (docs/commit.md, section 8), so a date is complete on the
store exactly when that marker exists. :func:`committed_product` copies the Parquet files of the
committed dates, and only those, into a local folder laid out as a local product
(``parquet/date=<date>/*.parquet`` with each date's ``_SUCCESS.json``), which Spark
(``validate``) and :func:`ssm_spark.validation.truth.product_vs_truth` read as they read a local
product:

1. the Parquet dataset is listed once (``<product>/parquet/``; the URL may name the product folder
   or its ``parquet/`` folder); the dates with a marker are the committed ones, objects of a date
   without one (a run publishing it, or killed part-way) are never read;
2. each committed date's marker is read; the files it lists under the date's partition
   (``outputs``: relative key -> size) are the date's files. With ``tiles``, only the tile files
   ``<grid>_<tile_row>_<tile_col>.parquet`` of those tiles (the stations' tiles: a validation needs
   nothing else), files of another name kept;
3. each file is downloaded and its size checked against the marker; after the last one every marker
   is read again and must be unchanged: a date republished meanwhile (its marker deleted or
   replaced) is refused by name (:class:`~ssm_spark.errors.InputIOError`: retry), never mixed;
4. the copy is kept in the cache of published copies (:mod:`ssm_spark.cache`, ``SSM_CACHE_DIR``)
   in a folder keyed by the URL, the markers' bytes and the tiles, so validating an unchanged product
   again downloads nothing, and a date committed or replaced since gives a new copy; it is held while
   the process runs and pruned as the cache's other copies are (``SSM_CACHE_KEEP`` versions per URL).

:func:`product_parquet` (what ``validate --product URL`` reads) reads a URL without any date
partition as a published output instead (``_PUBLISHED.json``, or a single Parquet object:
:func:`ssm_spark.storage.local_copy`), e.g. a user's own estimates published with
``storage.publish``. Credentials: the environment's (:mod:`ssm_spark.storage`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import posixpath
import re
import shutil
import tempfile
from pathlib import Path
from typing import Iterable

from ssm_spark import cache, storage
from ssm_spark.errors import InputError, InputIOError

log = logging.getLogger(__name__)

__all__ = ["MARKER", "committed_product", "product_parquet", "dataset_url"]

MARKER = "_SUCCESS.json"
_DATE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})/")


def dataset_url(url: str) -> tuple[str, dict[str, dict]]:
    """The URL of a product's Parquet dataset (``url`` itself or ``url/parquet``) and its listing
    (key relative to the dataset -> the store's info); ``{}`` when neither holds a date partition."""
    url = storage.url_of(str(url)).rstrip("/")
    fs = storage.filesystem(url)
    for cand in (f"{url}/parquet", url) if posixpath.basename(url) != "parquet" else (url,):
        root = storage.fs_path(cand)
        try:
            found = fs.find(root, detail=True)
        except FileNotFoundError:
            found = {}
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
            raise storage.io_error(cand, "list it", exc) from exc
        n = len(root) + 1
        listing = {k[n:]: v for k, v in found.items() if v.get("type", "file") != "directory"}
        if any(_DATE.match(k) for k in listing):
            return cand, listing
    return url, {}


def _tile_names(grid_name: str | None, tiles: Iterable[tuple[int, int]] | None) -> set[str] | None:
    if tiles is None or grid_name is None:
        return None
    return {f"{grid_name}_{int(tr)}_{int(tc)}.parquet" for tr, tc in tiles}


def committed_product(url: str, dest: str | os.PathLike | None = None, *,
                      tiles: Iterable[tuple[int, int]] | None = None, grid_name: str | None = None) -> Path:
    """A local copy of the committed dates of the product at ``url`` (see the module docstring).

    Parameters
    ----------
    url : str
        ``s3://bucket/prefix/product`` or ``.../product/parquet`` (``gs://``, ``abfss://``); a local
        path is returned as it is.
    dest : path-like, optional
        Where to put the copy (its product folder; replaced). Default: a folder in the cache
        (:func:`ssm_spark.cache.cache_dir`) keyed by what was read, reused when it exists.
    tiles, grid_name : optional
        Only the files of these ``(tile_row, tile_col)`` tiles of the grid named ``grid_name``.

    Returns
    -------
    Path
        The local product folder: read ``<it>/parquet`` (a Parquet dataset partitioned by ``date``).

    Raises
    ------
    InputError
        No date partition there (not a product), or partitions but no committed date.
    InputIOError
        A file missing or not of the marker's size, a date republished while it was read, the
        store's errors (each named with the URL).
    """
    if not storage.is_remote(url):
        return Path(url)
    data_url, listing = dataset_url(url)
    if not listing:
        raise InputError(f"{storage.url_of(str(url)).rstrip('/')}: not a product on the store (no date=YYYY-MM-DD/ "
                         "partition under it or under its parquet/)")
    return _committed(data_url, listing, dest, tiles, grid_name)


def product_parquet(url: str, *, tiles: Iterable[tuple[int, int]] | None = None,
                    grid_name: str | None = None) -> Path:
    """The local Parquet dataset to read for the product (or estimates) at ``url``: the committed dates'
    copy (:func:`committed_product`, its ``parquet/``), or for a URL without date partitions a
    published output's copy (``_PUBLISHED.json`` or one object: :func:`ssm_spark.storage.local_copy`).
    A local path is returned as it is."""
    if not storage.is_remote(url):
        return Path(url)
    data_url, listing = dataset_url(url)
    if not listing:  # no date partitions: a published output (its marker), a single object, or nothing
        return storage.local_copy(url, "product")
    return _committed(data_url, listing, None, tiles, grid_name) / "parquet"


def _committed(data_url: str, listing: dict, dest, tiles, grid_name) -> Path:
    dates = sorted({m.group(1) for k in listing if (m := _DATE.match(k)) and k == f"date={m.group(1)}/{MARKER}"})
    if not dates:
        raise InputError(f"{data_url}: no committed date (no date=YYYY-MM-DD/{MARKER} marker; the partitions there "
                         "are a run still publishing its first date, or one killed before it): nothing to read")
    uncommitted = sorted({m.group(1) for k in listing if (m := _DATE.match(k))} - set(dates))
    if uncommitted:
        log.info("%s: %d date(s) without a marker left out (being published, or an interrupted run's): %s",
                 data_url, len(uncommitted), ", ".join(uncommitted[:5]) + (" ..." if len(uncommitted) > 5 else ""))
    fs = storage.filesystem(data_url)
    markers = _markers(fs, data_url, dates)
    wanted_names = _tile_names(grid_name, tiles)
    plan: dict[str, int] = {}  # key relative to the dataset -> size from the marker
    for d, raw in markers.items():
        if raw is None:
            raise InputIOError(f"{data_url}/date={d}/{MARKER}: vanished while the product was read (the date is "
                               "being published again): retry when that run is done")
        outputs = json.loads(raw).get("outputs")
        prefix = f"date={d}/"
        if outputs is None:  # a marker without its outputs: the partition's files as listed
            files = {k: int(v["size"]) for k, v in listing.items() if k.startswith(prefix) and k.endswith(".parquet")}
        else:
            files = {rel[len("parquet/"):]: int(size) for rel, size in outputs.items()
                     if rel.startswith(f"parquet/{prefix}") and rel.endswith(".parquet")}
        for k, size in files.items():
            name = posixpath.basename(k)
            if wanted_names is not None and re.match(rf"^{re.escape(grid_name)}_\d+_\d+\.parquet$", name) \
                    and name not in wanted_names:
                continue
            plan[k] = size
    if dest is None:
        h = hashlib.sha256(data_url.encode())
        for d in dates:
            h.update(b"\0" + d.encode() + b"\0" + markers[d])
        h.update(b"\0" + json.dumps(sorted(wanted_names) if wanted_names is not None else None).encode())
        final = cache.cache_dir() / h.hexdigest()[:16] / "product"
        cache.hold(final.parent)  # this process's shared lock: no pruner removes the copy while we run
        if final.exists():
            cache.touch(final.parent)
            log.info("%s: %d committed date(s), the copy in %s", data_url, len(dates), final)
            return final
    else:
        final = Path(dest)
        final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".product.", dir=final.parent))
    try:
        _download(fs, data_url, listing, plan, markers, tmp / "parquet")
        if dest is not None and final.exists():
            shutil.rmtree(final)
        try:
            os.replace(tmp, final)
        except OSError:
            if not final.exists():  # another process put the same copy in place first: theirs serves
                raise
        if dest is None:
            cache.record(final.parent, data_url, final.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if dest is None:
        try:  # a new version: this URL's older ones beyond SSM_CACHE_KEEP go (never one in use)
            cache.prune(url=data_url)
        except OSError as exc:
            log.warning("cache: pruning after fetching %s failed (%s); the copy serves, the old ones stay", data_url,
                        exc)
    log.info("%s: %d committed date(s), %d file(s) (%.1f MB) copied to %s", data_url, len(dates), len(plan),
             sum(plan.values()) / 1e6, final)
    return final


def _markers(fs, data_url: str, dates: list[str]) -> dict[str, bytes | None]:
    """Each date's marker (None when absent), read concurrently through one filesystem instance."""
    root = storage.fs_path(data_url)
    keys = {f"{root}/date={d}/{MARKER}": d for d in dates}
    try:
        got = fs.cat(list(keys), on_error="return")
    except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
        raise storage.io_error(data_url, "read its markers", exc) from exc
    out: dict[str, bytes | None] = {}
    for k, d in keys.items():
        v = got.get(k, FileNotFoundError(k))
        if isinstance(v, FileNotFoundError):
            out[d] = None
        elif isinstance(v, BaseException):
            raise storage.io_error(f"{data_url}/date={d}/{MARKER}", "read it", v) from v
        else:
            out[d] = v
    return out


def _download(fs, data_url: str, listing: dict, plan: dict[str, int], markers: dict[str, bytes], out: Path) -> None:
    """The planned files (concurrently), each of its marker's size, then every marker read again: unchanged."""
    root = storage.fs_path(data_url)
    again = "the date is being published again (retry when that run is done) or was damaged (produce it again)"
    for k, size in sorted(plan.items()):  # the listing first: a missing or resized file refused before any GET
        if k not in listing:
            raise InputIOError(f"{data_url}/{k}: listed by its date's {MARKER} but not on the store: {again}")
        if int(listing[k]["size"]) != size:
            raise InputIOError(f"{data_url}/{k}: {listing[k]['size']} bytes, its date's {MARKER} says {size}: {again}")
        (out / k).parent.mkdir(parents=True, exist_ok=True)
    keys = sorted(plan)
    if keys:
        try:
            fs.get([f"{root}/{k}" for k in keys], [str(out / k) for k in keys])
        except FileNotFoundError as exc:
            raise InputIOError(f"{data_url}: a file its marker lists is no longer on the store ({exc}): {again}") \
                from None
        except Exception as exc:  # noqa: BLE001
            raise storage.io_error(data_url, "read its files", exc) from exc
    for k in keys:
        size = (out / k).stat().st_size if (out / k).is_file() else None
        if size != plan[k]:
            raise InputIOError(f"{data_url}/{k}: {size} bytes, its date's {MARKER} says {plan[k]}: {again}")
    now = _markers(fs, data_url, sorted(markers))
    for d, raw in markers.items():  # every marker still the one the files were chosen by: no date mixed
        if now[d] != raw:
            raise InputIOError(f"{data_url}/date={d}/{MARKER}: changed while the product was read: {again}")
        p = out / f"date={d}" / MARKER
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(raw)
