"""A Spark DataFrame written as a Parquet dataset to an object store, with no folder shared by driver and executors.

:func:`ssm_spark.parquet.write_parquet_atomic` has Spark write the dataset into a local folder and
renames it into place; on a store (``s3://``; ``gs://``, ``abfss://`` by the same fsspec calls) a URL
output used to be written by Spark into the driver's local staging folder and published from there,
which executors on other machines cannot reach. Here the store itself is the staging area, as for
the product's tiles (:mod:`ssm_spark.product.remote`), and Hadoop's S3A is not needed:

- **the executors** (one ``mapInArrow`` task per partition of the DataFrame) write their
  partition's rows with pyarrow into a temporary folder of their own (``tempfile.mkdtemp()``,
  removed in a ``finally``): one zstd (level 3, Spark's) file per value of the partition columns,
  ``<col>=<value>/part-<partition index, 5 digits>.parquet``, or ``part-<index>.parquet`` without
  partitioning; rows in the task's order (a stable split by the partition columns, the order
  Spark's own partitioned writer gives), every column nullable as in Spark's files, the partition
  columns left out of the files and named by the folders. Each file is PUT under the run's
  *staging prefix* ``<url>/_staging/<8 hex>/`` with :func:`ssm_spark.storage.filesystem` and the
  executor's own environment (nothing of the credentials in a task's closure; in local mode the
  driver's store settings are passed to the workers, :func:`ssm_spark.spark.share_store_environment`).
  One PUT is atomic per object, and a retried task PUTs the same rows to the same key. Each task
  returns one summary per file: key, size, rows, MD5 of its bytes, and optional counts
  (``stats``: a picklable function of the file's Arrow table giving ints, summed on the driver, or
  lists, merged as sets), so the driver needs no second pass over the data for its counts.
- **the driver** lists the staging prefix once and checks it against the summaries (an object
  missing, of another size, or whose ETag is an MD5 other than the task's fails the write, naming
  it), then publishes under the URL's lock (:class:`ssm_spark.storage.RemoteLock`, held from
  before the job to the end, so a second writer is refused at once): the old ``_PUBLISHED.json``
  deleted, every staged object copied server-side to its final key (:func:`ssm_spark.storage.copy`,
  8 at a time), objects under the URL the new version does not have deleted (an older version's
  files, a dead run's ``_staging/``), the marker PUT last, in :func:`ssm_spark.storage.publish`'s
  format (every file's size and MD5, the MD5s the tasks'), so :func:`ssm_spark.storage.local_copy`
  and :func:`ssm_spark.storage.download` read it as any published folder. Then the staging prefix
  is deleted. A version whose files (sizes and MD5s) equal the published marker's rewrites nothing
  (the ``_staging/`` prefixes, its own and a killed run's, are deleted all the same).
- **a failure** before publishing (a task's PUT refused, a check failing, the job failing) deletes
  the staging prefix and leaves the published version as it was; an executor's store error is
  raised on the driver as the store's :class:`~ssm_spark.errors.InputIOError` naming the object.

The partition is held in memory (as Arrow) while its files are written: one Spark partition, as a
Python stage holds its batch. Column types are Arrow's from Spark's (the features and matchups
have none else): a timestamp column would be written as int64 microseconds (Spark's own writer
writes INT96 by default).
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

from ssm_spark import storage
from ssm_spark.errors import InputIOError

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from pyspark.sql import DataFrame

log = logging.getLogger(__name__)

__all__ = ["write_dataset", "STAGING", "SUMMARY"]

#: The runs' staging prefixes under the dataset's URL: ``<url>/_staging/<8 hex>/`` (never read as data).
STAGING = "_staging"
#: One row per file a task wrote: its key (relative to the dataset), size, rows, MD5, counts (JSON).
SUMMARY = "key string, size long, rows long, md5 string, stats string"
#: Server-side copies at once while publishing.
COPY_THREADS = 8
#: zstd level of the files: parquet-mr's default, the level of the files Spark writes locally.
ZSTD_LEVEL = 3
_PART = "part-{:05d}.parquet"
_SKIP = ("_LOCK.json", storage.PUBLISHED)
#: Spark's escaping of partition values in folder names (``ExternalCatalogUtils.escapePathName``).
_ESCAPE = set('"#%\'*/:=?\\\x7f{[]^') | {chr(i) for i in range(0x20)}


def _folder_value(col: str, value: Any) -> str:
    """``<col>=<value>`` as Spark names a partition's folder (a date as ``YYYY-MM-DD``)."""
    if value is None:
        raise ValueError(f"partition column {col!r} has a null value: no folder for it (Spark's "
                         "__HIVE_DEFAULT_PARTITION__ is not written here); fill or drop those rows")
    text = value.isoformat() if hasattr(value, "isoformat") else str(value)
    return f"{col}=" + "".join(f"%{ord(c):02X}" if c in _ESCAPE else c for c in text)


