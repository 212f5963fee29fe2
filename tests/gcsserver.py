"""A real GCS emulator for the tests: fake-gcs-server (``-scheme http -backend memory``), a separate process on loopback.

The binary is built by ``scripts/setup.sh --test`` (step 4b) into ``~/.cache/ssm-spark/go/fake-gcs-server``
(or ``$SSM_FAKE_GCS``). It speaks GCS's JSON API (what gcsfs uses) and the XML-style ``/bucket/object``
reads GDAL's ``/vsigs/`` makes; it takes no credentials. :func:`serving` starts it on a free loopback
port, points ``STORAGE_EMULATOR_HOST`` (gcsfs) and GDAL's ``CPL_GS_ENDPOINT`` at it, and makes a bucket.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

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
        self.proc.terminate()
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(folder: Path, timeout: float = 30.0) -> GCSServer:
    """Start fake-gcs-server under ``folder``; raises RuntimeError (with its log) if it does not come up."""
    if not BINARY.is_file():
        raise FileNotFoundError(f"{BINARY}: the fake-gcs-server binary is missing; run bash scripts/setup.sh --test "
                                "(it builds it)")
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    log = folder / "fake-gcs-server.log"
    cmd = [str(BINARY), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port),
           "-public-host", f"127.0.0.1:{port}", "-external-url", f"http://127.0.0.1:{port}",
           "-backend", "memory", "-log-level", "warn"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=folder)
    srv = GCSServer(proc, f"http://127.0.0.1:{port}", log)
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"fake-gcs-server exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return srv
        except OSError:
            time.sleep(0.1)
    srv.stop()
    raise RuntimeError(f"fake-gcs-server did not listen on {port} within {timeout:.0f} s: {log.read_text()[-3000:]}")


@contextmanager
def serving(folder: Path, bucket: str) -> Iterator[GCSServer]:
    """A started emulator with ``bucket`` made, its address in ``os.environ`` while the block runs
    (restored after), stopped at the end."""
    from ssm_spark import storage

    srv = start(folder)
    saved = {k: os.environ.get(k) for k in srv.env()}
    os.environ.update(srv.env())
    try:
        storage.filesystem(f"gs://{bucket}").mkdir(bucket)
        yield srv
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        srv.stop()


def available() -> bool:
    return BINARY.is_file() and os.access(BINARY, os.X_OK)
