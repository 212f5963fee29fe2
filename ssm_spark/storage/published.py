"""Published outputs: a local folder or file PUT under a URL with its marker ``_PUBLISHED.json`` last
(:func:`publish`, :func:`staged`), and read back whole (:func:`download`, :func:`local_copy`; see
:mod:`ssm_spark.storage`)."""

from __future__ import annotations

import logging
import os
import posixpath
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from ssm_spark import cache
from ssm_spark.cache import cache_dir
from ssm_spark.errors import InputError, InputIOError
from ssm_spark.storage.fs import filesystem, io_error, read_bytes
from ssm_spark.storage.lock import RemoteLock
from ssm_spark.storage.urls import fs_path, is_remote, url_of

log = logging.getLogger("ssm_spark.storage")  # the package's logger, as before the split

#: The marker of a published folder: written last, deleted first (see the module docstring).
PUBLISHED = "_PUBLISHED.json"
_SKIP = ("_LOCK.json", PUBLISHED)


def _md5(path: Path) -> str:
    import hashlib

    h = hashlib.md5()  # noqa: S324 - an integrity check against the marker, not security
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _local_files(folder: Path) -> dict[str, Path]:
    """The files a folder publishes: every file but temporaries (``.name...``), locks and markers."""
    out = {}
    for q in sorted(folder.rglob("*")):
        rel = q.relative_to(folder)
        if q.is_file() and not any(part.startswith(".") for part in rel.parts) and q.name not in _SKIP:
            out[rel.as_posix()] = q
    return out


def publish(local: str | os.PathLike, url: str, what: str = "output") -> dict:
    """Publish a local file or folder to ``url`` (see the module docstring); returns the marker (a file: {}).

    A folder: the old marker deleted, every file PUT, objects under ``url`` the new version does not
    have deleted, the new marker PUT last. Two publications into one URL at once are kept apart by
    the URL's lock (:class:`ssm_spark.product.remote.RemoteLock`): the second is refused, naming it.
    """
    import json
    import time

    local, url = Path(local), url.rstrip("/")
    fs = filesystem(url)
    root = fs_path(url)

    def call(desc: str, fn, *args):
        try:
            return fn(*args)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
            raise io_error(url, desc, exc) from exc

    if local.is_file():
        call("write it", fs.put_file, str(local), root)
        return {}
    if not local.is_dir():
        raise InputError(f"{local}: nothing to publish to {url} (the {what} was not written)")
    files = _local_files(local)
    marker = {"what": what, "files": {rel: {"size": q.stat().st_size, "md5": _md5(q)} for rel, q in files.items()},
              "published_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    raw = read_bytes(f"{url}/{PUBLISHED}")
    if raw is not None and json.loads(raw).get("files") == marker["files"]:
        return json.loads(raw)  # already published, the same files: nothing rewritten
    with RemoteLock(url, f"publishing the {what}") as lock:
        try:
            call(f"delete {PUBLISHED}", fs.rm_file, f"{root}/{PUBLISHED}")
        except FileNotFoundError:
            pass
        try:
            old = call("list it", fs.find, root)
        except FileNotFoundError:
            old = []
        for rel, q in files.items():
            call(f"write {rel}", fs.put_file, str(q), f"{root}/{rel}")
        stale = sorted(k for k in old if k[len(root) + 1:] not in files and posixpath.basename(k) not in _SKIP)
        for k in stale:
            call(f"delete {k[len(root) + 1:]}", fs.rm_file, k)
        lock.check()  # still ours: else another publication owns the URL now, and no marker of ours
        call(f"write {PUBLISHED}", fs.pipe_file, f"{root}/{PUBLISHED}",
             json.dumps(marker, indent=1, sort_keys=True).encode())
    return marker


@contextmanager
def staged(output: str | os.PathLike, what: str = "output") -> Iterator[Path]:
    """Where to write an output: a local ``output`` as it is; for a URL, a local staging path of the
    same name (``SSM_STAGING_DIR``, else a temporary folder), published to the URL when the block
    succeeds (:func:`publish`) and removed after. A failed block publishes nothing."""
    import shutil
    import tempfile

    if not is_remote(output):
        yield Path(output)
        return
    url = url_of(str(output)).rstrip("/")
    base = os.environ.get("SSM_STAGING_DIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ssm-stage-", dir=base or None))
    try:
        yield tmp / posixpath.basename(url)
        publish(tmp / posixpath.basename(url), url, what)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def download(url: str, dest: str | os.PathLike, what: str = "output") -> dict | None:
    """Copy a published folder (its marker's files, each checked) into ``dest``; None when ``url``
    holds no marker. Raises :class:`InputIOError` when an object does not match the marker (a
    publication under way, or a damaged one)."""
    import json

    url = url.rstrip("/")
    raw = read_bytes(f"{url}/{PUBLISHED}")
    if raw is None:
        return None
    marker = json.loads(raw)
    fs, root, dest = filesystem(url), fs_path(url), Path(dest)
    for rel, meta in sorted(marker["files"].items()):
        q = dest / rel
        q.parent.mkdir(parents=True, exist_ok=True)
        try:
            fs.get_file(f"{root}/{rel}", str(q))
        except FileNotFoundError:
            q.unlink(missing_ok=True)
            raise InputIOError(f"{url}/{rel}: listed by {url}/{PUBLISHED} but missing: the {what} is being "
                               "published again (retry when it is done) or was damaged (publish it again)") from None
        except Exception as exc:  # noqa: BLE001
            raise io_error(f"{url}/{rel}", "read it", exc) from exc
        if q.stat().st_size != meta["size"] or _md5(q) != meta["md5"]:
            raise InputIOError(f"{url}/{rel}: not the file {url}/{PUBLISHED} lists (size or MD5 differ): the {what} "
                               "is being published again (retry when it is done) or was damaged (publish it again)")
    return marker


