"""Object storage by URL: ``s3://``, ``gs://`` and ``abfss://`` (``az://``) through fsspec.

Three views of one object, each for the library that reads it:

- Python (listing, small reads, uploads): an fsspec filesystem (:func:`filesystem`): ``s3fs`` for
  ``s3://``, ``gcsfs`` for ``gs://``, ``adlfs`` (Azure's Blob API) for ``abfss://`` / ``az://``, all
  pinned in requirements/constraints.txt (the extras ``[s3]``, ``[gcs]``, ``[azure]``).
- GDAL / rasterio (the stack rasters): its virtual paths (:func:`gdal_path`): ``s3://b/k`` ->
  ``/vsis3/b/k``, ``gs://b/k`` -> ``/vsigs/b/k``, ``abfss://c@acct.dfs.core.windows.net/k`` ->
  ``/vsiadls/c/k`` (Azure's DFS endpoint), or ``/vsiaz/c/k`` (its Blob API) when the connection
  string names a ``BlobEndpoint`` (an emulator such as Azurite, which serves no DFS endpoint, or a
  private endpoint); :func:`url_of` maps them back. GDAL's own settings for a server other than the
  cloud's come from :func:`gdal_env`: for S3 (``AWS_S3_ENDPOINT``, ``AWS_HTTPS``,
  ``AWS_VIRTUAL_HOSTING``) and for a GCS emulator (``CPL_GS_ENDPOINT``, ``GS_NO_SIGN_REQUEST``);
  Azure's connection string is read by GDAL itself.
- Spark (Hadoop's S3A): :func:`s3a_conf`.

Outputs other than the product (a registry, a validation report, a matchup table, the
change-detection climatology) are written to a local staging folder and *published*
(:func:`staged`, :func:`publish`): each file PUT under its final key, leftovers of an older
version deleted, and the marker ``_PUBLISHED.json`` (every file's size and MD5) PUT last, after
the old one was deleted first; a single-file output is one PUT. Readers (:func:`local_copy`) start
from the marker, download into a local cache keyed by the marker's digest (or a single object's
ETag), check every file against it, and so see a whole published version or an error, never a mix;
old versions are pruned from that cache, never one a running process holds (:mod:`ssm_spark.cache`).

Credentials come from the environment only and are read by the libraries themselves: S3
(``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL`` for a server other than AWS), GCS (Google's application default credentials,
``GOOGLE_APPLICATION_CREDENTIALS``; ``STORAGE_EMULATOR_HOST`` for an emulator, which takes no
credentials), Azure (``AZURE_STORAGE_CONNECTION_STRING``, read by adlfs and GDAL alike; or
``AZURE_STORAGE_ACCOUNT_NAME`` with ``AZURE_STORAGE_ACCOUNT_KEY`` / ``AZURE_STORAGE_SAS_TOKEN`` for
adlfs, GDAL's spellings ``AZURE_STORAGE_ACCOUNT`` / ``AZURE_STORAGE_ACCESS_KEY`` accepted too). They
are never logged, returned in a summary or written to an output: nothing here holds them. A
``/Volumes/...`` path (Databricks) is a mounted path, not a URL: the local code serves it.
"""

from __future__ import annotations

import logging
import os
import posixpath
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Mapping
from urllib.parse import urlsplit

from ssm_spark import cache
from ssm_spark.cache import cache_dir
from ssm_spark.errors import InputError, InputIOError
from ssm_spark.product.files import HEARTBEAT_S, LOCK, _holder_alive, holder_text, stale_after_s

log = logging.getLogger(__name__)

__all__ = ["is_remote", "filesystem", "gdal_path", "url_of", "gdal_env", "apply_gdal_env", "s3a_conf", "listdir",
           "shared_filesystems", "exists", "stat", "read_bytes", "write_bytes", "endpoint", "fs_path", "io_error",
           "PUBLISHED", "publish",
           "delete", "copy", "staged", "local_copy", "download", "cache_dir", "RemoteLock"]

#: URL scheme -> (fsspec protocol, the package that provides it, GDAL's virtual file system prefix)
SCHEMES = {"s3": ("s3", "s3fs", "/vsis3/"), "s3a": ("s3", "s3fs", "/vsis3/"), "gs": ("gcs", "gcsfs", "/vsigs/"),
           "gcs": ("gcs", "gcsfs", "/vsigs/"), "abfss": ("abfs", "adlfs", "/vsiadls/"),
           "abfs": ("abfs", "adlfs", "/vsiadls/"), "az": ("abfs", "adlfs", "/vsiaz/")}
