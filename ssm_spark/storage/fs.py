"""fsspec filesystems by URL (:func:`filesystem`, :func:`shared_filesystems`), the store's errors named
(:func:`io_error`, :func:`credentials_hint`), and the one-object primitives: :func:`listdir`,
:func:`exists`, :func:`stat`, :func:`read_bytes`, :func:`write_bytes`, :func:`delete`, :func:`copy`
(see :mod:`ssm_spark.storage`)."""

from __future__ import annotations

import os
import posixpath
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from ssm_spark.errors import InputError, InputIOError
from ssm_spark.storage.settings import _conn_parts, _share_lock, endpoint, gcs_emulator
from ssm_spark.storage.urls import SCHEMES, _scheme, fs_path, gdal_path, is_remote, url_of

#: The environment each scheme's client reads (endpoint and credentials): a shared instance is keyed
#: on their digests (:func:`filesystem`)
_ENV = {"s3": ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY",
               "AWS_SESSION_TOKEN"),
        "gcs": ("STORAGE_EMULATOR_HOST", "GOOGLE_APPLICATION_CREDENTIALS", "GOOGLE_CLOUD_PROJECT"),
        "abfs": ("AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT_NAME", "AZURE_STORAGE_ACCOUNT",
                 "AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_ACCESS_KEY", "AZURE_STORAGE_SAS_TOKEN",
                 "AZURE_STORAGE_CLIENT_ID", "AZURE_STORAGE_CLIENT_SECRET", "AZURE_STORAGE_TENANT_ID")}


def _azure_account(url: str) -> str | None:
    """The storage account an ``abfss://container@ACCOUNT.dfs.core.windows.net/...`` URL names, else None."""
    u = urlsplit(str(url))
    if "@" not in u.netloc:
        return None
    host = u.netloc.split("@", 1)[1]
    return host.split(".", 1)[0] or None


def _options(protocol: str, url: str) -> dict[str, Any]:
    """The filesystem's options from the environment (credentials are left to the clients to read)."""
    opts: dict[str, Any] = {"skip_instance_cache": True, "use_listings_cache": False}
    if protocol == "s3":
        if endpoint():
            opts["endpoint_url"] = endpoint()
    elif protocol == "gcs":
        if gcs_emulator():  # gcsfs talks to it by itself; an emulator takes no credentials
            opts["token"] = "anon"
    elif protocol == "abfs":
        env = os.environ
        named = _azure_account(url)
        conn = _conn_parts()
        if conn:
            have = conn.get("accountname")
            if named and have and named != have:
                raise InputError(f"{url}: names the storage account {named!r}, but AZURE_STORAGE_CONNECTION_STRING "
                                 f"is the account {have!r}'s; write to that account, or set the other account's "
                                 "connection string")
        else:
            configured = env.get("AZURE_STORAGE_ACCOUNT_NAME") or env.get("AZURE_STORAGE_ACCOUNT")
            if named and configured and named != configured:  # GDAL's paths carry no account: it reads the variable
                raise InputError(f"{url}: names the storage account {named!r}, but AZURE_STORAGE_ACCOUNT_NAME / "
                                 f"AZURE_STORAGE_ACCOUNT is {configured!r} (which GDAL reads the stacks from); "
                                 "make them one account")
            account = named or configured
            if not account:
                raise InputError(f"{url}: no Azure storage account: name it in the URL "
                                 "(abfss://CONTAINER@ACCOUNT.dfs.core.windows.net/...) or set "
                                 "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT_NAME")
            opts["account_name"] = account
            key = env.get("AZURE_STORAGE_ACCOUNT_KEY") or env.get("AZURE_STORAGE_ACCESS_KEY")  # adlfs' or GDAL's name
            if key:
                opts["account_key"] = key
    return opts


_classes: dict[str, type] = {}
_class_lock = __import__("threading").Lock()


