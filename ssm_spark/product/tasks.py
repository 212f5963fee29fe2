"""The Spark part of a date: every tile read, clipped, predicted and written to staging by the executors.

::

    stack files of the date touching the region's tiles
      -> Spark tasks over the files (an RDD of the files in contiguous slices when each file is a
         tile, else mapInPandas over the file indices with the list broadcast; neighbouring files
         share a task: 4 files a task, fewer where a core would have none, :func:`task_count`):
         read a file -> masks and environment -> clip to the
         region -> Registry.predict_columns (Boosters built once per Python worker from the
         manifest + UBJ bytes broadcast once per run, nthread = the task's cores) -> product rows
         (column arrays in the fused path: read_tile_columns -> predict_tile -> write_tile)
      -> per tile: Parquet file + COG into the date's staging folder, in the same task when the
         stack files are grid tiles ("fused"), else regrouped by tile (applyInPandas); for a
         product on a store, into the task's temporary folder and PUT by the executor under the
         date's staging prefix on the store (:class:`~ssm_spark.product.tiles.TileFiles`)
      -> a small summary per tile back to the driver (:data:`~ssm_spark.product.schema.TILE_SUMMARY`;
         pixels never come back), reduced by :func:`reduce_tiles`

A file that cannot be read is recorded (``error``) and the date goes on; a tile where more than
:data:`MAX_OUT_OF_RANGE_FRACTION` of the unmasked cells got estimates outside the physical range
fails the date (:func:`reduce_tiles`: a broken model, nothing of the date is kept).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import pandas as pd

from ssm_spark.grid import Grid
from ssm_spark.product.schema import PRODUCT_FILE, TILE_SUMMARY, spark_ddl
from ssm_spark.product.tiles import (DateJob, empty_rows, predict_rows, predict_tile, read_clipped, read_tile_columns,
                                     store_error_of, write_tile)

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import Config
    from ssm_spark.models.registry import Registry
    from ssm_spark.sources.stacks import StackFile

__all__ = ["MAX_OUT_OF_RANGE_FRACTION", "DateTiles", "compute_tiles", "reduce_tiles", "task_count"]

#: A tile with more than this fraction of its unmasked cells out of the physical range fails the run
#: (a broken or misapplied model, not a few odd cells); below it they are masked and counted.
MAX_OUT_OF_RANGE_FRACTION = 0.2
_ROWS_DDL = spark_ddl(PRODUCT_FILE)
_SUMMARY_DDL = spark_ddl(TILE_SUMMARY)

_READ_ERRORS: tuple = ()


def _read_errors() -> tuple:
    global _READ_ERRORS
    if not _READ_ERRORS:
        import rasterio

        _READ_ERRORS = (rasterio.errors.RasterioError, OSError, ValueError)
    return _READ_ERRORS


def _worker_registry(bc, nthread: int, keep_memory: bool = True) -> "Registry":
    """The Registry of this Python worker (built once from the broadcast), nthread = task cores;
    the worker's objects frozen out of the garbage collector's reach the first time (:func:`_freeze`);
    with ``keep_memory`` (``produce.keep_tile_memory``), its C heap kept between tiles
    (:func:`ssm_spark.allocator.keep_tile_memory`, once per process)."""
    from pyspark import TaskContext

    from ssm_spark.models.registry import cached_registry

    if keep_memory:
        from ssm_spark.allocator import keep_tile_memory

        keep_tile_memory()

    if not nthread:
        ctx = TaskContext.get()
        nthread = ctx.cpus() if ctx is not None else 1
    manifest, blobs = bc.value
    reg = cached_registry(manifest, blobs, nthread=nthread)
    _freeze()
    return reg


_FROZEN = False


def _freeze() -> None:
    """Once per Python worker, after its first registry: collect, then ``gc.freeze()`` what is left
    (the imported libraries, the Boosters, the broadcast values).

    A reused PySpark worker runs a full ``gc.collect()`` after every task (``pyspark/daemon.py``),
    which walks every object the worker holds: pandas, pyarrow, XGBoost, rasterio and scikit-learn
    (imported by XGBoost) are ~150,000 objects, 80-190 ms a task here, about what Spark cost per
    tile task beyond the per-tile functions (docs/performance.md). Frozen objects are skipped by the
    collector (they are still freed by reference counting); what a task creates afterwards is
    collected as before.
    """
    global _FROZEN
    if not _FROZEN:
        import gc

        gc.collect()
        gc.freeze()
        _FROZEN = True


def _tile_of_file(f: "StackFile", grid: Grid) -> tuple[int, int] | None:
    ts = grid.tile_size
    tr0, tc0 = f.row_off // ts, f.col_off // ts
    if (f.row_off + f.height - 1) // ts != tr0 or (f.col_off + f.width - 1) // ts != tc0:
        return None
    return int(tr0), int(tc0)


def _fusable(files: Sequence["StackFile"], grid: Grid) -> bool:
    """True when every file lies inside one grid tile and no two files share a tile."""
    seen = set()
    for f in files:
        t = _tile_of_file(f, grid)
        if t is None or t in seen:
            return False
        seen.add(t)
    return True


def task_count(n: int, slots: int, min_files: int = 4) -> int:
    """How many tasks a date's ``n`` stack files are split into (contiguous slices): ``min_files``
    files a task (``produce.min_files_per_task``), or fewer where that would leave a task slot
    (``slots``: Spark's default parallelism) without one. A task costs Spark ~13 ms of scheduling
    and launch on this project's machine (docs/performance.md) against ~0.2-0.3 CPU-s a tile, so a
    few files a task keep that small, while many small tasks balance uneven tiles (sea, the region's
    edge) to within a task's length at the end of a date, and the other date in flight fills a slot
    a short date leaves idle. 4 files on 1 slot: 1 task; on 2 slots: 2; 156 on 2: 39."""
    if n <= 0:
        return 1
    return max(1, min(n, max(slots, -(-n // max(1, min_files)))))


def _file_ids(spark: "SparkSession", n: int, min_files: int = 4):
    """File indices 0..n-1 as a DataFrame (``id``) in contiguous slices (:func:`task_count`): the task
    list of a date (neighbouring tiles share a task; no Python stage to build it)."""
    return spark.range(0, n, 1, task_count(n, spark.sparkContext.defaultParallelism, min_files))


def _task_files(batches: Iterator[pd.DataFrame], bfiles) -> Iterator["StackFile"]:
    """The stack files a task's ``id`` batches name, from the date's broadcast file list."""
    files = bfiles.value
    for batch in batches:
        for i in batch["id"]:
            yield files[int(i)]


def _read_failure(f: "StackFile", exc: Exception) -> dict:
    from ssm_spark.sources.stacks import read_failure

    return read_failure(f.path, exc)  # GDAL's own cause included


def _run_fused(spark: "SparkSession", job: DateJob, files: list, bc, nthread: int, keep_memory: bool = True,
               min_files: int = 4) -> list[dict]:
    """One task per stack file: read, clip, predict and write its tile; returns the tile summaries.

    An RDD job (``parallelize(...).mapPartitions``), not a DataFrame's ``mapInPandas``: nothing of
    it needs SQL, and the DataFrame job cost the driver's JVM about 0.5 CPU-s per date in planning
    and Arrow set-up against 0.15 (docs/performance.md), on the same cores as the tasks. The file
    files are the job's data, split into contiguous slices as :func:`_file_ids` does (neighbouring
    tiles share a task, :func:`task_count` tasks; each slice pickled once, no broadcast to create
    and destroy per date); the summaries come back as plain dicts.
    """
    read_errors = _read_errors()
    grid = job.grid

    def _task(part: Iterator["StackFile"]) -> Iterator[dict]:
        reg = _worker_registry(bc, nthread, keep_memory)
        for f in part:
            tr, tc = _tile_of_file(f, grid)
            empty: list = []
            try:
                px, rejected = read_tile_columns(f, job, empty)
            except read_errors as exc:
                s = write_tile(empty_rows(), tr, tc, job)
                s["error"] = json.dumps(_read_failure(f, exc))
                yield s
                continue
            s = write_tile(predict_tile(px, reg), tr, tc, job)
            s["rejected"] = json.dumps(rejected) if rejected else None
            s["empty"] = json.dumps(empty) if empty else None
            yield s

    sc = spark.sparkContext
    parts = task_count(len(files), sc.defaultParallelism, min_files)
    return sc.parallelize(files, parts).mapPartitions(_task).collect()


def _run_shuffled(spark: "SparkSession", job: DateJob, n_files: int, bfiles, bc, nthread: int,
                  chunk_rows: int = 200_000, keep_memory: bool = True, min_files: int = 4) -> list[dict]:
    """Files of any shape: read, clip and predict per file, regroup the rows by tile, write per tile."""
    read_errors = _read_errors()
    sc = spark.sparkContext
    from ssm_spark.sources.stacks import ListParam

    errors = sc.accumulator([], ListParam())
    rejections = sc.accumulator([], ListParam())
    empties = sc.accumulator([], ListParam())

    def _rows(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        reg = _worker_registry(bc, nthread, keep_memory)
        for f in _task_files(batches, bfiles):
            empty: list = []
            try:
                px, rejected = read_clipped(f, job, empty)
            except read_errors as exc:
                errors.add([_read_failure(f, exc)])
                continue
            if rejected:
                rejections.add(rejected)
            if empty:
                empties.add(empty)
            for s in range(0, len(px), chunk_rows):
                yield predict_rows(px.iloc[s:s + chunk_rows], reg)

    def _write(key, pdf: pd.DataFrame) -> pd.DataFrame:
        return pd.DataFrame([write_tile(pdf, int(key[0]), int(key[1]), job)])

    rows = _file_ids(spark, n_files, min_files).mapInPandas(_rows, _ROWS_DDL)
    out = [r.asDict() for r in rows.groupBy("tile_row", "tile_col").applyInPandas(_write, _SUMMARY_DDL).collect()]
    seen = set()
    blank = {"tile_row": None, "tile_col": None, "pixels": 0, "retrieved": 0, "masked": 0, "out_of_range": 0,
             "ssm_sum": 0.0, "ssm_min": None, "ssm_max": None, "parquet_bytes": 0, "cog_bytes": 0, "rejected": None,
             "error": None, "empty": None, "files": None}
    for e in errors.value:
        if e["file"] not in seen:  # a retried task reports twice
            seen.add(e["file"])
            out.append({**blank, "error": json.dumps(e)})
    if rejections.value:
        dedup = {(r["file"], r["band"]): r for r in rejections.value}
        out.append({**blank, "rejected": json.dumps([dedup[k] for k in sorted(dedup)])})
    if empties.value:
        dedup = {e["file"]: e for e in empties.value}
        out.append({**blank, "empty": json.dumps([dedup[k] for k in sorted(dedup)])})
    return out


def compute_tiles(spark: "SparkSession", cfg: "Config", job: DateJob, files: list, bc, staging: Path
                  ) -> tuple[list[dict], bool]:
    """The Spark part of a date: every tile read, predicted and written to staging by the executors.

    ``staging``: the date's local staging folder (its ``parquet/date=<date>/`` and ``cog/<date>/``
    made here: the tiles' folders, or, when ``job.staging`` is a store's staging prefix, the
    folders the driver's own files of the date are committed with).

    Returns the tile summaries and whether the tasks were fused (one task per stack file = tile).
    """
    pc = cfg.produce
    date = job.date
    (staging / "parquet" / f"date={date}").mkdir(parents=True)
    if job.bands:
        (staging / "cog" / date).mkdir(parents=True)
    fused = pc.tile_grouping == "auto" and _fusable(files, job.grid)
    spark.sparkContext.setJobDescription(f"ssm-spark produce {date} ({len(files)} files, "
                                         f"{'one task per tile' if fused else 'regrouped by tile'})")
    try:
        if fused:
            tiles = _run_fused(spark, job, files, bc, pc.nthread, pc.keep_tile_memory, pc.min_files_per_task)
        else:
            bfiles = spark.sparkContext.broadcast(files)  # once per executor, not in every task's closure
            try:
                tiles = _run_shuffled(spark, job, len(files), bfiles, bc, pc.nthread, keep_memory=pc.keep_tile_memory,
                                      min_files=pc.min_files_per_task)
            finally:
                bfiles.destroy()
    except Exception as exc:  # an executor's PUT refused (its credentials, the endpoint): said as the store's error
        err = store_error_of(exc)
        if err is None:
            raise
        raise err from exc
    finally:
        spark.sparkContext.setJobDescription(None)
    return tiles, fused


# ------------------------------------------------------------------------------ driver: the summaries


@dataclass
class DateTiles:
    """A date's tile summaries, reduced on the driver (what the marker and the run summary report)."""

    written: list[tuple[int, int]]  # tiles with a file, sorted
    failed: list[dict]  # files that could not be read
    rejected: dict[str, int]  # values outside the valid ranges set missing, per band
    rejected_by_file: list[dict]
    empty: list[dict]  # files without any acquisition cell
    counts: dict[str, int]  # pixels = retrieved + masked + out_of_range + no_estimate
    ssm_mean: float | None
    ssm_min: float | None
    ssm_max: float | None

    def result(self, n_files: int, fused: bool) -> dict:
        """The date's counts (the marker's ``counts``, the run summary's entry), in their order."""
        return {"tiles": len(self.written), "files": n_files, "files_failed": len(self.failed),
                "files_without_acquisition": len(self.empty), **self.counts, "ssm_mean": self.ssm_mean,
                "ssm_min": self.ssm_min, "ssm_max": self.ssm_max,
                "grouping": "per tile task" if fused else "shuffle by tile"}


