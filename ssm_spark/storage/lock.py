"""The exclusive lock of an output on an object store, ``<url>/_LOCK.json`` (:class:`RemoteLock`)."""

from __future__ import annotations

import logging
import os
import posixpath

from ssm_spark.errors import InputError, InputIOError
from ssm_spark.product.files import HEARTBEAT_S, LOCK, _holder_alive, holder_text, stale_after_s
from ssm_spark.storage.fs import _modified, delete, filesystem, io_error, write_bytes
from ssm_spark.storage.urls import SCHEMES, _scheme, fs_path

log = logging.getLogger("ssm_spark.storage")  # the package's logger, as before the split

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
    """The exclusive lock of an output on an object store, ``<url>/_LOCK.json``: its protocol and
    guarantees are in :mod:`ssm_spark.product.remote` (the product's) and docs/commit.md.

    Created only if absent where the store honours it (found out by :meth:`probe`): on S3 a ``PUT``
    with ``If-None-Match: *``, refreshed with ``If-Match`` and deleted with ``If-Match`` (its ETag);
    on GCS and Azure a create-only write (gcsfs / adlfs ``mode="create"``: GCS's
    ``ifGenerationMatch=0``, Azure's ``If-None-Match: *``), while refresh and release there read the
    lock and compare its token first (no conditional rewrite through those libraries). Else
    (``conditional=False``, or a store ignoring the condition) write-then-verify.
    """

    def __init__(self, url: str, what: str = "ssm-spark produce", *, stale_after: float | None = None,
                 break_lock: bool = False, conditional: bool | None = None) -> None:
        import uuid

        self.url = url.rstrip("/")
        self.lock_url = f"{self.url}/{LOCK}"
        self.what = what
        self.stale_after = stale_after_s() if stale_after is None else float(stale_after)
        self.break_lock = break_lock
        self.fs = filesystem(self.url)
        self.key = fs_path(self.lock_url)
        self.bucket, _, self.obj = self.key.partition("/")
        self.is_s3 = SCHEMES[_scheme(self.url)][0] == "s3"
        self.conditional = conditional  # None: probed at acquire
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
            raise io_error(self.lock_url if "Key" not in kw or kw["Key"] == self.obj
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
        """Whether the server refuses a create-only write over an object (S3: a PUT with ``If-None-Match: *``;
        GCS: ``ifGenerationMatch=0``; Azure: ``If-None-Match: *``)."""
        import uuid

        key = f"{self.obj[:-len(LOCK)]}.lock-probe-{uuid.uuid4().hex[:8]}"
        if not self.is_s3:
            probe_url = f"{self.url}/{posixpath.basename(key)}"
            write_bytes(probe_url, b"")
            try:
                self.fs.pipe_file(f"{self.bucket}/{key}", b"", mode="create")
                honoured = False
            except FileExistsError:
                honoured = True
            except Exception as exc:  # noqa: BLE001 - the store's errors, named in ours
                raise io_error(probe_url, "write a probe object", exc) from exc
            finally:
                delete(probe_url)
            return honoured
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
                # GCS: the generation (its etag is the content's MD5); Azure: the ETag. The age on this
                # machine's clock (fsspec gives no server Date): a skewed clock shifts staleness by its offset
                etag = str(info.get("generation") or info.get("ETag") or info.get("etag") or "")
                mod = _modified(info)
                now = time.time()
                mod = now if mod is None else mod
        except FileNotFoundError:
            return None
        except InputIOError:
            raise
        except Exception as exc:  # noqa: BLE001
            if _status(exc) == 404:
                return None
            raise io_error(self.lock_url, "read it", exc) from exc
        try:
            held = json.loads(body)
        except ValueError:
            held = {}  # half-written by a store without atomic PUT, or not ours: stale by its age
        return held, max(0.0, now - mod), etag

    def _create(self, body: bytes) -> bool:
        """Write the lock if absent; False when another run's lock is there."""
        import time

        if self.conditional and self.is_s3:
            try:
                self.etag = self._s3("put_object", "write it", Key=self.obj, Body=body, IfNoneMatch="*",
                                     ContentType="application/json")["ETag"]
            except Exception as exc:  # noqa: BLE001
                if _status(exc) in (409, 412):  # 409: a concurrent conditional write won
                    return False
                raise
        elif self.conditional:  # GCS ifGenerationMatch=0, Azure If-None-Match: * (FileExistsError when there)
            try:
                self.fs.pipe_file(self.key, body, mode="create")
            except FileExistsError:
                return False
            except Exception as exc:  # noqa: BLE001
                raise io_error(self.lock_url, "write it", exc) from exc
        else:
            if self.read() is not None:
                return False
            write_bytes(self.lock_url, body)
            time.sleep(VERIFY_WAIT_S)
        got = self.read()  # verified in both modes: ours, or a rival's written last
        if got is None or got[0].get("token") != self.token:
            return False
        self.etag = got[2]
        return True

    def _delete(self, etag: str) -> None:
        """Remove the lock if its ETag is still ``etag`` (S3: conditional delete; else read, compare, delete)."""
        if self.conditional and self.is_s3:
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
            delete(self.lock_url)

    # -- acquire, check, refresh, release --------------------------------------------------------
    def acquire(self) -> "RemoteLock":
        import threading

        if self.conditional is None:
            self.conditional = self.probe()
            if not self.conditional:
                log.warning("%s: the server ignores conditional writes (If-None-Match / ifGenerationMatch): the "
                            "lock is taken by write-then-verify, which leaves a race (see docs/commit.md)", self.url)
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
        log.info("%s: holding %s (%s)", self.what, self.lock_url,
                 "write-then-verify" if not self.conditional else "conditional writes" if self.is_s3
                 else "create-only write, token-checked refresh")
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
        if self.conditional and self.is_s3:
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
                write_bytes(self.lock_url, body)
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