def _fs_class(protocol: str) -> type:
    """gcsfs' / adlfs' filesystem class with fsspec's ``find(path, maxdepth, withdirs, detail)`` order.

    Theirs put ``withdirs`` second (``fs.find(root, None, False, True)``, valid fsspec, is a TypeError
    on gcsfs and adlfs); every caller here gets the one signature. gcs: ``gcsfs.core.GCSFileSystem``,
    not the package's default class (``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT``, on by default), which asks
    Storage Control over gRPC for each bucket's layout first: 60 s of retries against an emulator or
    without that permission, for nothing the JSON API's object calls need.
    """
    with _class_lock:  # not _share_lock: filesystem() holds that one while it makes a shared instance
        if protocol not in _classes:
            if protocol == "gcs":
                from gcsfs.core import GCSFileSystem as base
            else:
                from adlfs import AzureBlobFileSystem as base

            def find(self, path, maxdepth=None, withdirs=False, detail=False, **kwargs):
                if maxdepth is not None:
                    kwargs["maxdepth"] = maxdepth
                return base.find(self, path, withdirs=withdirs, detail=detail, **kwargs)

            name = _CLASS_NAMES[protocol]
            _classes[protocol] = type(name, (base,), {"find": find, "__module__": "ssm_spark.storage",
                                                        "__qualname__": name})
        return _classes[protocol]


#: the classes' names in the package :mod:`ssm_spark.storage` (their ``__module__``): a pickled instance (a Spark
#: task's closure) is found again by ``ssm_spark.storage.<name>`` in any process, made there on first lookup
#: (the package's ``__getattr__``)
_CLASS_NAMES = {"gcs": "_GCSFileSystem", "abfs": "_AzureBlobFileSystem"}


def _make(protocol: str, opts: dict[str, Any]) -> Any:
    import fsspec

    if protocol in ("gcs", "abfs"):
        return _fs_class(protocol)(**opts)
    return fsspec.filesystem(protocol, **opts)


def filesystem(url: str) -> Any:
    """The fsspec filesystem of ``url``'s scheme (a fresh instance: no listing cache across runs).

    Raises
    ------
    InputError
        An unknown scheme, its fsspec package not installed (named, with its ``pip install``), or an
        ``abfss://`` URL whose storage account is not the configured one (or none is configured).
    """
    protocol, package, _ = SCHEMES[_scheme(str(url))]
    try:
        __import__(package)
    except ImportError as exc:
        raise InputError(f"{url}: reading or writing {protocol}:// needs the package {package} "
                         f"(pip install {package})") from exc
    opts = _options(protocol, str(url))
    if not _sharing[0]:
        return _make(protocol, opts)
    import hashlib

    key = (protocol, opts.get("account_name"),
           *(hashlib.sha256((os.environ.get(k) or "").encode()).hexdigest() for k in _ENV[protocol]))
    with _share_lock:
        if key not in _shared:
            _shared[key] = _make(protocol, opts)
        return _shared[key]


_sharing = [0]
_shared: dict[tuple, Any] = {}  # made under _share_lock (:mod:`ssm_spark.storage.settings`'s)

@contextmanager
def shared_filesystems() -> Iterator[None]:
    """While any such block runs, :func:`filesystem` gives one instance per scheme, endpoint and
    credentials (keyed by their digests) instead of a fresh one: a fresh one costs ~0.3 s (botocore's
    client), too much for the many small calls of a point query. Listings stay uncached."""
    with _share_lock:
        _sharing[0] += 1
    try:
        yield
    finally:
        with _share_lock:
            _sharing[0] -= 1


