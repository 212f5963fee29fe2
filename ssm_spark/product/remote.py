"""A product written to object storage (``s3://``, ``gs://``, ``abfss://``): staged locally, published date by date.

An object store has no rename, so the local commit (:mod:`ssm_spark.product.commit`) cannot be
used on it. Instead the run works in a local folder laid out exactly as a local product
(``--staging-dir`` / ``SSM_STAGING_DIR``, default a temporary folder), and after a date is
committed there it is *published* (:meth:`RemoteOutput.publish`):

1. the date's remote marker ``parquet/date=<date>/_SUCCESS.json`` is deleted (readers and re-runs
   now take the date as not complete);
2. every file of the date's components (Parquet partition, COGs, VRT, quicklook, aggregates) is
   PUT under its final key (one PUT is atomic per object);
3. objects under the date's components that the new date does not have (leftovers of an older or
   interrupted run, grids no longer aggregated) are deleted;
4. the marker is PUT last; then ``product.json`` and the STAC files.

So on the store too a date is complete exactly when its marker exists. At the start of a run the
remote markers, ``product.json`` and the STAC files are fetched into the local folder
(:meth:`RemoteOutput.pull`), and resume is keyed on the remote marker: :func:`commit.is_complete`
checks the outputs it lists against the remote listing's sizes. A run killed before step 4 leaves a
date without a marker, which the next run recomputes; its objects are then replaced or removed in
steps 2-3. The local copy of a published date's data files is removed (its marker kept).

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

import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from ssm_spark import storage
from ssm_spark.errors import InputError
from ssm_spark.product.commit import MARKER, components
from ssm_spark.product.files import HEARTBEAT_S, LOCK, _holder_alive, holder_text, stale_after_s

log = logging.getLogger(__name__)

__all__ = ["RemoteOutput", "RemoteLock"]

_STAC = "stac"


@dataclass
class RemoteOutput:
    """The store side of a product run (see the module docstring)."""

    url: str  # the product's URL, e.g. s3://bucket/product
    local: Path  # the local working folder (a local product's layout)
    fs: Any = field(init=False, repr=False)
    root: str = field(init=False)
    sizes: dict[str, int] = field(init=False, default_factory=dict)  # rel -> size of every object under root
    lock: "RemoteLock | None" = field(default=None, repr=False)  # checked before each date is published

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
            found = self._call("list it", self.fs.find, self.root, None, False, True)
        except FileNotFoundError:
            found = {}
        n = len(self.root) + 1
        self.sizes = {k[n:]: int(v["size"]) for k, v in found.items()
                      if v.get("type", "file") != "directory" and k[n:] != LOCK}
        return self.sizes

    def pull(self) -> int:
        """Fetch the markers, ``product.json`` and the STAC files into the local folder; returns how many."""
        want = [rel for rel in self.list() if rel == "product.json" or rel.startswith(f"{_STAC}/")
                or (rel.startswith("parquet/date=") and rel.endswith(f"/{MARKER}"))]
        for old in self.local.glob(f"parquet/date=*/{MARKER}"):  # a kept working folder: the store decides
            if old.relative_to(self.local).as_posix() not in self.sizes:
                old.unlink()
        for rel in want:
            dst = self.local / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(self._call(f"read {rel}", self.fs.cat_file, self._key(rel)))
        log.info("produce: %s holds %d object(s); %d fetched (markers, product.json, STAC) into %s", self.url,
                 len(self.sizes), len(want), self.local)
        return len(want)

    def publish(self, date: str, aggregates: Sequence[str], hook: Callable[[str, str], None] | None = None) -> None:
        """Publish a date committed in the local folder: marker deleted, objects PUT, leftovers deleted, marker last."""
        marker = f"parquet/date={date}/{MARKER}"
        if self.lock is not None:
            self.lock.check()
        if marker in self.sizes:
            self._call(f"delete {marker}", self.fs.rm_file, self._key(marker))
            self.sizes.pop(marker)
        rels = list(components(date, aggregates))
        prefixes = [str(r) for r in rels] + [str(r) for r in self._old_agg(date, aggregates)]
        new: dict[str, int] = {}
        for rel in rels:
            p = self.local / rel
            for q in sorted([p] if p.is_file() else p.rglob("*") if p.is_dir() else []):
                if q.is_file() and q.name != MARKER:
                    new[q.relative_to(self.local).as_posix()] = q.stat().st_size
        for i, (rel, size) in enumerate(sorted(new.items())):
            self._call(f"write {rel}", self.fs.put_file, str(self.local / rel), self._key(rel))
            self.sizes[rel] = size
            if i == 0 and hook is not None:
                hook("publishing", date)
        stale = sorted(k for k in self.sizes if k not in new and k != marker
                       and any(k == p or k.startswith(p + "/") for p in prefixes))
        for rel in stale:
            self._call(f"delete {rel}", self.fs.rm_file, self._key(rel))
            self.sizes.pop(rel)
        if stale:
            log.info("produce %s: %d leftover object(s) removed from %s", date, len(stale), self.url)
        if self.lock is not None:  # still ours: else another run owns the product now, and no marker of ours
            self.lock.check()
        self.put(marker)
        for rel in rels:  # the data live on the store now; the local marker stays (product.json, STAC)
            p = self.local / rel
            if p.is_dir():
                for q in p.iterdir():
                    if q.name != MARKER:
                        shutil.rmtree(q) if q.is_dir() else q.unlink()
            elif p.is_file():
                p.unlink()

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
        """``product.json`` and the STAC files, after a date's marker."""
        if (self.local / "product.json").is_file():
            self.put("product.json")
        stac = self.local / _STAC
        if stac.is_dir():
            for q in sorted(stac.rglob("*")):
                if q.is_file():
                    self.put(q.relative_to(self.local).as_posix())


