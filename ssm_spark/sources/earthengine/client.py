"""The thin live layer over earthengine-api: credentials, initialisation, retried calls.

Everything that talks to Earth Engine goes through :class:`EEClient` (``get_info``, ``start_task``,
``task_status``), so tests replace it with a fake that answers recorded responses. :func:`offline`
initialises earthengine-api with the algorithm list it ships (no network, no credentials): the
request graphs then build and serialise, for the tests and ``--dry-run``.

Credentials: ``earthengine.credentials`` (a service-account key file), else the file named by
``GOOGLE_APPLICATION_CREDENTIALS``, else earthengine-api's default credentials ('earthengine
authenticate' or gcloud application-default). The key's contents are never logged or written
anywhere; errors name the missing file or setting, not what is in it.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from ssm_spark.errors import ConfigError, SSMError

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.sources.earthengine.settings import EarthEngineConfig

log = logging.getLogger(__name__)

__all__ = ["CredentialsError", "EarthEngineError", "offline", "is_transient", "retry", "EEClient"]

_TRANSIENT = ("too many requests", "quota", "rate limit", "resource_exhausted", "resource exhausted",
              "internal error", "backend error", "unavailable", "deadline", "timed out", "timeout",
              "connection reset", "temporarily")
_TRANSIENT_CODE = re.compile(r"\b(429|500|502|503|504)\b")


class CredentialsError(SSMError, PermissionError):
    """Earth Engine credentials or project are missing or unusable (says which setting)."""


class EarthEngineError(SSMError, RuntimeError):
    """An Earth Engine call failed for good (after retries, or a permanent error)."""


def offline(project: str = "ssm-spark-offline") -> None:
    """Initialise earthengine-api without network or credentials (docs/pipeline.md, "1. Inputs"):
    the cloud API resource is not installed and the algorithm list is the one the package ships
    (``ee.apitestcase.GetAlgorithms``), so requests build and serialise but cannot run."""
    import ee
    import ee.apitestcase

    ee.data._install_cloud_api_resource = lambda: None
    ee.data.getAlgorithms = ee.apitestcase.GetAlgorithms
    ee.Initialize(None, "", project=project)


def is_transient(exc: BaseException) -> bool:
    """True for quota (HTTP 429) and transient server or network errors, worth retrying."""
    status = getattr(getattr(exc, "resp", None), "status", None) or getattr(exc, "status_code", None)
    if status is not None and (int(status) == 429 or 500 <= int(status) < 600):
        return True
    text = str(exc).lower()
    return bool(_TRANSIENT_CODE.search(text)) or any(k in text for k in _TRANSIENT)


def retry(call: Callable[[], Any], what: str, *, attempts: int = 4, backoff_s: float = 5.0,
          max_backoff_s: float = 300.0, sleep: Callable[[float], None] = time.sleep,
          rng: random.Random | None = None) -> Any:
    """``call()``, retried on transient errors with exponential backoff and jitter.

    Raises
    ------
    EarthEngineError
        A permanent error at once, or the last transient one after ``attempts`` tries; names ``what``.
    """
    rng = rng or random.Random(0)
    for i in range(1, attempts + 1):
        try:
            return call()
        except SSMError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified below
            if not is_transient(exc) or i == attempts:
                kind = "transient, gave up" if is_transient(exc) else "permanent"
                raise EarthEngineError(f"{what}: {exc} ({kind} after {i} attempt(s))") from exc
            wait = min(max_backoff_s, backoff_s * 2 ** (i - 1)) * (0.5 + rng.random())
            log.warning("%s: %s (transient; retry %d/%d in %.1f s)", what, str(exc)[:200], i, attempts - 1, wait)
            sleep(wait)
    raise AssertionError("unreachable")  # pragma: no cover


def _key_file(cfg: "EarthEngineConfig") -> tuple[str | None, str]:
    """The key file to use and where its name came from (the setting, not the contents)."""
    if cfg.credentials:
        return cfg.credentials, "earthengine.credentials"
    env = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if env:
        return env, "GOOGLE_APPLICATION_CREDENTIALS"
    return None, "default credentials"


def credentials(cfg: "EarthEngineConfig"):
    """Credentials for ``ee.Initialize``: a service-account key file, or None (earthengine-api's defaults).

    Raises
    ------
    CredentialsError
        The key file is missing, unreadable or not a service-account key (naming the setting and the
        path, never the contents).
    """
    path, origin = _key_file(cfg)
    if path is None:
        return None
    p = Path(path).expanduser()
    if not p.is_file():
        raise CredentialsError(f"Earth Engine key file {p} (from {origin}) not found; set earthengine.credentials "
                               "to a service-account key (JSON), or unset it to use the default credentials")
    try:
        info = json.loads(p.read_text())
        email = info["client_email"]
        if info.get("type") != "service_account" or "private_key" not in info:
            raise KeyError("type/private_key")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CredentialsError(f"Earth Engine key file {p} (from {origin}) is not a service-account key file "
                               f"(JSON with type, client_email, private_key): {type(exc).__name__}") from None
    import ee

    try:
        return ee.ServiceAccountCredentials(email, key_file=str(p))
    except Exception as exc:  # noqa: BLE001 - the library's message may quote the key: never shown
        raise CredentialsError(f"Earth Engine key file {p} (from {origin}): its private key cannot be loaded "
                               f"({type(exc).__name__}); download a new key for the service account") from None


class EEClient:
    """Live Earth Engine calls, each retried on quota and transient errors (:func:`retry`).

    Build with :meth:`connect` (credentials and ``ee.Initialize``). Tests subclass or replace it.
    """

    def __init__(self, cfg: "EarthEngineConfig", *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.cfg = cfg
        self.sleep = sleep

    @classmethod
    def connect(cls, cfg: "EarthEngineConfig") -> "EEClient":
        """Initialise earthengine-api with the configured credentials and project.

        Raises
        ------
        CredentialsError
            No project configured, an unusable key file, or default credentials not found.
        """
        try:
            import ee
        except ImportError as exc:  # pragma: no cover - installed by scripts/setup.sh
            raise ConfigError("earthengine-api is not installed (pip install -c requirements/constraints.txt "
                              "'.[ee]')") from exc
        if not cfg.project:
            raise CredentialsError("earthengine.project is not set: name the Google Cloud project with Earth Engine "
                                   "enabled (--set earthengine.project=my-project)")
        creds = credentials(cfg)
        _, origin = _key_file(cfg)
        try:
            ee.Initialize(creds, project=cfg.project)
        except Exception as exc:  # noqa: BLE001 - ee raises plain Exceptions for missing credentials
            msg = str(exc)
            if creds is None and ("credential" in msg.lower() or "authenticate" in msg.lower()):
                raise CredentialsError("Earth Engine default credentials not found: set earthengine.credentials "
                                       "(a service-account key file) or GOOGLE_APPLICATION_CREDENTIALS, or run "
                                       "'earthengine authenticate'") from None
            net = isinstance(exc, OSError) or "connection" in type(exc).__name__.lower() or "resolve" in msg.lower()
            why = ("cannot reach earthengine.googleapis.com (no network, or a proxy/firewall in the way?)" if net
                   else "are the credentials allowed to use Earth Engine in this project?")
            raise CredentialsError(f"Earth Engine initialisation for project {cfg.project!r} with {origin} failed "
                                   f"({type(exc).__name__}): {why}") from None
        log.info("Earth Engine initialised for project %s (%s)", cfg.project,
                 "service-account key" if creds is not None else "default credentials")
        return cls(cfg)

    def _retry(self, call: Callable[[], Any], what: str) -> Any:
        e = self.cfg.export
        return retry(call, what, attempts=e.max_attempts, backoff_s=e.backoff_seconds,
                     max_backoff_s=e.max_backoff_seconds, sleep=self.sleep)

    def get_info(self, obj: Any, what: str = "getInfo") -> Any:
        """``obj.getInfo()`` (a computed value: e.g. a sampled FeatureCollection)."""
        return self._retry(obj.getInfo, what)

    def start_task(self, task: Any, what: str = "start task") -> str:
        """Start an ``ee.batch.Task``; its id."""
        self._retry(task.start, what)
        return str(task.id)

    def task_status(self, task_id: str) -> dict:
        """``{"state", "error_message"?, "progress"?}`` of a task (``ee.data.getTaskStatus``)."""
        import ee

        st = self._retry(lambda: ee.data.getTaskStatus(task_id), f"status of task {task_id}")[0]
        return {"state": st.get("state", "UNKNOWN"), "error_message": st.get("error_message"),
                "progress": st.get("progress")}
