"""Object storage by URL: ``s3://`` (and by the same code ``gs://``, ``abfss://``) through fsspec.

Three views of one object, each for the library that reads it:

- Python (listing, small reads, uploads): an fsspec filesystem (:func:`filesystem`): ``s3fs`` for
  ``s3://`` (pinned in requirements/constraints.txt), ``gcsfs`` / ``adlfs`` for ``gs://`` /
  ``abfss://`` when installed (``pip install gcsfs`` / ``adlfs``: optional, not pinned or tested).
- GDAL / rasterio (the stack rasters): its virtual paths (:func:`gdal_path`): ``s3://b/k`` ->
  ``/vsis3/b/k``, ``gs://b/k`` -> ``/vsigs/b/k``, ``abfss://c@acct.dfs.core.windows.net/k`` ->
  ``/vsiadls/c/k``; :func:`url_of` maps them back. GDAL's own settings for a non-AWS endpoint come
  from :func:`gdal_env` (``AWS_S3_ENDPOINT``, ``AWS_HTTPS``, ``AWS_VIRTUAL_HOSTING``).
- Spark (Hadoop's S3A): :func:`s3a_conf`.

Credentials come from the environment only (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN``, ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` for a server other than
AWS), are read by botocore / GDAL / Hadoop themselves, and are never logged, returned in a summary
or written to an output: nothing here holds them. A ``/Volumes/...`` path (Databricks) is a mounted
path, not a URL: the local code serves it.
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ssm_spark.errors import InputError, InputIOError

__all__ = ["is_remote", "filesystem", "gdal_path", "url_of", "gdal_env", "apply_gdal_env", "s3a_conf", "listdir",
           "exists", "stat", "read_bytes", "write_bytes", "endpoint", "fs_path", "io_error"]

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


def filesystem(url: str) -> Any:
    """The fsspec filesystem of ``url``'s scheme (a fresh instance: no listing cache across runs).

    Raises
    ------
    InputError
        An unknown scheme, or its fsspec package not installed (named, with its ``pip install``).
    """
    import fsspec

    protocol, package, _ = SCHEMES[_scheme(str(url))]
    try:
        __import__(package)
    except ImportError as exc:
        raise InputError(f"{url}: reading or writing {protocol}:// needs the package {package} "
                         f"(pip install {package})") from exc
    opts: dict[str, Any] = {"skip_instance_cache": True}
    if protocol == "s3":
        if endpoint():
            opts["endpoint_url"] = endpoint()
        opts["use_listings_cache"] = False
    return fsspec.filesystem(protocol, **opts)


def fs_path(url: str) -> str:
    """``url`` as its filesystem's path: ``bucket/key`` (abfss: ``container/key``)."""
    u = urlsplit(str(url))
    return f"{u.netloc.split('@', 1)[0]}{u.path}".rstrip("/")


def gdal_path(url: str | os.PathLike) -> str:
    """GDAL's virtual path of an object: ``s3://b/k`` -> ``/vsis3/b/k`` (a local path is returned as is)."""
    s = str(url)
    if not is_remote(s) or any(s.startswith(v) for v in _VSI):
        return s
    return SCHEMES[_scheme(s)][2] + fs_path(s)


def url_of(path: str | os.PathLike) -> str:
    """The URL of a GDAL virtual path (``/vsis3/b/k`` -> ``s3://b/k``); a URL is returned as is."""
    s = str(path)
    for vsi, scheme in _VSI.items():
        if s.startswith(vsi):
            return f"{scheme}://{s[len(vsi):]}"
    _scheme(s)
    return s


def gdal_env(env: dict | None = None) -> dict[str, str]:
    """GDAL's settings for the S3 endpoint in the environment (empty for AWS itself).

    ``AWS_ENDPOINT_URL_S3=http://127.0.0.1:8333`` gives ``AWS_S3_ENDPOINT=127.0.0.1:8333``,
    ``AWS_HTTPS=NO`` and ``AWS_VIRTUAL_HOSTING=FALSE`` (path-style requests: a local server has no
    per-bucket host names). Settings already in the environment are kept.
    """
    env = os.environ if env is None else env
    ep = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if not ep:
        return {}
    u = urlsplit(ep if "://" in ep else f"https://{ep}")
    out = {"AWS_S3_ENDPOINT": u.netloc + u.path.rstrip("/"), "AWS_HTTPS": "YES" if u.scheme == "https" else "NO",
           "AWS_VIRTUAL_HOSTING": "FALSE"}
    return {k: env.get(k, v) for k, v in out.items()}


def apply_gdal_env() -> dict[str, str]:
    """Put :func:`gdal_env` into ``os.environ`` (where GDAL reads them) unless already set; returns them."""
    out = gdal_env()
    for k, v in out.items():
        os.environ.setdefault(k, v)
    return out


def s3a_conf(env: dict | None = None) -> dict[str, str]:
    """Spark settings for Hadoop's S3A (``s3a://`` paths) from the environment.

    Credentials through the AWS SDK's environment provider (never in the Spark configuration, so
    never in its UI or event log); with an endpoint other than AWS: that endpoint, path-style
    access, TLS as the endpoint's scheme says. The ``hadoop-aws`` jars are not fetched by
    :mod:`ssm_spark.jars` (see README, "Object storage").
    """
    env = os.environ if env is None else env
    out = {"spark.hadoop.fs.s3a.aws.credentials.provider":
           "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider"}
    ep = env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if ep:
        out.update({"spark.hadoop.fs.s3a.endpoint": ep, "spark.hadoop.fs.s3a.path.style.access": "true",
                    "spark.hadoop.fs.s3a.connection.ssl.enabled": str(ep.startswith("https")).lower()})
    return out


def io_error(url: str, what: str, exc: Exception) -> InputIOError:
    hint = ("check the bucket name, the credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and "
            f"the endpoint ({endpoint() or 'AWS'})")
    return InputIOError(f"{url}: cannot {what} ({type(exc).__name__}: {exc}); {hint}")


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
    mod = info.get("LastModified") or info.get("mtime") or info.get("updated")
    ns = int(mod.timestamp() * 1e9) if hasattr(mod, "timestamp") else 0
    return int(info["size"]), ns


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
