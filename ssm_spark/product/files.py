"""The product's output folder: checked writable before any work, and locked for the run.

(Every file in it is written whole or not at all, through :mod:`ssm_spark.io` and
:func:`ssm_spark.parquet.write_parquet_file`.)
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

__all__ = ["ensure_writable", "OutputLock", "LOCK", "stale_after_s", "holder_text"]


# ---------------------------------------------------------------------------------- output folder

LOCK = "_LOCK.json"
#: A lock whose holder has not refreshed it for this long is stale (the holder was killed, or
#: runs on a machine that cannot be asked); the holder refreshes it every HEARTBEAT_S.
STALE_AFTER_S = 120.0
HEARTBEAT_S = 20.0


def stale_after_s() -> float:
    """The age after which a lock not refreshed is stale: ``SSM_LOCK_STALE_S`` (seconds), else :data:`STALE_AFTER_S`.

    Raises
    ------
    ConfigError
        ``SSM_LOCK_STALE_S`` not a number, or not above :data:`HEARTBEAT_S` (a live holder's lock would
        be taken as stale between two refreshes).
    """
    from ssm_spark.errors import ConfigError

    raw = os.environ.get("SSM_LOCK_STALE_S")
    if not raw:
        return STALE_AFTER_S
    try:
        value = float(raw)
    except ValueError:
        raise ConfigError(f"SSM_LOCK_STALE_S={raw!r}: expected a number of seconds") from None
    if not value > HEARTBEAT_S * 2:
        raise ConfigError(f"SSM_LOCK_STALE_S={raw!r}: must exceed {2 * HEARTBEAT_S:.0f} s (twice the holder's "
                          f"refresh period, {HEARTBEAT_S:.0f} s), else a live run's lock would be taken as stale")
    return value


def holder_text(held: dict) -> str:
    """The holder of a lock, as the refusals name it: job, pid, host, start, command."""
    return (f"{held.get('job', 'run')}: pid {held.get('pid')} on {held.get('host')}, started "
            f"{held.get('started_utc')} ({held.get('command', '?')})")


def ensure_writable(folder: Path, what: str = "--output") -> Path:
    """Create ``folder`` (and parents) and check that files can be written in it.

    Raises
    ------
    InputIOError
        Naming the folder and the system's reason (permission, read-only filesystem, a file in
        the way, disk full), before any work is done.
    """
    import errno

    from ssm_spark.errors import InputIOError

    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test-{uuid.uuid4().hex[:8]}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        hint = {errno.EACCES: "choose a folder you may write to", errno.EPERM: "choose a folder you may write to",
                errno.EROFS: "the filesystem is read-only", errno.ENOSPC: "the disk is full",
                errno.EEXIST: "a file of that name is in the way", errno.ENOTDIR: "a file is in the way"}
        raise InputIOError(f"{what} {folder}: cannot write there ({exc.strerror or exc}); "
                           f"{hint.get(exc.errno, 'check the path')}") from exc
    return folder


def _holder_alive(info: dict) -> bool:
    import socket

    if info.get("host") != socket.gethostname():
        return True  # cannot ask another machine: only the heartbeat tells
    try:
        os.kill(int(info.get("pid", -1)), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, TypeError):
        return True
    return True


class OutputLock:
    """An exclusive lock on an output folder (``_LOCK.json``: pid, host, start, command).

    Taken with ``O_EXCL``; refreshed every :data:`HEARTBEAT_S` by a daemon thread. A second run
    is refused with the holder named while the holder lives; a lock left by a killed run (its pid
    gone on this host, or not refreshed for :func:`stale_after_s`) is taken over, with a warning;
    ``break_lock`` (``--break-lock``) takes over a lock whose holder cannot be asked (another host)
    but is known to be gone. The object-store lock (:class:`ssm_spark.product.remote.RemoteLock`)
    follows the same rules.
    """

    def __init__(self, folder: Path, what: str = "produce", *, stale_after: float | None = None,
                 break_lock: bool = False) -> None:
        self.path = Path(folder) / LOCK
        self.what = what
        self.stale_after = stale_after_s() if stale_after is None else float(stale_after)
        self.break_lock = break_lock
        self._stop = None
        self._thread = None
        self.token = uuid.uuid4().hex

    def acquire(self) -> "OutputLock":
        import json
        import logging
        import socket
        import sys
        import threading
        import time

        from ssm_spark.errors import InputError

        log = logging.getLogger(__name__)
        info = {"pid": os.getpid(), "host": socket.gethostname(), "job": self.what, "token": self.token,
                "started_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "command": " ".join(sys.argv)}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    held = json.loads(self.path.read_text())
                    age = time.time() - self.path.stat().st_mtime
                except (OSError, ValueError):
                    held, age = {}, self.stale_after + 1  # half-written or vanished: treat as stale
                if age <= self.stale_after and _holder_alive(held) and not self.break_lock:
                    raise InputError(
                        f"{self.path.parent} is in use by another {holder_text(held)}; lock {self.path}; wait for "
                        f"it to end, or write elsewhere (a lock left by a killed run expires {self.stale_after:.0f} s "
                        f"after its last refresh, SSM_LOCK_STALE_S; --break-lock takes it over, only if that run "
                        f"is gone)")
                log.warning("%s: taking over a %s lock (pid %s on %s, last refreshed %.0f s ago)", self.path,
                            "stale" if age > self.stale_after or not _holder_alive(held) else "live (--break-lock)",
                            held.get("pid"), held.get("host"), age)
                try:
                    self.path.unlink()
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(info, fh)
            break
        else:
            raise InputError(f"{self.path}: could not take the output folder's lock (contended)")
        self._stop = threading.Event()

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_S):
                try:
                    os.utime(self.path)
                except OSError:
                    pass

        self._thread = threading.Thread(target=beat, name="output-lock", daemon=True)
        self._thread.start()
        return self

    def release(self) -> None:
        import json

        if self._stop is not None:
            self._stop.set()
        try:
            if json.loads(self.path.read_text()).get("token") == self.token:
                self.path.unlink()
        except (OSError, ValueError):
            pass

    def __enter__(self) -> "OutputLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