def credentials_hint(url: str) -> str:
    """What to check when ``url``'s store refuses or fails: its bucket, credentials and endpoint, in the
    variables of that store (AWS_*, GOOGLE_APPLICATION_CREDENTIALS / STORAGE_EMULATOR_HOST, AZURE_STORAGE_*)."""
    try:
        protocol = SCHEMES[_scheme(url_of(str(url)))][0]
    except InputError:
        protocol = "s3"
    if protocol == "gcs":
        return ("check the bucket name, the credentials (GOOGLE_APPLICATION_CREDENTIALS, or the application "
                f"default credentials) and the endpoint ({gcs_emulator() or 'Google Cloud Storage'})")
    if protocol == "abfs":
        blob = _conn_parts().get("blobendpoint")
        return ("check the container and account names, the credentials (AZURE_STORAGE_CONNECTION_STRING, or "
                "AZURE_STORAGE_ACCOUNT_NAME with AZURE_STORAGE_ACCOUNT_KEY / AZURE_STORAGE_SAS_TOKEN) and the "
                f"endpoint ({blob or 'Azure'})")
    return ("check the bucket name, the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and "
            f"the endpoint ({endpoint() or 'AWS'})")


def io_error(url: str, what: str, exc: Exception) -> InputIOError:
    """The store's error ``exc`` named with the URL, what was being done and the likely cause (no secret in it)."""
    hint = credentials_hint(url)
    # one line: Azure's errors run over several, with the response's XML after "Content:"
    text = " ".join(str(exc).split("\nContent:", 1)[0].split())
    text = text if len(text) <= 500 else text[:500] + " ..."
    return InputIOError(f"{url}: cannot {what} ({type(exc).__name__}: {text}); {hint}")


def _modified(info: Mapping[str, Any]) -> float | None:
    """An object's modification time (s since the epoch) from its fsspec info: s3fs' ``LastModified``,
    adlfs' ``last_modified``, gcsfs' ``mtime`` (or its ``updated`` string); None when it has none."""
    import datetime as dt

    for k in ("LastModified", "last_modified", "mtime", "updated"):
        v = info.get(k)
        if isinstance(v, str):
            try:
                v = dt.datetime.fromisoformat(v.replace("Z", "+00:00"))
            except ValueError:
                continue
        if hasattr(v, "timestamp"):
            return v.timestamp()
        if isinstance(v, (int, float)) and v > 0:
            return float(v)
    return None


def listdir(path: str | os.PathLike) -> list[tuple[Path, bool]]:
    """A folder's entries as (path, is_folder), sorted by name; ``[]`` when it does not exist.

    A local folder gives ``Path`` entries; a URL or GDAL virtual path gives GDAL virtual paths
    (``Path("/vsis3/b/k")``) that rasterio opens and ``.name`` / ``.stem`` / ``.parent`` work on.
    """
    s = str(path)
    if not is_remote(s):
        p = Path(s)
        return sorted(((q, q.is_dir()) for q in p.iterdir()), key=lambda e: e[0].name) if p.is_dir() else []
    url = url_of(s)
    fs = filesystem(url)
    try:
        entries = fs.ls(fs_path(url), detail=True)
    except FileNotFoundError:
        return []
    except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
        raise io_error(url, "list it", exc) from exc
    vsi = Path(gdal_path(url))  # a PosixPath of a GDAL virtual path: rasterio opens it as it is
    out = [(vsi / posixpath.basename(e["name"].rstrip("/")), e["type"] == "directory") for e in entries
           if e["name"].rstrip("/") != fs_path(url)]
    return sorted(out, key=lambda e: e[0].name)


def exists(path: str | os.PathLike) -> bool:
    s = str(path)
    if not is_remote(s):
        return os.path.exists(s)
    url = url_of(s)
    try:
        return bool(filesystem(url).exists(fs_path(url)))
    except Exception as exc:  # noqa: BLE001
        raise io_error(url, "look it up", exc) from exc


def stat(path: str | os.PathLike) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a local file or an object (its ``LastModified``)."""
    s = str(path)
    if not is_remote(s):
        st = os.stat(s)
        return st.st_size, st.st_mtime_ns
    url = url_of(s)
    try:
        info = filesystem(url).info(fs_path(url))
    except Exception as exc:  # noqa: BLE001
        raise io_error(url, "read its size and time", exc) from exc
    mod = _modified(info)
    return int(info["size"]), int(mod * 1e9) if mod is not None else 0


def read_bytes(url: str) -> bytes | None:
    """An object's bytes; None when it does not exist."""
    try:
        return filesystem(url).cat_file(fs_path(url))
    except FileNotFoundError:
        return None
    except Exception as exc:  # noqa: BLE001
        raise io_error(url, "read it", exc) from exc


