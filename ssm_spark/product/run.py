"""The dates of a product run: computed up to ``produce.dates_in_flight`` at once, finished in date order.

Up to that many dates' Spark jobs run at once (Spark's FIFO scheduler gives the older date's tasks
the cores first, so the next date only fills cores the older one leaves idle at its end), and the
driver finishes a date (VRT, quicklook, aggregates, commit) in a finisher thread while the
executors compute; one date finishes at a time, in date order. ``1``: one date after the other,
nothing overlapped.

On an error the scheduler lets the running jobs end (a commit is atomic), removes the staging of
dates computed but not committed, and raises. For a product on a store (``remote``) a date's tiles
are staged under its staging prefix on the store (:mod:`ssm_spark.product.remote`), the local
staging folder holding only the driver's own files; a date that fails has that prefix deleted too.
A date already complete (its marker, see :mod:`ssm_spark.product.commit`) is skipped, unless forced.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import ssm_spark
from ssm_spark.grid import Grid
from ssm_spark.physics.qc import QC
from ssm_spark.product.aggregate import AggTarget
from ssm_spark.product.commit import (STAGING, clean_staging, commit, inputs, is_complete, read_marker,
                                      write_product_json)
from ssm_spark.product.outputs import StagedDate, finish_date
from ssm_spark.product.region import Region
from ssm_spark.product.tasks import compute_tiles
from ssm_spark.product.tiles import DateJob

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import Config

log = logging.getLogger(__name__)

__all__ = ["RunSetup", "DateWork", "DateScheduler"]

_QC_LEGEND = ", ".join(f"{int(q)} {q.name}" for q in QC)


@dataclass(frozen=True)
class RunSetup:
    """What every date of a run shares, resolved once on the driver before the first date."""

    spark: "SparkSession"
    cfg: "Config"
    grid: Grid
    region: Region
    stacks: Path
    output: Path
    targets: tuple[AggTarget, ...]
    manifest_id: str
    config_hash: str
    product_hash: str
    bands: tuple[str, ...] | None  # COG bands; None: no COG
    info: dict  # product.json, less its dates
    quarantined: dict[str, list]  # per date: files that failed the driver's checks
    absent_bands: dict[str, list]  # per band: files without it
    registry: Any  # the broadcast (manifest, model bytes)
    climatology: Any = None  # ClimatologyStack, with change detection
    force: bool = False
    hook: Callable[[str, str], None] | None = None
    remote: Any = None  # RemoteOutput: ``output`` is the local working folder of a product on an object store

    @property
    def title_ids(self) -> str:
        return f"manifest {self.manifest_id}, config {self.config_hash}, product {self.product_hash}"

    def job(self, date: str, staging: Path | str) -> DateJob:
        """What the executors need for a date; ``staging``: where its tiles go (a folder, or a store's prefix)."""
        pc = self.cfg.produce
        tags = {"product": "ssm", "date": date, "grid": self.grid.name, "manifest_id": self.manifest_id,
                "config_hash": self.config_hash, "product_hash": self.product_hash,
                "software": f"ssm_spark {ssm_spark.__version__}", "qc_bits": _QC_LEGEND}
        return DateJob(date, self.grid, self.region, str(staging), self.cfg.ingest.max_slope_deg, tags, self.bands,
                       pc.cog_blocksize, pc.cog_compress, pc.overview_resampling, self.climatology)


@dataclass
class DateWork:
    """A date computing or computed, not yet finished (the scheduler's queue, in date order)."""

    k: int  # 1-based position among the run's dates
    job: DateJob
    files: list
    staging: Path
    inputs: list[dict]
    t0: float
    tiles: Future | tuple[list[dict], bool] | None = None  # (tile summaries, fused), or its future


@dataclass
class Progress:
    """The run's pixels and time so far (over the dates computed, not those skipped)."""

    pixels: int = 0
    t_first: float | None = None
    t_last: float | None = None

    @property
    def seconds(self) -> float:
        return (self.t_last - self.t_first) if self.t_last is not None else 0.0


@dataclass
class DateScheduler:
    """Computes, finishes and commits the dates of a run (see the module docstring)."""

    run: RunSetup
    by_date: dict[str, list]  # the stack files of each date
    per_date: dict[str, dict] = field(default_factory=dict)  # the run summary's entries
    failed: list[dict] = field(default_factory=list)  # every file that failed (read or quarantined)
    progress: Progress = field(default_factory=Progress)

    def __post_init__(self) -> None:
        self.dates = sorted(self.by_date)
        self.in_flight = self.run.cfg.produce.dates_in_flight
        many = self.in_flight > 1
        self._computers = ThreadPoolExecutor(self.in_flight, thread_name_prefix="produce-tiles") if many else None
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="produce-finish") if many else None
        self._queue: deque[DateWork] = deque()  # computing or computed, not yet handed to the finisher
        self._pending: Future | None = None  # the date finishing

    def run_dates(self) -> None:
        """Every date: skipped when complete, else computed, finished and committed."""
        try:
            for k, date in enumerate(self.dates, 1):
                self._start(k, date)
                while len(self._queue) >= self.in_flight:
                    self._hand_over()
            while self._queue:
                self._hand_over()
            if self._pending is not None:
                self._pending.result()
                self._pending = None
        finally:
            self._clean_up()

    # ------------------------------------------------------------------------------------ steps

    def _start(self, k: int, date: str) -> None:
        """Skip the date when complete; else stage it and start its Spark job."""
        run, n = self.run, len(self.dates)
        files = sorted(self.by_date[date], key=lambda f: f.path)
        q_date = run.quarantined.get(date, [])
        date_inputs = inputs(files, run.stacks, q_date)
        if q_date:
            log.warning("produce %d/%d %s: %d file(s) quarantined, their cells stay empty: %s", k, n, date,
                        len(q_date), "; ".join(q["reason"] for q in q_date))
        ok, why = is_complete(read_marker(run.output, date), run.output, run.manifest_id, run.product_hash,
                              date_inputs, run.remote.sizes if run.remote is not None else None)
        if ok and not run.force:
            log.info("produce %d/%d %s: skipping, complete (manifest %s, product hash %s)", k, n, date,
                     run.manifest_id, run.product_hash)
            self.per_date[date] = {"status": "skipped"}
            clean_staging(run.output, date)
            if run.remote is not None:
                run.remote.clean_staging(date)
            return
        if not ok and why != "no marker":
            log.info("produce %d/%d %s: recomputing (%s)", k, n, date, why)
        t0 = time.perf_counter()
        if self.progress.t_first is None:
            self.progress.t_first = t0
        clean_staging(run.output, date)
        name = f"{date}.{uuid.uuid4().hex[:8]}"
        staging = run.output / STAGING / name
        if run.remote is None:
            job = run.job(date, staging)
        else:  # the tiles to the store's staging prefix; the local folder gets the driver's files only
            run.remote.clean_staging(date)
            job = run.job(date, run.remote.staging_url(name))
        work = DateWork(k, job, files, staging, date_inputs, t0)
        self._queue.append(work)  # before the job starts: a failure removes its staging
        args = (run.spark, run.cfg, work.job, files, run.registry, staging)
        if self._computers is None:
            work.tiles = compute_tiles(*args)
        else:  # Spark's FIFO scheduler runs the older date's tasks first; the next fills idle cores
            work.tiles = self._computers.submit(compute_tiles, *args)

    def _hand_over(self) -> None:
        """The oldest computing date, once computed, to the finisher (after the previous one finished)."""
        work = self._queue[0]
        tiles, fused = work.tiles.result() if isinstance(work.tiles, Future) else work.tiles
        t_tiles = time.perf_counter() - work.t0
        if self._pending is not None:  # one date finishing at a time, in date order
            self._pending.result()
            self._pending = None
        self._queue.popleft()
        if self._finisher is None:
            self._finish(work, tiles, fused, t_tiles)
        else:
            self._pending = self._finisher.submit(self._finish, work, tiles, fused, t_tiles)

    def _finish(self, work: DateWork, tiles: list[dict], fused: bool, t_tiles: float) -> None:
        """The date's driver work and commit (in the finisher thread while the next date computes)."""
        run, date = self.run, work.job.date
        t1 = time.perf_counter()
        if run.remote is None:
            res, r, failed = self._commit(work, tiles, fused, None)
        else:  # the driver's reads of the staged COGs (quicklook, STAC) through GDAL's /vsis3/, one scope
            from ssm_spark import storage
            from ssm_spark.point.store import gdal_scope

            storage.apply_gdal_env()
            read_vrts = Path(tempfile.mkdtemp(prefix="ssm-vrt-"))
            try:
                with gdal_scope():
                    res, r, failed = self._commit(work, tiles, fused, read_vrts)
                run.remote.publish(date, [t.name for t in run.targets], run.hook, res.staged, work.job.staging)
                run.remote.put_metadata()
            except BaseException:
                self._drop_staging(work)  # the committed date on the store is left as it was
                shutil.rmtree(work.staging, ignore_errors=True)
                raise
            finally:
                shutil.rmtree(read_vrts, ignore_errors=True)
        status = "incomplete" if res.failed else "complete"
        now = time.perf_counter()
        self.progress.pixels += r["pixels"]
        self.progress.t_last = now
        self.failed.extend(failed)
        self.per_date[date] = {"status": "produced" if status == "complete" else "incomplete", **r,
                               "seconds": round(now - work.t0, 2), "tiles_seconds": round(t_tiles, 2),
                               "finish_seconds": round(now - t1, 2)}
        if run.targets:
            self.per_date[date]["aggregate_seconds"] = res.aggregate_seconds
        self._log_date(work.k, date, res, t_tiles, now - t1, now)
        if run.hook is not None:
            run.hook("committed", date)

    def _commit(self, work: DateWork, tiles: list[dict], fused: bool, read_vrts: Path | None
                ) -> tuple[StagedDate, dict, list[dict]]:
        """The date's outputs, its ledger and marker, its local commit, ``product.json`` and STAC item."""
        run, date = self.run, work.job.date
        res = finish_date(run.spark, run.cfg.produce, work.job, len(work.files), tiles, fused, work.staging,
                          run.region, run.title_ids, run.targets, read_vrts)
        failed = run.quarantined.get(date, []) + res.failed
        if run.hook is not None:
            run.hook("staged", date)
        # the date's file ledger: every input file in exactly one place
        q_date, r = run.quarantined.get(date, []), res.result
        n = len(work.files)
        ledger = {"files_in": n + len(q_date), "files_read": n - r["files_failed"] - r["files_without_acquisition"],
                  "files_without_acquisition": r["files_without_acquisition"],
                  "files_read_failed": r["files_failed"], "files_quarantined": len(q_date)}
        assert ledger["files_in"] == sum(v for k, v in ledger.items() if k != "files_in")
        r.update(ledger)
        # a read failure may be transient: the date is committed as incomplete and re-tried next run
        status = "incomplete" if res.failed else "complete"
        marker = self._marker(work, status, res, failed)
        commit(work.staging, run.output, date, marker, run.hook, [t.name for t in run.targets])
        write_product_json(run.output, run.info)
        if run.cfg.produce.stac:  # after product.json: the first date has none before
            from ssm_spark.stac import on_commit

            on_commit(run.output, date, marker, res.sources or None)
        return res, r, failed

    def _marker(self, work: DateWork, status: str, res: StagedDate, failed: list[dict]) -> dict:
        """The date's ``_SUCCESS.json`` (written last by the commit)."""
        run = self.run
        paths = {f.path for f in work.files}
        return {"date": work.job.date, "status": status, "manifest_id": run.manifest_id,
                "config_hash": run.config_hash, "product_hash": run.product_hash,
                "software": f"ssm_spark {ssm_spark.__version__}", "grid": run.grid.name,
                "region": run.region.describe(run.grid), "counts": res.result,
                "failed_files": failed, "files_without_acquisition": res.empty,
                "bands_absent": {b: sorted(p for p in v if p in paths) for b, v in sorted(run.absent_bands.items())
                                 if any(p in paths for p in v)},
                "values_out_of_range_set_missing": res.rejected,
                "values_set_missing_by_file": res.rejected_by_file, "inputs": work.inputs, "outputs": res.outputs}

    def _log_date(self, k: int, date: str, res: StagedDate, t_tiles: float, t_finish: float, now: float) -> None:
        r, n, done = res.result, len(self.dates), self.progress
        run_secs = now - done.t_first
        log.info("produce %d/%d %s: %s pixels (%s with ssm, %s masked) in %d tiles; tiles %.1f s, outputs and "
                 "commit %.1f s; run so far %s px in %.1f s, %s px/s%s", k, n, date, f"{r['pixels']:,}",
                 f"{r['retrieved']:,}", f"{r['masked']:,}", r["tiles"], t_tiles, t_finish, f"{done.pixels:,}",
                 run_secs, f"{done.pixels / run_secs:,.0f}" if run_secs else "-",
                 f"; {len(res.failed)} file(s) FAILED: " + "; ".join(e["reason"] for e in res.failed)
                 if res.failed else "")
        if self.run.targets:
            grids = ", ".join(f"{name} ({a['cells']} cells, {a['tiles']} tiles)" for name, a in r["aggregates"].items())
            log.info("produce %d/%d %s: aggregated to %s in %.1f s", k, n, date, grids, res.aggregate_seconds)

    def _drop_staging(self, work: DateWork) -> None:
        """After a failure: the date's staging prefix on the store deleted; if that fails too (the store
        gone), said, and left to the next run of the date (the failure raised is the first one)."""
        try:
            self.run.remote.drop_staging(work.job.staging)
        except Exception as exc:  # noqa: BLE001 - the date's own error is the one raised
            log.warning("produce %s: its staging %s could not be deleted (%s); the next run of the date deletes it",
                        work.job.date, work.job.staging, exc)

    def _clean_up(self) -> None:
        """After a failure: let what runs end (a commit is atomic), then drop what was computed but not committed."""
        for work in self._queue:
            if isinstance(work.tiles, Future):
                try:
                    work.tiles.result()
                except BaseException:  # noqa: BLE001 - the loop's own error is the one raised
                    pass
            shutil.rmtree(work.staging, ignore_errors=True)
            if self.run.remote is not None:
                self._drop_staging(work)
        if self._pending is not None:
            try:
                self._pending.result()
            except BaseException:  # noqa: BLE001
                pass
        for pool in (self._computers, self._finisher):
            if pool is not None:
                pool.shutdown(wait=True)