def local_copy(url: str | os.PathLike, what: str = "output") -> Path:
    """A local copy of a published output (:func:`publish`): a folder (its marker) or a single object.

    Kept in :func:`cache_dir` under the digest of the marker (a single object: its ETag), so a
    second call for an unchanged output downloads nothing, and a republished one is fetched anew.
    A local path is returned as it is. The copy is held (a shared lock) until this process exits,
    and older versions of the URL beyond ``SSM_CACHE_KEEP`` are pruned after a new download
    (:mod:`ssm_spark.cache`).

    Raises
    ------
    InputError
        Nothing at ``url`` (neither a marker nor an object; e.g. a run that never finished publishing).
    InputIOError
        An object that does not match its marker, or the store's errors (named with the likely cause).
    """
    import hashlib
    import shutil
    import tempfile

    if not is_remote(url):
        return Path(url)
    url = url_of(str(url)).rstrip("/")
    name = posixpath.basename(url)
    raw = read_bytes(f"{url}/{PUBLISHED}")
    if raw is not None:
        key = hashlib.sha256(url.encode() + b"\0" + raw).hexdigest()[:16]
    else:
        try:
            info = filesystem(url).info(fs_path(url))
        except FileNotFoundError:
            info = None
        except Exception as exc:  # noqa: BLE001
            raise io_error(url, "look it up", exc) from exc
        if info is None or info.get("type") == "directory":
            raise InputError(f"{url}: no published {what} there (no object, and no {PUBLISHED} marker: a run that "
                             "did not finish publishing it, or a wrong URL)")
        etag = str(info.get("ETag") or info.get("etag") or info.get("size"))
        key = hashlib.sha256(f"{url}\0{etag}".encode()).hexdigest()[:16]
    final = cache_dir() / key / name
    cache.hold(final.parent)  # this process's shared lock: no pruner removes the copy while we run
    if final.exists():
        cache.touch(final.parent)
        return final
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=final.parent))
    try:
        if raw is not None:
            if download(url, tmp / name, what) is None:
                raise InputError(f"{url}: its {PUBLISHED} marker vanished while it was read (being published "
                                 "again: retry)")
        else:
            try:
                filesystem(url).get_file(fs_path(url), str(tmp / name))
            except Exception as exc:  # noqa: BLE001
                raise io_error(url, "read it", exc) from exc
        try:
            os.replace(tmp / name, final)
        except OSError:
            if not final.exists():  # another process put the same copy in place first: theirs serves
                raise
        cache.record(final.parent, url, name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    try:  # a new version: this URL's older ones beyond SSM_CACHE_KEEP go (never one in use)
        cache.prune(url=url)
    except OSError as exc:
        log.warning("cache: pruning %s after fetching %s failed (%s); the copy serves, the old ones stay", cache_dir(),
                    url, exc)
    return final
