"""Writes that are whole or not at all: the one atomic writer of the library.

Every output (a file, a JSON document, a folder such as a registry or a Spark Parquet dataset)
is written under a temporary name beside its target and renamed over it, so a reader, a retried
or speculative Spark task, or a run killed part-way never sees half of it. One temporary-name
scheme serves every writer::

    .<target name>.<8 hex>.tmp

and the temporary is removed when the write fails. :func:`remove_temporaries` clears what a
killed process left behind (by the same scheme, so nothing else is touched).

A rename is atomic on one POSIX filesystem (and on the mounted paths Spark jobs use, e.g. a
Databricks ``/Volumes`` path). A folder replaces an existing folder in two renames (the old one
is moved aside first and removed after), so the target is briefly absent but never mixed.

JSON is strict: ``allow_nan=False``, so a NaN or an infinity is an error at the writer and never
a file that Python reads but other JSON parsers refuse. Convert missing values to ``None`` first
(:func:`ssm_spark.models.registry.to_jsonable` does so).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

__all__ = ["temp_path", "atomic_path", "atomic_dir", "write_bytes_atomic", "write_text_atomic",
           "write_json_atomic", "json_text", "remove_temporaries", "TEMP_RE"]

#: The one temporary-name scheme (see the module docstring); ``.old`` marks a replaced folder
#: waiting to be removed.
TEMP_RE = re.compile(r"^\..+\.[0-9a-f]{8}\.(tmp|old)$")


def temp_path(path: os.PathLike | str, kind: str = "tmp") -> Path:
    """A fresh temporary name beside ``path``: ``.<name>.<8 hex>.tmp`` (or ``.old``)."""
    path = Path(path)
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.{kind}")


def _remove(p: Path) -> None:
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


@contextmanager
def atomic_path(path: os.PathLike | str, mode: int | None = None) -> Iterator[Path]:
    """Yield a temporary file name beside ``path``; rename it over ``path`` when the block succeeds.

    The caller writes the temporary (with any library: rasterio, pyarrow, matplotlib); a failed
    block removes it and leaves ``path`` as it was. GDAL-based writers must name their driver,
    since the temporary name ends in ``.tmp``. ``mode`` sets the file's permission bits before
    the rename (temporaries from :mod:`tempfile` would be 0600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise


@contextmanager
def atomic_dir(path: os.PathLike | str) -> Iterator[Path]:
    """Yield a temporary folder name beside ``path``; it replaces ``path`` when the block succeeds.

    The folder itself is not created (Spark's writers want to create it); create it in the block
    if you write into it yourself. A previous folder (or file) at ``path`` is moved aside and
    removed only after the new one is in place.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_path(path)
    try:
        yield tmp
        old = None
        if path.exists() or path.is_symlink():
            old = temp_path(path, "old")
            os.replace(path, old)
        os.replace(tmp, path)
    except BaseException:
        _remove(tmp)
        raise
    if old is not None:
        _remove(old)


def write_bytes_atomic(path: os.PathLike | str, data: bytes, mode: int | None = None) -> int:
    """Write ``data`` to ``path`` atomically; the number of bytes written."""
    with atomic_path(path, mode=mode) as tmp:
        tmp.write_bytes(data)
    return len(data)


def write_text_atomic(path: os.PathLike | str, text: str, mode: int | None = None) -> int:
    """Write ``text`` (UTF-8) to ``path`` atomically; the number of bytes written."""
    return write_bytes_atomic(path, text.encode("utf-8"), mode=mode)


def json_text(data: Any, indent: int | None = 2, sort_keys: bool = False,
              default: Callable[[Any], Any] | None = None) -> str:
    """Strict JSON text (``allow_nan=False``) with a final newline, as every JSON file here is written."""
    return json.dumps(data, indent=indent, sort_keys=sort_keys, default=default, allow_nan=False) + "\n"


def write_json_atomic(path: os.PathLike | str, data: Any, indent: int | None = 2, sort_keys: bool = False,
                      default: Callable[[Any], Any] | None = None) -> int:
    """Write ``data`` as strict JSON (no NaN, no infinity) to ``path`` atomically; bytes written.

    Raises
    ------
    ValueError
        When ``data`` holds a NaN or an infinity (nothing is written).
    TypeError
        When ``data`` holds a value JSON cannot represent and ``default`` does not convert it.
    """
    return write_text_atomic(path, json_text(data, indent=indent, sort_keys=sort_keys, default=default))


def remove_temporaries(folder: os.PathLike | str, recursive: bool = False) -> int:
    """Remove what interrupted writers left in ``folder`` (names of :data:`TEMP_RE` only); how many."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    entries = folder.rglob(".*") if recursive else folder.glob(".*")
    n = 0
    for p in sorted(entries, key=lambda q: len(q.parts), reverse=True):
        if TEMP_RE.match(p.name) and (p.exists() or p.is_symlink()):
            _remove(p)
            n += 1
    return n