_VSI = {"/vsis3/": "s3", "/vsigs/": "gs", "/vsiadls/": "abfss", "/vsiaz/": "az"}


def is_remote(path: str | os.PathLike | None) -> bool:
    """Whether ``path`` is an object-store URL (``s3://...``) or a GDAL ``/vsis3/``-style path of one."""
    if path is None:
        return False
    s = str(path)
    return urlsplit(s).scheme.lower() in SCHEMES or any(s.startswith(v) for v in _VSI)


def _scheme(url: str) -> str:
    scheme = urlsplit(url).scheme.lower()
    if scheme not in SCHEMES:
        raise InputError(f"{url}: not an object-store URL (expected one of {sorted(SCHEMES)}://)")
    return scheme


def endpoint() -> str | None:
    """The S3 endpoint of a server other than AWS (``AWS_ENDPOINT_URL_S3``, else ``AWS_ENDPOINT_URL``)."""
    return os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


def gcs_emulator(env: Mapping[str, str] | None = None) -> str | None:
    """The GCS emulator's URL (``STORAGE_EMULATOR_HOST``, as Google's clients and gcsfs read it), or None."""
    host = (os.environ if env is None else env).get("STORAGE_EMULATOR_HOST") or ""
    if host in ("", "default"):
        return None
    return (host if "://" in host else f"http://{host}").rstrip("/")


