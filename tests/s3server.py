"""A real S3-compatible server for the tests: SeaweedFS (``weed server -s3``), a separate process on loopback.

The binary is built by ``scripts/setup.sh`` (step 4) into ``~/.cache/ssm-spark/go/weed`` (or
``$SSM_WEED``). :func:`start` runs master, volume, filer and S3 gateway on free loopback ports in a
temporary folder, with one identity whose keys are made up per run, and waits for the gateway.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import subprocess
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import emulator

WEED = Path(os.environ.get("SSM_WEED", Path.home() / ".cache" / "ssm-spark" / "go" / "weed"))


@dataclass
class S3Server:
    proc: subprocess.Popen
    endpoint: str
    access_key: str
    secret_key: str
    log: Path

    def env(self) -> dict[str, str]:
        """Its keys and endpoint, and GDAL's settings for this endpoint (so a value an earlier server
        left in the environment is replaced, in this process and in the jobs a test starts)."""
        from ssm_spark.storage import gdal_env

        base = {"AWS_ACCESS_KEY_ID": self.access_key, "AWS_SECRET_ACCESS_KEY": self.secret_key,
                "AWS_ENDPOINT_URL_S3": self.endpoint, "AWS_REGION": "us-east-1", "AWS_DEFAULT_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true"}
        return {**base, **gdal_env(base)}

    def stop(self) -> None:
        emulator.stop(self.proc)


def _free_ports(n: int) -> list[int]:
    """``n`` free loopback ports p whose p + 10000 (SeaweedFS's gRPC port) is free too."""
    out: list[int] = []
    while len(out) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            p = s.getsockname()[1]
        if p + 10000 > 65535 or p in out:
            continue
        try:
            with socket.socket() as s:
                s.bind(("127.0.0.1", p + 10000))
        except OSError:
            continue
        out.append(p)
    return out


def start(folder: Path, timeout: float = 60.0) -> S3Server:
    """Start SeaweedFS with its S3 gateway under ``folder``; raises RuntimeError (with its log) if it does not come up."""
    if not WEED.is_file():
        raise FileNotFoundError(f"{WEED}: the SeaweedFS binary is missing; run bash scripts/setup.sh (it builds it)")
    folder.mkdir(parents=True, exist_ok=True)
    ak, sk = "test" + secrets.token_hex(6), secrets.token_hex(20)
    cfg = folder / "s3.json"
    cfg.write_text(json.dumps({"identities": [{"name": "tester", "credentials": [{"accessKey": ak, "secretKey": sk}],
                                               "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}))
    master, volume, filer, s3 = _free_ports(4)
    data = folder / "data"
    data.mkdir(exist_ok=True)
    log = folder / "weed.log"
    cmd = [str(WEED), "server", f"-dir={data}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
           f"-master.port={master}", "-master.volumeSizeLimitMB=64", f"-volume.port={volume}", "-volume.max=20",
           "-filer", f"-filer.port={filer}", "-s3", f"-s3.port={s3}", f"-s3.config={cfg}"]
    proc = subprocess.Popen(cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, cwd=folder)
    emulator.wait_listening(proc, s3, log, "weed (the S3 gateway)", timeout, poll=0.3)
    return S3Server(proc, f"http://127.0.0.1:{s3}", ak, sk, log)


@contextmanager
def serving(folder: Path, bucket: str, *, kill: bool = False) -> Iterator[S3Server]:
    """A started server with ``bucket`` made, its keys in ``os.environ`` while the block runs (restored
    after), stopped at the end (``kill``: at once, its data thrown away; else :meth:`S3Server.stop`)."""
    from ssm_spark import storage

    srv = start(folder)
    try:
        with emulator.environ(srv.env()):
            _make_bucket(storage.filesystem(f"s3://{bucket}"), bucket)
            yield srv
    finally:
        if kill:  # no graceful stop (5 s and more)
            srv.proc.kill()
            srv.proc.wait(10)
        else:
            srv.stop()


def _make_bucket(fs, bucket: str) -> None:
    for attempt in range(60):  # the gateway listens before the filer behind it is ready
        try:
            fs.mkdir(bucket)
            return
        except Exception:  # noqa: BLE001 - retried, the last one raised
            if attempt == 59:
                raise
            time.sleep(0.5)


def available() -> bool:
    return WEED.is_file() and shutil.which(str(WEED)) is not None
