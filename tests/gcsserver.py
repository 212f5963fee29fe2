"""A real GCS emulator for the tests: fake-gcs-server (``-scheme http -backend memory``), a separate process on loopback.

The binary is built by ``scripts/setup.sh --test`` (step 4b) into ``~/.cache/ssm-spark/go/fake-gcs-server``
(or ``$SSM_FAKE_GCS``). It speaks GCS's JSON API (what gcsfs uses) and the XML-style ``/bucket/object``
reads GDAL's ``/vsigs/`` makes; it takes no credentials. :func:`serving` starts it on a free loopback
port, points ``STORAGE_EMULATOR_HOST`` (gcsfs) and GDAL's ``CPL_GS_ENDPOINT`` at it, and makes a bucket.
"""

from __future__ import annotations

import os
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import emulator

BINARY = Path(os.environ.get("SSM_FAKE_GCS", Path.home() / ".cache" / "ssm-spark" / "go" / "fake-gcs-server"))


@dataclass
class GCSServer:
    proc: subprocess.Popen
    endpoint: str
    log: Path

    def env(self) -> dict[str, str]:
        """The emulator's address and GDAL's settings for it (replacing what an earlier server left)."""
        from ssm_spark.storage import gdal_env

        base = {"STORAGE_EMULATOR_HOST": self.endpoint}
        return {**base, **gdal_env(base)}

    def stop(self) -> None:
        emulator.stop(self.proc)


def start(folder: Path, timeout: float = 30.0) -> GCSServer:
    """Start fake-gcs-server under ``folder``; raises RuntimeError (with its log) if it does not come up."""
    if not BINARY.is_file():
        raise FileNotFoundError(f"{BINARY}: the fake-gcs-server binary is missing; run bash scripts/setup.sh --test "
                                "(it builds it)")
    folder.mkdir(parents=True, exist_ok=True)
    port = emulator.free_port()
    log = folder / "fake-gcs-server.log"
    cmd = [str(BINARY), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
           "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}",
           "-backend", "memory", "-log-level", "warn"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=folder)
    srv = GCSServer(proc, f"http://127.0.0.1:{port}", log)
    emulator.wait_listening(proc, port, log, "fake-gcs-server", timeout)
    return srv


@contextmanager
def serving(folder: Path, bucket: str) -> Iterator[GCSServer]:
    """A started emulator with ``bucket`` made, its address in ``os.environ`` while the block runs
    (restored after), stopped at the end."""
    from ssm_spark import storage

    srv = start(folder)
    try:
        with emulator.environ(srv.env()):
            storage.filesystem(f"gs://{bucket}").mkdir(bucket)
            yield srv
    finally:
        srv.stop()


def available() -> bool:
    return BINARY.is_file() and os.access(BINARY, os.X_OK)