def _conn_parts(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``AZURE_STORAGE_CONNECTION_STRING``'s ``key=value`` parts (keys lower-cased); {} when unset."""
    raw = (os.environ if env is None else env).get("AZURE_STORAGE_CONNECTION_STRING") or ""
    return {k.strip().lower(): v.strip() for k, _, v in (p.partition("=") for p in raw.split(";")) if k.strip()}


def azure_blob_api(env: Mapping[str, str] | None = None) -> bool:
    """Whether GDAL reads ``abfss://`` through Azure's Blob API (``/vsiaz/``) rather than the DFS
    endpoint (``/vsiadls/``): when the connection string names a ``BlobEndpoint`` (an emulator such
    as Azurite serves no DFS endpoint; GDAL would send its DFS calls to that Blob endpoint)."""
    return bool(_conn_parts(env).get("blobendpoint"))


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
            _classes[protocol] = type(name, (base,), {"find": find, "__module__": __name__, "__qualname__": name})
        return _classes[protocol]


#: the classes' names in this module: a pickled instance (a Spark task's closure) is found again by
#: ``ssm_spark.storage.<name>`` in any process, made there on first lookup (:func:`__getattr__`)
_CLASS_NAMES = {"gcs": "_GCSFileSystem", "abfs": "_AzureBlobFileSystem"}


def __getattr__(name: str) -> Any:
    for protocol, cls_name in _CLASS_NAMES.items():
        if name == cls_name:
            return _fs_class(protocol)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


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
_shared: dict[tuple, Any] = {}
_share_lock = __import__("threading").Lock()


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


def fs_path(url: str) -> str:
    """``url`` as its filesystem's path: ``bucket/key`` (abfss: ``container/key``)."""
    u = urlsplit(str(url))
    return f"{u.netloc.split('@', 1)[0]}{u.path}".rstrip("/")


def gdal_path(url: str | os.PathLike) -> str:
    """GDAL's virtual path of an object: ``s3://b/k`` -> ``/vsis3/b/k`` (a local path is returned as is).

    ``abfss://`` (and ``abfs://``) -> ``/vsiadls/`` (the DFS endpoint), or ``/vsiaz/`` (the Blob API,
    as adlfs uses) when the connection string names a ``BlobEndpoint`` (:func:`azure_blob_api`).
    """
    s = str(url)
    if not is_remote(s) or any(s.startswith(v) for v in _VSI):
        return s
    vsi = SCHEMES[_scheme(s)][2]
    if vsi == "/vsiadls/" and azure_blob_api():
        vsi = "/vsiaz/"
    return vsi + fs_path(s)


def url_of(path: str | os.PathLike) -> str:
    """The URL of a GDAL virtual path (``/vsis3/b/k`` -> ``s3://b/k``); a URL is returned as is."""
    s = str(path)
    for vsi, scheme in _VSI.items():
        if s.startswith(vsi):
            return f"{scheme}://{s[len(vsi):]}"
    _scheme(s)
    return s


def gdal_env(env: dict | None = None) -> dict[str, str]:
    """GDAL's settings for the endpoints in the environment (empty for the clouds themselves).

    ``AWS_ENDPOINT_URL_S3=http://127.0.0.1:8333`` gives ``AWS_S3_ENDPOINT=127.0.0.1:8333``,
    ``AWS_HTTPS=NO`` and ``AWS_VIRTUAL_HOSTING=FALSE`` (path-style requests: a local server has no
    per-bucket host names). ``STORAGE_EMULATOR_HOST=http://127.0.0.1:4443`` (a GCS emulator) gives
    ``CPL_GS_ENDPOINT=http://127.0.0.1:4443/`` and ``GS_NO_SIGN_REQUEST=YES`` (an emulator takes no
    credentials). ``AZURE_STORAGE_ACCOUNT_NAME`` (adlfs' name) gives ``AZURE_STORAGE_ACCOUNT``
    (GDAL's); no credential is ever copied (these settings go into Spark's ``executorEnv``).
    Settings already in the environment are kept.
    """
    env = os.environ if env is None else env
    return {k: env.get(k, v) for k, v in _gdal_settings(env).items()}


def _gdal_settings(env: Mapping[str, str]) -> dict[str, str]:
    """GDAL's settings derived from ``env``'s endpoints alone (what is set already not consulted)."""
    out: dict[str, str] = {}
    ep = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if ep:
        u = urlsplit(ep if "://" in ep else f"https://{ep}")
        out.update({"AWS_S3_ENDPOINT": u.netloc + u.path.rstrip("/"),
                    "AWS_HTTPS": "YES" if u.scheme == "https" else "NO", "AWS_VIRTUAL_HOSTING": "FALSE"})
    gs = gcs_emulator(env)
    if gs:
        out.update({"CPL_GS_ENDPOINT": f"{gs}/", "GS_NO_SIGN_REQUEST": "YES"})
    if env.get("AZURE_STORAGE_ACCOUNT_NAME") and not env.get("AZURE_STORAGE_CONNECTION_STRING"):
        out["AZURE_STORAGE_ACCOUNT"] = env["AZURE_STORAGE_ACCOUNT_NAME"]
    return out


#: The values :func:`apply_gdal_env` put into ``os.environ`` itself (not the user's).
_applied_gdal: dict[str, str] = {}


def apply_gdal_env() -> dict[str, str]:
    """Put :func:`gdal_env` into ``os.environ`` (where GDAL reads them); returns them.

    A setting the user made is kept. One this function made itself follows the endpoint: when
    ``AWS_ENDPOINT_URL_S3`` (or ``STORAGE_EMULATOR_HOST``) changes in the same process (another
    server), its derived settings are replaced, and removed when there is no endpoint any more (the
    cloud itself), instead of GDAL going on talking to the first endpoint.
    """
    fresh = _gdal_settings(os.environ)
    with _share_lock:
        for k in [k for k in _applied_gdal if k not in fresh]:
            if os.environ.get(k) == _applied_gdal.pop(k):
                del os.environ[k]
        for k, v in fresh.items():
            cur = os.environ.get(k)
            if cur is None or cur == _applied_gdal.get(k):
                os.environ[k] = v
                _applied_gdal[k] = v
            else:
                _applied_gdal.pop(k, None)  # the user's from now on
        return {k: os.environ[k] for k in fresh}


def s3a_conf(env: dict | None = None) -> dict[str, str]:
    """Spark settings for Hadoop's S3A (``s3a://`` paths) from the environment.

    Credentials through the AWS SDK's environment provider (never in the Spark configuration, so
    never in its UI or event log); with an endpoint other than AWS: that endpoint, path-style
    access, TLS as the endpoint's scheme says. The jars: ``ssm-spark jars fetch --s3a``
    (:data:`ssm_spark.jars.S3A_ARTIFACTS`). The provider reads each JVM's own environment: on a
    cluster the executors need the variables too, or another provider set in ``spark.conf``
    (``spark.hadoop.fs.s3a.aws.credentials.provider``, e.g. an instance profile's), which wins.
    """
    env = os.environ if env is None else env
    out = {"spark.hadoop.fs.s3a.aws.credentials.provider":
           "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"}
    ep = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if ep:
        out.update({"spark.hadoop.fs.s3a.endpoint": ep, "spark.hadoop.fs.s3a.path.style.access": "true",
                    "spark.hadoop.fs.s3a.connection.ssl.enabled": str(ep.startswith("https")).lower()})
    return out


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


# ------------------------------------------------------------------------- published outputs

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
