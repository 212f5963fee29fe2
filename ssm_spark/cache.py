"""The local copies of published outputs (:func:`ssm_spark.storage.local_copy`): where, in use by whom, pruned how.

Layout, under :func:`cache_dir` (``SSM_CACHE_DIR``, else ``~/.cache/ssm-spark/remote``)::

    <key>/<name>          one whole published version (a folder or a file); <key>: the digest of its
                          URL and its marker (a single object: its ETag)
    <key>/.copy.json      its URL and size; the file's modification time is the copy's last use
    <key>/.in-use         a lock file: each process handed the copy (or downloading it) holds a shared
                          ``flock`` on it until it exits
    .trash/               copies being removed: renamed here first, then deleted

**Pruning** (:func:`prune`; after each new download :func:`ssm_spark.storage.local_copy` prunes the
versions of the URL it fetched; ``ssm-spark cache prune`` prunes all): per URL the
``SSM_CACHE_KEEP`` (default 2) most recently used versions are kept; with ``SSM_CACHE_MAX_GB`` set,
the least recently used copies are then removed until the cache fits (the newest version of a
URL included). **A copy in use is never removed**: removal takes an exclusive ``flock`` on its
``.in-use`` without waiting (refused while any process holds it shared: the copy is kept and
counted ``in_use``), renames the folder into ``.trash/`` while holding it, then deletes it. A
process that asks for the copy at that moment waits on its shared lock, finds the folder moved and
downloads it anew. So a long-running ``serve`` or ``watch`` keeps every version it was handed until
it exits, and the process that just verified a version keeps it. Copies made before pruning
existed have no ``.copy.json``: their URL is unknown, so only the size bound (or ``rm``) removes them.

The locks are POSIX ``flock``: a cache folder on a local filesystem (NFS's emulation of ``flock``
is not relied on). Documented in docs/object_storage.md, section 5.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from ssm_spark.errors import ConfigError, InputIOError
from ssm_spark.io import write_json_atomic

log = logging.getLogger(__name__)

__all__ = ["cache_dir", "hold", "record", "entries", "prune", "keep_versions", "max_bytes", "Copy", "RECORD",
           "IN_USE", "TRASH"]

RECORD, IN_USE, TRASH = ".copy.json", ".in-use", ".trash"
KEEP_ENV, MAX_GB_ENV = "SSM_CACHE_KEEP", "SSM_CACHE_MAX_GB"

#: This process's shared locks: copy folder -> the open lock file (held until the process exits).
_HELD: dict[str, int] = {}


def cache_dir() -> Path:
    """Where :func:`ssm_spark.storage.local_copy` keeps its copies: ``SSM_CACHE_DIR``, else
    ``~/.cache/ssm-spark/remote``."""
    return Path(os.environ.get("SSM_CACHE_DIR") or Path.home() / ".cache" / "ssm-spark" / "remote")


def keep_versions() -> int:
    """``SSM_CACHE_KEEP``: how many versions of each URL pruning keeps (default 2, at least 1)."""
    raw = os.environ.get(KEEP_ENV, "2")
    try:
        n = int(raw)
    except ValueError:
        n = 0
    if n < 1:
        raise ConfigError(f"{KEEP_ENV}={raw!r}: expected a whole number of versions kept per URL, at least 1")
    return n


def max_bytes() -> int | None:
    """``SSM_CACHE_MAX_GB`` in bytes (GiB); None when unset (no size bound)."""
    raw = os.environ.get(MAX_GB_ENV)
    if raw in (None, ""):
        return None
    try:
        gb = float(raw)
    except ValueError:
        gb = -1.0
    if not gb >= 0:
        raise ConfigError(f"{MAX_GB_ENV}={raw!r}: expected the cache's size bound in GiB (a number >= 0)")
    return int(gb * 2 ** 30)


def hold(folder: Path) -> None:
    """Take (or keep) this process's shared lock on a copy's folder, creating the folder if needed.

    Called before the copy is looked at or downloaded: :func:`prune` never removes a held copy. If
    a pruner moved the folder away while this process waited for the lock, the folder is made anew
    (the caller then finds no copy and downloads one).
    """
    key = str(folder)
    if key in _HELD:
        return
    for _ in range(5):
        folder.mkdir(parents=True, exist_ok=True)
        lock = folder / IN_USE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:  # the folder was moved away between mkdir and open
            continue
        fcntl.flock(fd, fcntl.LOCK_SH)  # waits only while a pruner is moving the folder away
        try:
            same = os.stat(lock).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            _HELD[key] = fd
            return
        os.close(fd)  # moved to the trash meanwhile: a new folder
    raise InputIOError(f"{folder}: could not lock the cached copy (it keeps being removed by a pruning process); "
                       "retry, or set SSM_CACHE_DIR to another folder")


def touch(folder: Path) -> None:
    """Mark the copy used now (its record's modification time)."""
    try:
        os.utime(folder / RECORD)
    except FileNotFoundError:
        pass


def record(folder: Path, url: str, name: str) -> None:
    """Write the copy's ``.copy.json`` (after the copy is in place)."""
    write_json_atomic(folder / RECORD, {"url": url, "name": name, "bytes": _size(folder / name),
                                        "fetched_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})


def _size(p: Path) -> int:
    if p.is_file():
        return p.stat().st_size
    return sum(q.stat().st_size for q in p.rglob("*") if q.is_file()) if p.is_dir() else 0


def _in_use(folder: Path) -> bool:
    """Whether any process (this one included) holds the copy's lock."""
    try:
        fd = os.open(folder / IN_USE, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a lock it got


@dataclass
class Copy:
    """One cached copy (a folder under :func:`cache_dir`)."""

    key: str
    url: str | None  # None: made before copies were recorded (or its download never finished)
    name: str | None
    bytes: int
    last_used: float  # seconds since the epoch
    in_use: bool
    complete: bool  # the copy itself is there (not only a download's leftovers)

    def describe(self) -> dict:
        d = asdict(self)
        d["last_used_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.last_used))
        return d


def entries(root: Path | None = None) -> list[Copy]:
    """Every copy in the cache, most recently used first."""
    root = cache_dir() if root is None else root
    out = []
    for d in sorted(root.iterdir()) if root.is_dir() else []:
        if not d.is_dir() or d.name.startswith("."):
            continue
        rec = d / RECORD
        try:
            info = json.loads(rec.read_text())
            url, name, last = info.get("url"), info.get("name"), rec.stat().st_mtime
        except (OSError, ValueError):
            info, url, last = {}, None, d.stat().st_mtime
            names = [q.name for q in d.iterdir() if not q.name.startswith(".")]
            name = names[0] if len(names) == 1 else None
        complete = name is not None and (d / name).exists()
        out.append(Copy(d.name, url, name, _size(d), last, _in_use(d), complete))
    return sorted(out, key=lambda c: (-c.last_used, c.key))


def _remove(root: Path, c: Copy) -> bool:
    """Move a copy into the trash (under its exclusive lock) and delete it; False when it is in use."""
    folder = root / c.key
    fd = None
    try:
        fd = os.open(folder / IN_USE, os.O_RDWR)
    except FileNotFoundError:
        pass  # no lock file: no process was ever handed it through this version
    try:
        if fd is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
        trash = root / TRASH
        trash.mkdir(exist_ok=True)
        dest = trash / f"{c.key}.{uuid.uuid4().hex[:8]}"
        try:
            os.rename(folder, dest)
        except FileNotFoundError:
            return False  # another pruner took it
    finally:
        if fd is not None:
            os.close(fd)
    shutil.rmtree(dest, ignore_errors=True)
    return True


def prune(*, keep: int | None = None, max_bytes_: int | None = None, url: str | None = None,
          dry_run: bool = False, root: Path | None = None) -> dict:
    """Prune the cache (see the module docstring); returns what was removed and kept.

    Parameters
    ----------
    keep : int, optional
        Versions kept per URL (default :func:`keep_versions`).
    max_bytes_ : int, optional
        The cache's size bound (default :func:`max_bytes`; None: none).
    url : str, optional
        Only this URL's versions under ``keep`` (the size bound, when set, still covers the whole cache).
    dry_run : bool
        Say what would be removed; remove nothing.

    Raises
    ------
    ConfigError
        A bad ``SSM_CACHE_KEEP`` or ``SSM_CACHE_MAX_GB``.
    """
    root = cache_dir() if root is None else root
    keep = keep_versions() if keep is None else keep
    if keep < 1:
        raise ConfigError(f"keep={keep}: at least one version per URL is kept")
    bound = max_bytes() if max_bytes_ is None else max_bytes_
    if not dry_run and (root / TRASH).is_dir():  # what a killed pruner left
        shutil.rmtree(root / TRASH, ignore_errors=True)
    found = entries(root)
    doomed: list[tuple[Copy, str]] = []
    seen: dict[str | None, int] = {}
    for c in found:  # most recently used first
        if c.url is None:
            if not c.complete and not c.in_use:
                doomed.append((c, "an unfinished download"))
            continue
        seen[c.url] = seen.get(c.url, 0) + 1
        if seen[c.url] > keep and (url is None or c.url == url):
            doomed.append((c, f"older than the {keep} most recently used version(s) of {c.url}"))
    chosen = {c.key for c, _ in doomed}
    in_use: list[str] = []
    if bound is not None:
        total = sum(c.bytes for c in found if c.key not in chosen)
        for c in reversed(found):  # least recently used first
            if total <= bound:
                break
            if c.key in chosen:
                continue
            if c.in_use:
                in_use.append(c.key)
                continue
            doomed.append((c, f"the cache is over the size bound ({total / 2 ** 30:.3f} GiB > {bound / 2 ** 30:g})"))
            chosen.add(c.key)
            total -= c.bytes
    removed = []
    for c, why in doomed:
        if c.in_use or (not dry_run and not _remove(root, c)):
            in_use.append(c.key)
            continue
        removed.append({"key": c.key, "url": c.url, "bytes": c.bytes, "why": why})
        log.info("cache: %s %s (%s, %.1f MB): %s", "would remove" if dry_run else "removed", c.key, c.url or "?",
                 c.bytes / 1e6, why)
    if in_use:
        log.info("cache: %d copy(ies) kept, in use by a running process: %s", len(in_use), ", ".join(in_use))
    left = sum(c.bytes for c in found) - sum(r["bytes"] for r in removed)
    if bound is not None and left > bound:
        log.warning("cache: %s holds %.3f GiB, over %s=%g: the rest is in use by running processes",
                    root, left / 2 ** 30, MAX_GB_ENV, bound / 2 ** 30)
    return {"cache": str(root), "removed": removed, "kept_in_use": in_use, "dry_run": dry_run,
            "freed_bytes": sum(r["bytes"] for r in removed), "bytes": left, "copies": len(found) - len(removed)}
