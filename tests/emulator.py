"""What the tests' store servers share (SeaweedFS ``s3server``, fake-gcs-server ``gcsserver``, Azurite
``azurite``): a free loopback port, waiting for a started process to listen, stopping it, and its
settings in ``os.environ`` for the length of a block; runs racing for a store's lock; and executors
given a secret the store refuses."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen) -> None:
    """Terminate, and kill if it has not ended within 5 s (a graceful stop can take 20 s; its data are thrown away)."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def wait_listening(proc: subprocess.Popen, port: int, log: Path, name: str, timeout: float, poll: float = 0.1) -> None:
    """Return once ``proc`` listens on loopback ``port``; RuntimeError with the end of its log if it exits
    first or does not listen within ``timeout`` (then it is stopped)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}: {log.read_text()[-3000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(poll)
    stop(proc)
    raise RuntimeError(f"{name} did not listen on {port} within {timeout:.0f} s: {log.read_text()[-3000:]}")


@contextmanager
def environ(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` in ``os.environ`` while the block runs; the previous values (or their absence) restored after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def race_lock(url: str, n: int, conditional: bool) -> list:
    """``n`` runs taking the lock of ``url`` at once: the ones that got it (the others refused, naming it)."""
    import concurrent.futures as cf
    import threading

    from ssm_spark.errors import InputError
    from ssm_spark.storage import RemoteLock

    barrier = threading.Barrier(n)

    def take(i):
        lk = RemoteLock(url, f"run {i}", conditional=conditional)
        barrier.wait()
        try:
            return lk.acquire()
        except InputError as exc:
            assert "is in use by another run" in str(exc)
            return None

    with cf.ThreadPoolExecutor(n) as ex:
        return [g for g in ex.map(take, range(n)) if g is not None]


@contextmanager
def executors_with_a_wrong_secret(spark, monkeypatch) -> Iterator[None]:
    """While the block runs, the local Python workers get the store's settings with a secret it refuses
    (a cluster whose executors lack the store's credentials); after it, the driver's settings again."""
    from ssm_spark import spark as S

    share = S.share_store_environment

    def wrong_secret(spark_):
        share(spark_)
        spark_.sparkContext.environment["AWS_SECRET_ACCESS_KEY"] = "not-the-secret"

    monkeypatch.setattr(S, "share_store_environment", wrong_secret)
    try:
        yield
    finally:
        monkeypatch.setattr(S, "share_store_environment", share)
        share(spark)  # the workers' environment the driver's again
