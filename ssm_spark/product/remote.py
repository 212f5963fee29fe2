"""A product written to object storage (``s3://``, ``gs://``, ``abfss://``): tiles staged there, published by date.

An object store has no rename, so the local commit (:mod:`ssm_spark.product.commit`) cannot be
used on it, and on a cluster the executors cannot see the driver's disk. So the date's tiles are
staged **on the store**, under a prefix of the run: the executors write each tile's Parquet file
and COG into their own task's temporary folder and PUT them to
``<url>/_staging/<date>.<8 hex>/parquet/date=<date>/<tile>.parquet`` and
``.../cog/<date>/<tile>.tif`` (the local layout; the aggregates' coarse tiles likewise under
``.../agg/<grid>/``, aggregated by executors reading the staged fine tiles from the store),
with the store's filesystem and credentials of their own environment
(:func:`ssm_spark.storage.filesystem`; nothing of them in a task's closure). A PUT is atomic per
object, and a retried or speculative task PUTs the same bytes to the same key. The driver lists the
prefix once (checked against the keys and sizes the tasks' summaries report), writes the VRTs and
quicklooks into its local working folder (the quicklook read from a temporary VRT over the staged
COGs' ``/vsis3/`` paths), and commits the date there as a local product (its marker,
``product.json``, the STAC item: ``--staging-dir`` / ``SSM_STAGING_DIR``, default a temporary
folder; it never holds a tile). The date is then *published* (:meth:`RemoteOutput.publish`):

1. the date's remote marker ``parquet/date=<date>/_SUCCESS.json`` is deleted (readers and re-runs
   now take the date as not complete);
2. every staged object is copied server-side to its final key (one ``CopyObject`` each: no byte
   through the driver), and the driver's own files (VRTs, quicklooks) are PUT;
3. objects under the date's components that the new date does not have (leftovers of an older or
   interrupted run, grids no longer aggregated) are deleted;
4. the date's STAC item is PUT, then the marker last; then the staging prefix is deleted, and
   ``product.json`` and the other STAC files are PUT (:meth:`RemoteOutput.put_metadata`): what
   changed, the collection last, then the items of dates no longer committed deleted, so a reader
   following the collection's links finds every item, and the published catalogue holds exactly
   the committed dates. A date whose marker is gone (a re-run killed after step 1, a marker removed
   by hand) loses its item at the next run's :meth:`~RemoteOutput.pull`, which also relinks a date
   whose marker landed but whose collection and ``product.json`` did not (a kill between them),
   and corrects ``product.json``'s dates.

A date that fails (a tile out of the physical range, a lost object, an error while publishing)
has its staging prefix deleted and, before step 1, leaves the committed date on the store as it
was. A killed run's staging prefixes (``_staging/<date>.*``) are deleted when their date is next
produced or found complete: the run holds the product's lock, so any staging prefix it finds is a
dead run's. Readers never list ``_staging/``: they start from ``parquet/`` and the markers.

In local mode (``local[n]``) the executors are this machine's Python workers, started with the
Spark JVM's environment: where the store's settings (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``,
``STORAGE_EMULATOR_HOST``, ``AZURE_STORAGE_*``, GDAL's ``GS_*``) changed in the driver's environment
since (a notebook, the tests), they are set in the workers' environment (:func:`ssm_spark.spark.share_store_environment`,
``SparkContext.environment``, what ``spark.executorEnv.*`` sets), never logged. On a cluster the executors need them in their own
environment (``spark.executorEnv.*``, the cluster's configuration, an instance profile).

So on the store too a date is complete exactly when its marker exists. At the start of a run the
remote markers, ``product.json`` and the STAC files are fetched into the local folder
(:meth:`RemoteOutput.pull`), and resume is keyed on the remote marker: :func:`commit.is_complete`
checks the outputs it lists against the remote listing's sizes. A run killed before step 4 leaves a
date without a marker, which the next run recomputes; its objects are then replaced or removed in
steps 2-3. The local copy of a published date's own files is removed (its marker kept).

A run holds the product's lock, the object ``<url>/_LOCK.json`` (:class:`RemoteLock`: holder token,
job, host, pid, start, command), from before the pull until its end. It is created only if absent,
with an S3 conditional write (``PUT`` with ``If-None-Match: *``, refused with 412 when the object
exists; SeaweedFS's gateway and AWS S3 honour it); refreshed every ``HEARTBEAT_S`` by a ``PUT`` with
``If-Match: <its ETag>`` (so a holder whose lock was taken over finds out, and stops before it
publishes another object); released by a ``DELETE`` with ``If-Match``. A second run is refused
(:class:`~ssm_spark.errors.InputError`, exit 2) naming the holder and the lock's URL while the lock
is fresh; a lock whose holder is gone (its pid dead on this host) or not refreshed for
``SSM_LOCK_STALE_S`` (default 120 s, measured on the server's clock: its ``Date`` header minus the
object's ``Last-Modified``) is taken over with a warning, as is any lock with ``--break-lock``.

A server that does not honour ``If-None-Match`` (found out at the start of each run, by a probe
object written twice, the second time conditionally) and every ``gs://`` / ``abfss://`` URL get
*write-then-verify* instead: the lock is written only when a read finds none, read back after
``VERIFY_WAIT_S`` and held only if it still holds this run's token; its refresh and release check
the token first. A race remains there: a run that finds no lock and writes its own after the other
run verified (the read-then-write is not atomic) takes the lock from under it. The first run finds
out at its next check (before each date's first object and before its marker: it stops, exit 2,
without the marker), but objects it was PUTting at that moment can land among the second run's
objects of the same date. Both runs of one configuration and registry write the same bytes, so
only two different runs into one URL can leave such a date mixed. With conditional writes no such
race exists. Credentials: the environment's, never logged (:mod:`ssm_spark.storage`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ssm_spark import storage
from ssm_spark.io import write_json_atomic
from ssm_spark.product.commit import MARKER, components
from ssm_spark.product.files import LOCK
from ssm_spark.storage import RemoteLock  # noqa: F401 - the product's lock lives beside the store's other calls

log = logging.getLogger(__name__)

__all__ = ["RemoteOutput", "RemoteLock", "STAGING"]

_STAC = "stac"
#: The run's staging prefixes on the store: ``<url>/_staging/<date>.<8 hex>/`` (never read as product data).
STAGING = "_staging"
#: Server-side copies at once while a date is published.
COPY_THREADS = 8
@dataclass
class RemoteOutput:
    """The store side of a product run (see the module docstring)."""

    url: str  # the product's URL, e.g. s3://bucket/product
    local: Path  # the local working folder (a local product's layout)
    fs: Any = field(init=False, repr=False)
    root: str = field(init=False)
    sizes: dict[str, int] = field(init=False, default_factory=dict)  # rel -> size of every object under root
    digests: dict[str, str] = field(init=False, default_factory=dict)  # rel -> MD5 of the metadata objects known
    lock: "RemoteLock | None" = field(default=None, repr=False)  # checked before each date is published
    staging_keys: set[str] = field(init=False, default_factory=set)  # rel keys under _staging/ (a dead run's)

    def __post_init__(self) -> None:
        self.url = self.url.rstrip("/")
        self.fs = storage.filesystem(self.url)
        self.root = storage.fs_path(self.url)

    def _key(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def _call(self, what: str, fn: Callable, *args) -> Any:
        """``fn(*args)`` on the store, its errors named with the URL and the likely cause."""
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
            raise storage.io_error(self.url, what, exc) from exc

    def list(self) -> dict[str, int]:
        """Every object under the product (relative key -> size); kept as :attr:`sizes`."""
        try:
            found = self._call("list it", lambda: self.fs.find(self.root, withdirs=False, detail=True))
        except FileNotFoundError:
            found = {}
        n = len(self.root) + 1
        files = {k[n:]: int(v["size"]) for k, v in found.items() if v.get("type", "file") != "directory"}
        self.staging_keys = {k for k in files if k.startswith(f"{STAGING}/")}
        self.sizes = {k: v for k, v in files.items() if k != LOCK and k not in self.staging_keys}
        return self.sizes

    def staging_url(self, name: str) -> str:
        """The URL of a date's staging prefix ``<url>/_staging/<name>`` (``name``: ``<date>.<8 hex>``)."""
        return f"{self.url}/{STAGING}/{name}"

    def clean_staging(self, date: str) -> int:
        """Delete the staging prefixes of ``date`` a killed run left (``_staging/<date>.*``); returns the objects'
        count."""
        old = sorted(k for k in self.staging_keys if k.split("/")[1].split(".")[0] == date)
        if old:
            self._call(f"delete {STAGING}/{date}.*", self.fs.rm, [self._key(k) for k in old])
            self.staging_keys.difference_update(old)
            log.warning("produce %s: %d object(s) of a killed run's staging removed from %s/%s/", date, len(old),
                        self.url, STAGING)
        return len(old)

    def drop_staging(self, url: str) -> None:
        """Delete a staging prefix of this run (after its date is published, or failed); absent is fine."""
        path = storage.fs_path(url)
        try:
            self._call(f"delete {url}", self.fs.rm, path, True)
        except FileNotFoundError:
            pass

    def pull(self) -> int:
        """Fetch the markers, ``product.json`` and the STAC files into the local folder; returns how many.

        Then the catalogue is made to match the store's markers: items of dates not committed
        (their marker gone) are removed, locally and on the store (:meth:`put_metadata`).
        """
        from ssm_spark.stac import committed_dates, prune_catalog

        want = [rel for rel in self.list() if rel == "product.json" or rel.startswith(f"{_STAC}/")
                or (rel.startswith("parquet/date=") and rel.endswith(f"/{MARKER}"))]
        kept = [*self.local.glob(f"parquet/date=*/{MARKER}"), *(self.local / _STAC).rglob("*"),
                self.local / "product.json"]
        for old in kept:  # a kept working folder: the store decides
            if old.is_file() and old.relative_to(self.local).as_posix() not in self.sizes:
                old.unlink()
        for rel in want:
            dst = self.local / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            data = self._call(f"read {rel}", self.fs.cat_file, self._key(rel))
            dst.write_bytes(data)
            if not rel.endswith(f"/{MARKER}"):
                self.digests[rel] = hashlib.md5(data).hexdigest()  # noqa: S324 - change detection only
        log.info("produce: %s holds %d object(s); %d fetched (markers, product.json, STAC) into %s", self.url,
                 len(self.sizes), len(want), self.local)
        info = self.local / "product.json"
        if info.is_file():  # its dates: the store's markers (a run killed before republishing it, a marker removed)
            doc = json.loads(info.read_text())
            if doc.get("dates") != committed_dates(self.local):
                log.warning("produce: %s: product.json lists dates %s, the store's markers %s; corrected", self.url,
                            doc.get("dates"), committed_dates(self.local))
                write_json_atomic(info, {**doc, "dates": committed_dates(self.local)}, default=str)
        if info.is_file() and (self.local / _STAC).is_dir():
            res = prune_catalog(self.local)
            if res["removed"]:
                log.warning("produce: %s: the STAC items of %d date(s) no longer committed (no marker) are removed: "
                            "%s", self.url, len(res["removed"]), ", ".join(res["removed"]))
            if res["missing"]:
                log.warning("produce: %s: %d committed date(s) have no STAC item (made with produce.stac: false?), "
                            "e.g. %s; produce --force for those dates builds them", self.url, len(res["missing"]),
                            res["missing"][0])
        if info.is_file():
            self.put_metadata()
        return len(want)

    def publish(self, date: str, aggregates: Sequence[str], hook: Callable[[str, str], None] | None = None,
                staged: dict[str, int] | None = None, staging: str | None = None) -> None:
        """Publish a date committed in the local folder: marker deleted, staged objects copied to their keys and
        the local files PUT, leftovers deleted, marker last; then the staging prefix deleted.

        ``staged``: the objects under the date's staging prefix ``staging`` (rel -> size), copied
        server-side; the date's other files are the local folder's. ``hook(stage, date)`` is called
        at ``"publishing"`` (the first object written) and ``"published"`` (the marker PUT:
        :mod:`ssm_spark.watch` takes the commit's time from it).
        """
        marker = f"parquet/date={date}/{MARKER}"
        staged = dict(staged or {})
        if self.lock is not None:
            self.lock.check()
        if marker in self.sizes:
            self._call(f"delete {marker}", self.fs.rm_file, self._key(marker))
            self.sizes.pop(marker)
        rels = list(components(date, aggregates))
        prefixes = [str(r) for r in rels] + [str(r) for r in self._old_agg(date, aggregates)]
        mine: dict[str, int] = {}
        for rel in rels:
            p = self.local / rel
            for q in sorted([p] if p.is_file() else p.rglob("*") if p.is_dir() else []):
                if q.is_file() and q.name != MARKER:
                    mine[q.relative_to(self.local).as_posix()] = q.stat().st_size
        new = {**staged, **mine}
        src = storage.fs_path(staging) if staging else None

        def write(rel: str) -> None:
            if rel in mine:
                self._call(f"write {rel}", self.fs.put_file, str(self.local / rel), self._key(rel))
            else:
                self._copy(f"{src}/{rel}", rel)

        order = sorted(new)
        if order:
            write(order[0])
            if hook is not None:
                hook("publishing", date)
        with ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="publish") as pool:
            list(pool.map(write, order[1:]))  # the first error raised, once the others ended
        self.sizes.update(new)
        stale = sorted(k for k in self.sizes if k not in new and k != marker
                       and any(k == p or k.startswith(p + "/") for p in prefixes))
        if stale:
            self._call("delete leftovers", self.fs.rm, [self._key(k) for k in stale])
            for rel in stale:
                self.sizes.pop(rel)
            log.info("produce %s: %d leftover object(s) removed from %s", date, len(stale), self.url)
        item = f"{_STAC}/items/{date}.json"
        if (self.local / item).is_file():  # before the marker: a kill after it leaves no committed date without one
            self._put_changed(item)
        if self.lock is not None:  # still ours: else another run owns the product now, and no marker of ours
            self.lock.check()
        self.put(marker)
        if hook is not None:
            hook("published", date)  # the date is complete on the store from here
        if staging:
            self.drop_staging(staging)
        for rel in rels:  # the data live on the store now; the local marker stays (product.json, STAC)
            p = self.local / rel
            if p.is_dir():
                for q in p.iterdir():
                    if q.name != MARKER:
                        shutil.rmtree(q) if q.is_dir() else q.unlink()
            elif p.is_file():
                p.unlink()

    def _copy(self, src: str, rel: str) -> None:
        """A server-side copy of the object ``src`` (``bucket/key``, under this product's root) to ``rel``'s
        key (:func:`ssm_spark.storage.copy`: S3's CopyObject; GCS's rewrite; Azure's Copy Blob, waited for
        until Azure reports it complete, so that no marker lands before it)."""
        storage.copy(self.url + src[len(self.root):], f"{self.url}/{rel}", self.fs)

    def _old_agg(self, date: str, aggregates: Sequence[str]) -> list[str]:
        """The date's component prefixes of aggregate grids on the store but no longer configured."""
        from ssm_spark.product.aggregate import components as agg_components

        grids = sorted({k.split("/")[1] for k in self.sizes if k.startswith("agg/") and k.count("/") >= 2}
                       - set(aggregates))
        return [str(r) for r in agg_components(date, grids)]

    def put(self, rel: str) -> None:
        """PUT one file of the local folder under its key."""
        p = self.local / rel
        self._call(f"write {rel}", self.fs.put_file, str(p), self._key(rel))
        self.sizes[rel] = p.stat().st_size

    def put_metadata(self) -> None:
        """``product.json`` and the STAC files, after a date's marker: the store's copies made the local ones.

        Only files that changed are PUT (by MD5 against what this run read or wrote): ``product.json``,
        the items, the collection last; then STAC objects the local folder no longer has (items of
        dates not committed) are deleted, after the collection that no longer links them is up.
        """
        stac = self.local / _STAC
        rels = sorted(q.relative_to(self.local).as_posix() for q in (stac.rglob("*") if stac.is_dir() else [])
                      if q.is_file() and not q.name.startswith("."))
        coll = f"{_STAC}/collection.json"
        order = ["product.json"] * (self.local / "product.json").is_file() + [r for r in rels if r != coll] + \
            [coll] * (coll in rels)
        for rel in order:
            self._put_changed(rel)
        stale = sorted((k for k in self.sizes if k.startswith(f"{_STAC}/") and k not in rels),
                       key=lambda k: (k != coll, k))  # no collection left: it goes first, then its items
        for rel in stale:
            self._call(f"delete {rel}", self.fs.rm_file, self._key(rel))
            self.sizes.pop(rel)
            self.digests.pop(rel, None)
        if stale:
            log.info("produce: %s: %d STAC object(s) of dates no longer committed deleted", self.url, len(stale))


    def _put_changed(self, rel: str) -> None:
        """PUT a file of the local folder unless the store holds the same bytes (as this run read or wrote them)."""
        digest = _md5(self.local / rel)
        if self.digests.get(rel) != digest or rel not in self.sizes:
            self.put(rel)
            self.digests[rel] = digest


def _md5(path: Path) -> str:
    h = hashlib.md5()  # noqa: S324 - change detection, not security
    h.update(path.read_bytes())
    return h.hexdigest()