def write_bytes(url: str, data: bytes) -> None:
    """One PUT: readers see the whole object or the previous one, never a part."""
    try:
        filesystem(url).pipe_file(fs_path(url), data)
    except Exception as exc:  # noqa: BLE001
        raise io_error(url, "write it", exc) from exc


def delete(url: str) -> None:
    """Delete one object; an object that is not there is not an error (as S3's own DELETE)."""
    try:
        filesystem(url).rm_file(fs_path(url))
    except FileNotFoundError:
        pass
    except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
        raise io_error(url, "delete it", exc) from exc


#: how long :func:`copy` waits for Azure to finish a copy it reports pending
COPY_TIMEOUT_S = 600.0


def copy(src: str, dst: str, fs: Any = None) -> None:
    """Copy one object to another key of the same store, server-side (no bytes through this machine):
    S3's CopyObject (one request: s3fs's ``copy`` would HEAD the source first; objects up to 5 GB),
    GCS's rewrite (gcsfs, looped until done), Azure's Copy Blob (adlfs). ``fs``: the store's
    filesystem when the caller holds one (else :func:`filesystem`).

    adlfs returns as soon as Azure has accepted the copy; Azure documents copies as asynchronous (a
    copy within one account is normally complete by then, and always on Azurite), so on ``abfss://``
    the blob's copy status is read back and waited for (``COPY_TIMEOUT_S``) until it is ``success``.

    Raises
    ------
    InputError
        ``src`` and ``dst`` on different stores.
    InputIOError
        No object at ``src``, a copy Azure reports failed or aborted (or still pending after the
        timeout), or the store's errors (named with the likely cause).
    """
    src, dst = url_of(str(src)), url_of(str(dst))
    protocol = SCHEMES[_scheme(src)][0]
    if SCHEMES[_scheme(dst)][0] != protocol:
        raise InputError(f"{src} -> {dst}: a server-side copy stays within one store")
    fs = fs if fs is not None else filesystem(dst)
    try:
        if protocol == "s3":
            sb, sk = fs_path(src).split("/", 1)
            db, dk = fs_path(dst).split("/", 1)
            fs.call_s3("copy_object", Bucket=db, Key=dk, CopySource={"Bucket": sb, "Key": sk})
        else:
            fs.copy(fs_path(src), fs_path(dst))
    except FileNotFoundError:
        raise InputIOError(f"{src}: no such object to copy to {dst}") from None
    except Exception as exc:  # noqa: BLE001 - the store's errors, named in ours
        raise io_error(dst, f"copy {src} to it", exc) from exc
    if protocol == "abfs":
        _azure_copied(fs, dst)


def _azure_copied(fs: Any, url: str) -> None:
    """Wait until Azure reports the copy into ``url`` complete (its blob's ``x-ms-copy-status``)."""
    import time

    from fsspec.asyn import sync

    container, _, blob = fs_path(url).partition("/")

    async def status() -> tuple[str | None, str | None]:
        async with fs.service_client.get_blob_client(container=container, blob=blob) as bc:
            props = await bc.get_blob_properties()
        return props.copy.status, props.copy.status_description

    t0 = time.monotonic()
    while True:
        try:
            state, why = sync(fs.loop, status)
        except Exception as exc:  # noqa: BLE001
            raise io_error(url, "read its copy status", exc) from exc
        if state in (None, "success"):
            return
        if state != "pending":
            raise InputIOError(f"{url}: Azure's copy into it ended {state} ({why}); copy it again")
        if time.monotonic() - t0 > COPY_TIMEOUT_S:
            raise InputIOError(f"{url}: Azure's copy into it still pending after {COPY_TIMEOUT_S:.0f} s ({why})")
        time.sleep(0.5)
