"""URLs of objects and their GDAL virtual paths: ``s3://b/k`` <-> ``/vsis3/b/k`` (see :mod:`ssm_spark.storage`)."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from ssm_spark.errors import InputError
from ssm_spark.storage.settings import azure_blob_api


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
