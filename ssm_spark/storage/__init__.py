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

from typing import Any

from ssm_spark.cache import cache_dir
from ssm_spark.storage.fs import (_CLASS_NAMES, _fs_class, copy, credentials_hint,  # noqa: F401 - re-exported
                                  delete, exists, filesystem, io_error, listdir, read_bytes, shared_filesystems, stat,
                                  write_bytes)
from ssm_spark.storage.lock import RemoteLock
from ssm_spark.storage.published import PUBLISHED, download, local_copy, publish, staged
from ssm_spark.storage.settings import (apply_gdal_env, azure_blob_api, endpoint,  # noqa: F401 - re-exported
                                        gcs_emulator, gdal_env, s3a_conf)
from ssm_spark.storage.urls import SCHEMES, fs_path, gdal_path, is_remote, url_of  # noqa: F401 - re-exported

# The modules: urls (URLs <-> GDAL paths), settings (GDAL, S3A, emulators), fs (filesystems, the one-object
# calls, errors), lock (RemoteLock), published (published folders; not named `publish`, which is the function).
# Tunables (fs.COPY_TIMEOUT_S, lock.VERIFY_WAIT_S, settings._applied_gdal) are not re-exported here: set (or
# patch) them in the module that reads them.

__all__ = ["is_remote", "filesystem", "gdal_path", "url_of", "gdal_env", "apply_gdal_env", "s3a_conf", "listdir",
           "shared_filesystems", "exists", "stat", "read_bytes", "write_bytes", "endpoint", "fs_path", "io_error",
           "PUBLISHED", "publish",
           "delete", "copy", "staged", "local_copy", "download", "cache_dir", "RemoteLock"]


def __getattr__(name: str) -> Any:
    """gcsfs' / adlfs' classes of :func:`filesystem` (``ssm_spark.storage._GCSFileSystem``,
    ``_AzureBlobFileSystem``): a pickled instance (a Spark task's closure) is found again by this name in any
    process, the class made there on first lookup (:func:`ssm_spark.storage.fs._fs_class`)."""
    for protocol, cls_name in _CLASS_NAMES.items():
        if name == cls_name:
            return _fs_class(protocol)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
