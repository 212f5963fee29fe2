"""A real Azure Blob emulator for the tests: Azurite's Blob service (``azurite-blob``), a separate process on loopback.

Installed by ``scripts/setup.sh --test`` (step 4b, from npm) into ``~/.cache/ssm-spark/azurite`` (or
``$SSM_AZURITE_DIR``). It serves Azure's Blob API only (no ADLS Gen2 DFS endpoint): adlfs talks the
Blob API for ``abfss://`` and ``az://`` alike, and GDAL reads through ``/vsiaz/`` because the
connection string names a ``BlobEndpoint`` (:func:`ssm_spark.storage.azure_blob_api`). :func:`serving`
starts it on a free loopback port with one account whose name and key are made up per run
(``AZURITE_ACCOUNTS``), in memory, telemetry off, and puts its connection string in
``AZURE_STORAGE_CONNECTION_STRING`` (read by adlfs and GDAL both).
"""

from __future__ import annotations

import base64
import os
import secrets
import subprocess
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import emulator

HOME = Path(os.environ.get("SSM_AZURITE_DIR", Path.home() / ".cache" / "ssm-spark" / "azurite"))
BINARY = HOME / "node_modules" / ".bin" / "azurite-blob"


@dataclass
class AzuriteServer:
    proc: subprocess.Popen
    endpoint: str  # the Blob endpoint: http://127.0.0.1:PORT/ACCOUNT
    account: str
    key: str
    log: Path

    @property
    def connection_string(self) -> str:
        return (f"DefaultEndpointsProtocol=http;AccountName={self.account};AccountKey={self.key};"
                f"BlobEndpoint={self.endpoint};")

    def env(self) -> dict[str, str]:
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}

    def stop(self) -> None:
        emulator.stop(self.proc)


def start(folder: Path, timeout: float = 60.0) -> AzuriteServer:
    """Start Azurite's Blob service under ``folder``; raises RuntimeError (with its log) if it does not come up."""
    if not BINARY.is_file():
        raise FileNotFoundError(f"{BINARY}: Azurite is missing; run bash scripts/setup.sh --test (it installs it)")
    folder.mkdir(parents=True, exist_ok=True)
    port = emulator.free_port()
    account = "ssm" + secrets.token_hex(4)
    key = base64.b64encode(secrets.token_bytes(32)).decode()
    log = folder / "azurite.log"
    cmd = [str(BINARY), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--inMemoryPersistence",
           "--disableTelemetry", "--skipApiVersionCheck", "--silent"]
    # --skipApiVersionCheck: the pinned azure-storage-blob may speak an API version newer than this Azurite knows
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=folder,
                            env={**os.environ, "AZURITE_ACCOUNTS": f"{account}:{key}"})
    srv = AzuriteServer(proc, f"http://127.0.0.1:{port}/{account}", account, key, log)
    emulator.wait_listening(proc, port, log, "azurite-blob", timeout)
    return srv


@contextmanager
def serving(folder: Path, container: str) -> Iterator[AzuriteServer]:
    """A started Azurite with ``container`` made, its connection string in ``os.environ`` while the block
    runs (restored after), stopped at the end."""
    from ssm_spark import storage

    srv = start(folder)
    try:
        with emulator.environ(srv.env()):
            storage.filesystem(f"az://{container}").mkdir(container)
            yield srv
    finally:
        srv.stop()


def available() -> bool:
    return BINARY.is_file()
