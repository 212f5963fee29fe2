"""Settings derived from the environment: the endpoints (S3, a GCS emulator, Azure's connection string),
GDAL's (:func:`gdal_env`, :func:`apply_gdal_env`) and Spark's S3A (:func:`s3a_conf`). No credential is
ever copied into them (see :mod:`ssm_spark.storage`)."""

from __future__ import annotations

import os
import threading
from typing import Mapping
from urllib.parse import urlsplit

#: held by :func:`apply_gdal_env` while it changes ``os.environ``, and by
#: :func:`ssm_spark.storage.fs.filesystem` while it makes a shared instance (whose client reads it)
_share_lock = threading.Lock()


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