# ------------------------------------------------------------------------------------------ the lock

#: write-then-verify: how long after writing the lock it is read back (a rival's write within it is seen)
VERIFY_WAIT_S = 2.0


def _status(exc: BaseException) -> int | None:
    """The HTTP status behind an s3fs / botocore error (s3fs folds 412 into an OSError), else None."""
    for e in (exc, getattr(exc, "__cause__", None), getattr(exc, "__context__", None)):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict):
            code = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code:
                return int(code)
            err = resp.get("Error", {}).get("Code")
            if err in ("PreconditionFailed", "412"):
                return 412
    return 412 if isinstance(exc, FileExistsError) else None


class RemoteLock:
    """The exclusive lock of a product on an object store, ``<url>/_LOCK.json`` (see the module docstring)."""

    def __init__(self, url: str, what: str = "ssm-spark produce", *, stale_after: float | None = None,
                 break_lock: bool = False, conditional: bool | None = None) -> None:
        import uuid

        self.url = url.rstrip("/")
        self.lock_url = f"{self.url}/{LOCK}"
        self.what = what
        self.stale_after = stale_after_s() if stale_after is None else float(stale_after)
        self.break_lock = break_lock
        self.fs = storage.filesystem(self.url)
        self.key = storage.fs_path(self.lock_url)
        self.bucket, _, self.obj = self.key.partition("/")
        self.is_s3 = storage.SCHEMES[storage._scheme(self.url)][0] == "s3"
        self.conditional = conditional  # None: probed at acquire (s3 only; other stores: write-then-verify)
        self.token = uuid.uuid4().hex
        self.etag: str | None = None
        self.lost: str | None = None
        self._stop = None
        self._thread = None

    # -- the store's calls ---------------------------------------------------------------------
    def _s3(self, op: str, what: str, **kw) -> dict:
        try:
            return self.fs.call_s3(op, Bucket=self.bucket, **kw)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's errors: 412 to the caller, the rest named
            if _status(exc) in (409, 412):
                raise
            raise storage.io_error(self.lock_url if "Key" not in kw or kw["Key"] == self.obj
                                   else f"s3://{self.bucket}/{kw['Key']}", what, exc) from exc

    def _get(self) -> tuple[dict, bytes]:
        """One GET of the lock: its response (ETag, Last-Modified, the server's Date) and body together."""
        from fsspec.asyn import sync

        async def get() -> tuple[dict, bytes]:
            resp = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self.obj)
            try:
                return resp, await resp["Body"].read()
            finally:
                resp["Body"].close()

        return sync(self.fs.loop, get)

    def probe(self) -> bool:
        """Whether the server refuses a conditional PUT over an object (it honours ``If-None-Match``)."""
        import uuid

        if not self.is_s3:
            return False
        key = f"{self.obj[:-len(LOCK)]}.lock-probe-{uuid.uuid4().hex[:8]}"
        self._s3("put_object", "write a probe object (credentials, bucket, permission)", Key=key, Body=b"")
        try:
            self._s3("put_object", "write a probe object", Key=key, Body=b"", IfNoneMatch="*")
            honoured = False
        except Exception as exc:  # noqa: BLE001
            if _status(exc) not in (409, 412):
                raise
            honoured = True
        finally:
            self._s3("delete_object", "remove a probe object", Key=key)
        return honoured

    def _info(self, started: str | None = None) -> bytes:
        import json
        import socket
        import sys
        import time

        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        return json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "job": self.what, "token": self.token,
                           "started_utc": started or now, "refreshed_utc": now,
                           "command": " ".join(sys.argv)}).encode()

    def read(self) -> tuple[dict, float, str] | None:
        """The lock's holder, its age in seconds (the server's clock) and ETag; None when there is none."""
        import email.utils
        import json
        import time

        try:
            if self.is_s3:
                resp, body = self._get()
                etag = resp.get("ETag", "")
                date = resp.get("ResponseMetadata", {}).get("HTTPHeaders", {}).get("date")
                now = email.utils.parsedate_to_datetime(date).timestamp() if date else time.time()
                mod = resp["LastModified"].timestamp()
            else:
                info = self.fs.info(self.key)
                body = self.fs.cat_file(self.key)
                etag = str(info.get("ETag") or info.get("etag") or info.get("generation") or "")
                mod_t = info.get("LastModified") or info.get("last_modified") or info.get("updated") or info.get("mtime")
                mod = mod_t.timestamp() if hasattr(mod_t, "timestamp") else time.time()
                now = time.time()
        except FileNotFoundError:
            return None
        except storage.InputIOError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _status(exc) == 404:
                return None
            raise storage.io_error(self.lock_url, "read it", exc) from exc
        try:
            held = json.loads(body)
        except ValueError:
            held = {}  # half-written by a store without atomic PUT, or not ours: stale by its age
        return held, max(0.0, now - mod), etag

    def _create(self, body: bytes) -> bool:
        """Write the lock if absent; False when another run's lock is there."""
        import time

        if self.conditional:
            try:
                self.etag = self._s3("put_object", "write it", Key=self.obj, Body=body, IfNoneMatch="*",
                                     ContentType="application/json")["ETag"]
            except Exception as exc:  # noqa: BLE001
                if _status(exc) in (409, 412):  # 409: a concurrent conditional write won
                    return False
                raise
        else:
            if self.read() is not None:
                return False
            storage.write_bytes(self.lock_url, body)
            time.sleep(VERIFY_WAIT_S)
        got = self.read()  # verified in both modes: ours, or a rival's written last
        if got is None or got[0].get("token") != self.token:
            return False
        self.etag = got[2]
        return True

    def _delete(self, etag: str) -> None:
        """Remove the lock if its ETag is still ``etag`` (conditional delete; else read, compare, delete)."""
        if self.conditional:
            try:
                self._s3("delete_object", "remove it", Key=self.obj, IfMatch=etag)
            except FileNotFoundError:
                pass
            except Exception as exc:  # noqa: BLE001
                if _status(exc) not in (404, 409, 412):
                    raise
            return
        got = self.read()
        if got is not None and got[2] == etag:
            try:
                self.fs.rm_file(self.key)
            except FileNotFoundError:
                pass

    # -- acquire, check, refresh, release --------------------------------------------------------
    def acquire(self) -> "RemoteLock":
        import threading

        if self.conditional is None:
            self.conditional = self.probe()
            if self.is_s3 and not self.conditional:
                log.warning("%s: the server ignores conditional writes (If-None-Match): the lock is taken by "
                            "write-then-verify, which leaves a race (see docs/commit.md)", self.url)
        body = self._info()
        for _ in range(4):
            if self._create(body):
                break
            got = self.read()
            if got is None:
                continue  # released between our write and our read: try again
            held, age, etag = got
            if held.get("token") == self.token:
                self.etag = etag
                break
            alive = _holder_alive(held)
            if age <= self.stale_after and alive and not self.break_lock:
                raise InputError(
                    f"{self.url} is in use by another {holder_text(held)}; lock {self.lock_url}, refreshed "
                    f"{age:.0f} s ago; wait for it to end, or write elsewhere (a lock left by a killed run expires "
                    f"{self.stale_after:.0f} s after its last refresh, SSM_LOCK_STALE_S; --break-lock takes it "
                    f"over, only if that run is gone)")
            why = ("its holder is gone" if not alive else f"not refreshed for {age:.0f} s" if age > self.stale_after
                   else "--break-lock")
            log.warning("%s: taking over the lock of %s (%s)", self.lock_url, holder_text(held), why)
            self._delete(etag)
        else:
            raise InputError(f"{self.lock_url}: could not take the product's lock (other runs keep taking it); "
                             "wait, then run again")
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._beat, name="remote-lock", daemon=True)
        self._thread.start()
        log.info("produce: holding %s (%s)", self.lock_url,
                 "conditional writes" if self.conditional else "write-then-verify")
        return self

    def _beat(self) -> None:
        import json

        started = json.loads(self._info())["started_utc"]
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self.refresh(started)
            except Exception as exc:  # noqa: BLE001 - the next check() raises it in the run
                if self.lost is None and not isinstance(exc, InputError):
                    log.warning("%s: refreshing the lock failed (%s); retried in %.0f s", self.lock_url, exc,
                                HEARTBEAT_S)
            if self.lost:
                return

    def refresh(self, started: str | None = None) -> None:
        """Rewrite the lock (its age restarts) if it is still this run's; else :attr:`lost` is set."""
        body = self._info(started)
        if self.conditional:
            try:
                self.etag = self._s3("put_object", "refresh it", Key=self.obj, Body=body, IfMatch=self.etag,
                                     ContentType="application/json")["ETag"]
                return
            except Exception as exc:  # noqa: BLE001
                if _status(exc) not in (404, 409, 412):
                    raise
        else:
            got = self.read()
            if got is not None and got[0].get("token") == self.token:
                storage.write_bytes(self.lock_url, body)
                self.etag = (self.read() or ({}, 0.0, ""))[2]
                return
        got = self.read()
        self.lost = f"taken over by {holder_text(got[0])}" if got else "removed by someone else"

    def check(self) -> None:
        """Raise :class:`InputError` unless the store's lock is still this run's (called before each publication)."""
        if self.lost is None:
            got = self.read()
            if got is None:
                self.lost = "removed by someone else"
            elif got[0].get("token") != self.token:
                self.lost = f"taken over by {holder_text(got[0])}"
        if self.lost:
            raise InputError(f"{self.lock_url}: this run no longer holds the product's lock ({self.lost}); it stops "
                             "before publishing more: the dates it published are complete, the next one was not "
                             "marked; check which run should own the product and run it again")

    def release(self) -> None:
        if self._stop is not None:
            self._stop.set()
            self._thread.join(timeout=30)
        if self.etag is not None and not self.lost:
            got = self.read()
            if got is not None and got[0].get("token") == self.token:
                self._delete(got[2])
            self.etag = None

    def __enter__(self) -> "RemoteLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