def reduce_tiles(tiles: list[dict], job: DateJob, staging: Path) -> DateTiles:
    """Reduce a date's tile summaries (:data:`~ssm_spark.product.schema.TILE_SUMMARY` rows).

    Raises
    ------
    ModelRegistryError
        A tile with more than :data:`MAX_OUT_OF_RANGE_FRACTION` of its unmasked cells (and at
        least 10) out of the physical range; ``staging`` is removed first (nothing of the date is
        committed).
    """
    date = job.date
    written = sorted((t["tile_row"], t["tile_col"]) for t in tiles if t["tile_row"] is not None and t["pixels"] > 0)
    failed = [json.loads(t["error"]) for t in tiles if t.get("error")]
    rejected: dict[str, int] = {}
    by_file: list[dict] = []
    for t in tiles:
        for r in json.loads(t["rejected"]) if t.get("rejected") else []:
            rejected[r["band"]] = rejected.get(r["band"], 0) + int(r["n"])
            by_file.append({k: r[k] for k in ("file", "band", "n", "n_infinite", "range") if k in r})
    empty = sorted((e for t in tiles for e in (json.loads(t["empty"]) if t.get("empty") else [])),
                   key=lambda e: e["file"])
    for t in tiles:  # a tile mostly out of the physical range: a broken model, not odd cells
        base = int(t["pixels"]) - int(t["masked"])
        wild = int(t.get("out_of_range") or 0)
        if wild >= 10 and base and wild > MAX_OUT_OF_RANGE_FRACTION * base:
            from ssm_spark.errors import ModelRegistryError

            shutil.rmtree(staging, ignore_errors=True)  # nothing of the date is kept
            raise ModelRegistryError(
                f"produce {date}: tile {job.tile_name(t['tile_row'], t['tile_col'])}: {wild} of {base} unmasked cells "
                f"({wild / base:.0%}) got estimates outside the physical range [0, porosity]: the registry's models "
                f"are broken or do not fit these inputs (manifest {job.tags.get('manifest_id')}); the date is not "
                "committed")
    counts = {k: int(sum(t[k] for t in tiles)) for k in ("pixels", "retrieved", "masked", "out_of_range")}
    counts["no_estimate"] = counts["pixels"] - counts["retrieved"] - counts["masked"] - counts["out_of_range"]
    ssm_sum = float(sum(t["ssm_sum"] for t in tiles))
    mins = [t["ssm_min"] for t in tiles if t["ssm_min"] is not None]
    maxs = [t["ssm_max"] for t in tiles if t["ssm_max"] is not None]
    return DateTiles(written, failed, rejected, by_file, empty, counts,
                     round(ssm_sum / counts["retrieved"], 6) if counts["retrieved"] else None,
                     round(min(mins), 6) if mins else None, round(max(maxs), 6) if maxs else None)