def _split(table: "pa.Table", partition_by: Sequence[str]) -> Iterator[tuple[str, "pa.Table"]]:
    """(folder, rows without the partition columns) per value of ``partition_by``, rows in their order."""
    import pyarrow.compute as pc

    if not partition_by:
        yield "", table
        return
    keys = table.select(list(partition_by)).group_by(list(partition_by)).aggregate([]).to_pylist()
    for key in sorted(keys, key=lambda k: [str(k[c]) for c in partition_by]):
        mask = None
        for c in partition_by:
            if key[c] is None:
                _folder_value(c, None)
            m = pc.equal(table[c], key[c])
            mask = m if mask is None else pc.and_(mask, m)
        folder = "/".join(_folder_value(c, key[c]) for c in partition_by)
        yield folder, table.filter(mask).drop_columns(list(partition_by))


def _nullable(table: "pa.Table") -> "pa.Table":
    """Every field nullable, as Spark writes its files (``asNullable``)."""
    import pyarrow as pa

    return table.cast(pa.schema([f.with_nullable(True) for f in table.schema], metadata=table.schema.metadata))


def _write_local(table: "pa.Table", path) -> tuple[int, str]:
    """One zstd Parquet file; (size, MD5 of its bytes)."""
    import hashlib

    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(_nullable(table), path, compression="zstd", compression_level=ZSTD_LEVEL, write_statistics=True)
    data = path.read_bytes()
    return len(data), hashlib.md5(data).hexdigest()  # noqa: S324 - the marker's integrity check, not security


def _stage_task(staging: str, partition_by: Sequence[str], stats: Callable | None) -> Callable:
    """The executors' function (``mapInArrow``): a partition's files written and PUT under ``staging``."""

    def run(batches: Iterator["pa.RecordBatch"]) -> Iterator["pa.RecordBatch"]:
        import shutil
        import tempfile
        from pathlib import Path

        import pyarrow as pa
        from pyspark import TaskContext

        batches = [b for b in batches if b.num_rows]
        if not batches:
            return
        index = TaskContext.get().partitionId()
        table = pa.Table.from_batches(batches)
        tmp = Path(tempfile.mkdtemp(prefix="ssm-dataset-"))
        out = []
        try:
            with storage.shared_filesystems():  # one client per Python worker, not one per task
                fs = storage.filesystem(staging)
            root = storage.fs_path(staging)
            for folder, part in _split(table, partition_by):
                rel = f"{folder}/{_PART.format(index)}" if folder else _PART.format(index)
                size, md5 = _write_local(part, tmp / rel)
                try:
                    fs.put_file(str(tmp / rel), f"{root}/{rel}")
                except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
                    raise storage.io_error(f"{staging}/{rel}", "write it from an executor (the store's settings and "
                                           "credentials must be in the executors' environment)", exc) from exc
                counts = stats(part if not partition_by else _with_keys(part, folder)) if stats else {}
                out.append({"key": rel, "size": size, "rows": part.num_rows, "md5": md5,
                            "stats": json.dumps(counts, default=str)})
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        yield pa.RecordBatch.from_pylist(out, schema=pa.schema([("key", pa.string()), ("size", pa.int64()),
                                                                 ("rows", pa.int64()), ("md5", pa.string()),
                                                                 ("stats", pa.string())]))

    return run


def _with_keys(part: "pa.Table", folder: str) -> "pa.Table":
    """A file's rows with its partition values as string columns (for ``stats`` that count by them)."""
    import pyarrow as pa

    for kv in folder.split("/"):
        k, v = kv.split("=", 1)
        part = part.append_column(k, pa.array([v] * part.num_rows, pa.string()))
    return part


def _merge(rows: Sequence[dict]) -> dict:
    """The tasks' counts: ints summed, lists merged as sets (sorted)."""
    out: dict[str, Any] = {}
    for r in rows:
        for k, v in json.loads(r["stats"]).items():
            if isinstance(v, list):
                out.setdefault(k, set()).update(v)
            else:
                out[k] = out.get(k, 0) + int(v)
    return {k: sorted(v, key=lambda x: (x is None, str(x))) if isinstance(v, set) else v for k, v in out.items()}


def _empty_file(df: "DataFrame", staging: str) -> dict:
    """A dataset of no rows, unpartitioned: one file with the schema (as Spark writes), PUT by the driver."""
    import shutil
    import tempfile
    from pathlib import Path

    from pyspark.sql.pandas.types import to_arrow_schema

    schema = to_arrow_schema(df.schema)
    tmp = Path(tempfile.mkdtemp(prefix="ssm-dataset-"))
    try:
        rel = _PART.format(0)
        size, md5 = _write_local(schema.empty_table(), tmp / rel)
        _call(staging, f"write {rel}", storage.filesystem(staging).put_file, str(tmp / rel),
              f"{storage.fs_path(staging)}/{rel}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"key": rel, "size": size, "rows": 0, "md5": md5, "stats": "{}"}


def _call(url: str, what: str, fn: Callable, *args) -> Any:
    try:
        return fn(*args)
    except FileNotFoundError:
        raise
    except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
        raise storage.io_error(url, what, exc) from exc


def _check_staged(staging: str, files: dict[str, dict]) -> None:
    """The staging prefix's listing against the tasks' summaries (key, size, an ETag that is an MD5)."""
    fs, root = storage.filesystem(staging), storage.fs_path(staging)
    try:
        found = _call(staging, "list it", lambda: fs.find(root, withdirs=False, detail=True))
    except FileNotFoundError:
        found = {}
    listed = {k[len(root) + 1:]: v for k, v in found.items() if v.get("type", "file") != "directory"}
    for rel, meta in sorted(files.items()):
        info = listed.get(rel)
        if info is None:
            raise InputIOError(f"{staging}/{rel}: written by a task but not on the store (deleted meanwhile, or "
                               "another run's publication removed it)")
        if int(info["size"]) != meta["size"]:
            raise InputIOError(f"{staging}/{rel}: {info['size']} bytes on the store, {meta['size']} written by its "
                               "task (overwritten meanwhile?)")
        etag = str(info.get("ETag") or info.get("etag") or "").strip('"')
        if re.fullmatch(r"[0-9a-f]{32}", etag) and etag != meta["md5"]:
            raise InputIOError(f"{staging}/{rel}: its ETag {etag} is not the MD5 of the file its task wrote "
                               f"({meta['md5']}): damaged in transit, or overwritten")
    extra = sorted(set(listed) - set(files))
    if extra:  # e.g. a failed attempt's file of a partition value its retry does not have: never published
        log.warning("%s: %d staged object(s) no task reported (e.g. %s): not published", staging, len(extra), extra[0])


def _publish(url: str, staging: str, files: dict[str, dict], lock: "storage.RemoteLock", what: str) -> dict:
    """The staged objects published at ``url``: marker deleted, copies, leftovers deleted, marker last."""
    fs, root = storage.filesystem(url), storage.fs_path(url)
    marker = {"what": what, "files": {rel: {"size": m["size"], "md5": m["md5"]} for rel, m in sorted(files.items())},
              "published_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    raw = storage.read_bytes(f"{url}/{storage.PUBLISHED}")
    if raw is not None and json.loads(raw).get("files") == marker["files"]:
        log.info("%s: the published %s has the same files: nothing rewritten", url, what)
        _drop(f"{url}/{STAGING}")  # ours and a killed run's (this run holds the lock: no other is live)
        return json.loads(raw)
    lock.check()
    storage.delete(f"{url}/{storage.PUBLISHED}")
    try:
        old = _call(url, "list it", fs.find, root)
    except FileNotFoundError:
        old = []
    with storage.shared_filesystems(), ThreadPoolExecutor(COPY_THREADS, thread_name_prefix="publish") as pool:
        list(pool.map(lambda rel: storage.copy(f"{staging}/{rel}", f"{url}/{rel}"), sorted(files)))
    mine = storage.fs_path(staging) + "/"
    stale = sorted(k for k in old if k[len(root) + 1:] not in files and not k.startswith(mine)
                   and k.rsplit("/", 1)[-1] not in _SKIP)
    if stale:
        _call(url, "delete its leftovers", fs.rm, stale)
        log.info("%s: %d leftover object(s) removed", url, len(stale))
    lock.check()  # still ours: else another run owns the URL now, and no marker of ours
    _call(url, f"write {storage.PUBLISHED}", fs.pipe_file, f"{root}/{storage.PUBLISHED}",
          json.dumps(marker, indent=1, sort_keys=True).encode())
    return marker


def _drop(staging: str) -> None:
    fs = storage.filesystem(staging)
    try:
        _call(staging, "delete it", fs.rm, storage.fs_path(staging), True)
    except FileNotFoundError:
        pass


def write_dataset(df: "DataFrame", url: str, partition_by: Sequence[str] | None = None, *, what: str = "dataset",
                  stats: Callable[["pa.Table"], dict] | None = None,
                  check: Callable[[dict], None] | None = None) -> dict:
    """Write ``df`` as a Parquet dataset at ``url``, staged on the store by the executors (see the module docstring).

    Parameters
    ----------
    df
        The rows; each of its partitions is one task.
    url
        The dataset's URL (``s3://bucket/prefix/features``).
    partition_by
        Partition columns (folders ``<col>=<value>/``), as Spark's ``partitionBy``.
    what
        The output's name in the marker, the lock and messages ("feature table").
    stats
        ``stats(table) -> {name: int | list}`` on each file's rows (with its partition values as
        string columns), on the executors: ints summed, lists merged as sorted sets. Picklable (a
        module-level function, or a ``functools.partial`` of one).
    check
        ``check(result)`` before anything is published (e.g. refuse a dataset of no rows): raising
        there publishes nothing.

    Returns
    -------
    dict
        ``files`` (key -> size, rows, md5), ``rows``, ``stats`` (the merged counts), ``staging`` (the
        prefix used, deleted), ``marker`` (the published marker).

    Raises
    ------
    InputIOError
        A task's PUT refused (the object named, and the executors' settings as the likely cause), a
        staged object missing or not the one written, the store's errors while publishing.
    InputError
        The URL is held by another run (:class:`ssm_spark.storage.RemoteLock`).
    """
    from ssm_spark.spark import share_store_environment

    url = storage.url_of(str(url)).rstrip("/")
    partition_by = list(partition_by or [])
    share_store_environment(df.sparkSession)  # local mode: the workers get this environment's store settings
    staging = f"{url}/{STAGING}/{secrets.token_hex(4)}"
    t0 = time.perf_counter()
    with storage.RemoteLock(url, f"writing the {what}") as lock:
        try:
            try:
                rows = [r.asDict() for r in df.mapInArrow(_stage_task(staging, partition_by, stats), SUMMARY).collect()]
            except Exception as exc:  # noqa: BLE001 - an executor's store error raised as ours, by name
                from ssm_spark.product.tiles import store_error_of

                err = store_error_of(exc)
                if err is None:
                    raise
                raise err from None
            if not rows and not partition_by:
                rows = [_empty_file(df, staging)]
            files = {r["key"]: {"size": int(r["size"]), "rows": int(r["rows"]), "md5": r["md5"]} for r in rows}
            if len(files) != len(rows):
                raise InputIOError(f"{staging}: two tasks reported the same key: not one file per partition and value")
            result = {"files": files, "rows": sum(m["rows"] for m in files.values()), "stats": _merge(rows),
                      "staging": staging}
            if check is not None:
                check(result)
            _check_staged(staging, files)
            result["marker"] = _publish(url, staging, files, lock, what)
        finally:
            try:
                _drop(staging)
            except InputIOError as exc:  # the write's own outcome (or error) stands; a dead prefix is named
                log.warning("%s: its staging prefix could not be deleted (%s); the next write into %s removes it",
                            staging, exc, url)
    log.info("%s: %d row(s) in %d file(s) staged by the executors and published in %.1f s", url, result["rows"],
             len(files), time.perf_counter() - t0)
    return result
