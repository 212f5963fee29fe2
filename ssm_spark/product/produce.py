"""``ssm-spark produce``: a regional SSM product from feature stacks and a model registry, on Spark.

Per date (one Spark job per date, so memory is bounded by a date and a tile, never by the run)::

    stack files of the date touching the region's tiles                        (region.py)
      -> Spark tasks over the files: read a file (rasterio) -> masks and        (tasks.py, tiles.py)
         environment -> clip to the region -> coupled physics with the
         registry's WCM parameters + the model selected for each environment
         (Registry.predict) -> product rows -> per tile: Parquet file +
         Cloud-Optimized GeoTIFF, written by the executor into a staging folder
      -> driver: VRT mosaic, quicklook PNG (decimated read of the VRT)          (outputs.py, vrt.py)
      -> with ``produce.aggregate``: the staged tile Parquet files aggregated   (aggregate.py)
         onto each coarser nested grid (Spark), a VRT (and quicklook) per grid
      -> the commit: staging moved into place, the marker last                  (commit.py)

with up to ``produce.dates_in_flight`` dates computing at once and one finishing at a time, in
date order (:mod:`ssm_spark.product.run`). Only small per-tile summaries come back to the driver;
pixels never do. Tables: :mod:`ssm_spark.product.schema`.

Output layout (``OUTPUT/``)::

    parquet/date=YYYY-MM-DD/<grid>_<tile_row>_<tile_col>.parquet   product rows, zstd, sorted by row, col
    parquet/date=YYYY-MM-DD/_SUCCESS.json                          the date's commit marker
    cog/YYYY-MM-DD/<grid>_<tile_row>_<tile_col>.tif                tile COGs (float32: ssm, qc; NaN nodata)
    vrt/YYYY-MM-DD.vrt                                             mosaic of the date's COGs
    quicklook/YYYY-MM-DD.png                                       SSM, colour bar, region outline
    agg/<cgrid>/parquet/date=YYYY-MM-DD/<cgrid>_<tr>_<tc>.parquet  with produce.aggregate: coarse cells
    agg/<cgrid>/cog/YYYY-MM-DD/<cgrid>_<tr>_<tc>.tif               coarse tile COGs (cog_bands + frac_valid)
    agg/<cgrid>/vrt/YYYY-MM-DD.vrt                                 mosaic of the coarse COGs
    agg/<cgrid>/quicklook/YYYY-MM-DD.png                           its quicklook (with produce.quicklook)
    climatology/<key>/...                                          with change detection (climatology.py)
    product.json                                                   grid, region, manifest, hashes, dates

``<cgrid>`` is each grid of ``produce.aggregate`` (e.g. ``ease2_9km``), tiled with the product's
``tile_size`` in its own cells; its columns and definitions are in :mod:`ssm_spark.product.aggregate`.

The Parquet dataset reads back with ``spark.read.parquet("OUTPUT/parquet")`` (``date`` is the
partition column) in the product contract: ``grid, tile_row, tile_col, row, col, lon, lat, date,
ssm, ssm_p05, ssm_p95, env, model_id, qc``. Rows are the cells of the region with an acquisition
that date; masked cells (water, built-up, snow/ice, frozen, steep) are kept with a null ``ssm``,
their ``qc`` bits saying why, and a null ``model_id``.

Provenance: the registry's manifest id, the configuration hash (``Config.hash()``) and the product
hash (:func:`~ssm_spark.product.commit.product_hash`) are in the GeoTIFF tags, the Parquet key-value
metadata (key ``ssm_spark``), the VRT metadata, the PNG title and text chunks, and the marker; the
aggregated files carry the same three, plus the fine grid, the nest factor and the minimum of valid
fine cells. Files hold no timestamps and rows are sorted, so an interrupted run resumed gives the
same bytes as an uninterrupted one.

Bad input is refused or recorded, never silent: the output folder is locked for the run
(``OUTPUT/_LOCK.json``, :class:`~ssm_spark.product.files.OutputLock`); a registry trained on other
inputs is refused before any Spark work (:meth:`Registry.check_inputs`); estimates outside the
physical range are masked with ``QC.PREDICTION_OUT_OF_RANGE`` and counted, and a tile where they
are more than :data:`~ssm_spark.product.tasks.MAX_OUT_OF_RANGE_FRACTION` of the unmasked cells fails
the date (a broken model: nothing of the date is committed); a date where a file could not be read
is committed with ``"status": "incomplete"`` and recomputed by the next run (the error may be
transient). The marker and the run summary keep the ledger: files in = read + without acquisition
+ read failed + quarantined, pixels = retrieved + masked + out of range + no estimate.

A local output folder must be a filesystem the driver and the executors share (local mode, NFS, a
mounted ``/Volumes`` path): executors write files there and the driver renames them. An output URL
(``s3://``, ``gs://``, ``abfss://``) needs no shared folder: the executors PUT the tiles under a
staging prefix of the run on the store, the driver writes its own files (marker, VRTs, quicklooks,
STAC, ``product.json``) in a local working folder and publishes each date by server-side copies and
PUTs, the marker last (:mod:`ssm_spark.product.remote`); stacks may be a URL too (read by GDAL
through ``/vsis3/``-style paths, :mod:`ssm_spark.storage`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import ssm_spark
from ssm_spark import storage
from ssm_spark.errors import ConfigError, InputError
from ssm_spark.physics.qc import QC
from ssm_spark.product.aggregate import resolve_targets
from ssm_spark.product.commit import STAGING, product_hash, write_product_json
from ssm_spark.product.region import Region, resolve_region
from ssm_spark.product.run import DateScheduler, RunSetup
from ssm_spark.product.schema import AGG_COLUMNS, PRODUCT_COLUMNS
from ssm_spark.product.tasks import MAX_OUT_OF_RANGE_FRACTION
from ssm_spark.product.tiles import DateJob, predict_rows, read_clipped, write_tile

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import Config

log = logging.getLogger(__name__)

# the names users reach through this module (``from ssm_spark.product.produce import ...``)
__all__ = ["produce", "PRODUCT_COLUMNS", "Region", "resolve_region", "product_hash", "read_clipped", "predict_rows",
           "write_tile", "DateJob", "MAX_OUT_OF_RANGE_FRACTION"]

_LEDGER = ("files_in", "files_read", "files_without_acquisition", "files_read_failed", "files_quarantined",
           "pixels", "retrieved", "masked", "out_of_range", "no_estimate")


def produce(spark: "SparkSession", cfg: "Config", models: str | os.PathLike, stacks: str | os.PathLike,
            region: str | None, start: Any, end: Any, output: str | os.PathLike,
            static: str | os.PathLike | None = None, *, force: bool = False,
            hook: Callable[[str, str], None] | None = None, staging_dir: str | os.PathLike | None = None,
            break_lock: bool = False) -> dict:
    """Produce the SSM product of a region and a date range (see the module docstring).

    Parameters
    ----------
    spark : SparkSession
    cfg : Config
        ``grid``, ``ingest`` and ``produce`` sections are used (and ``region`` for named regions).
    models : path-like
        Model registry folder (``ssm-spark train``).
    stacks : path-like or URL
        Folder of ``<YYYY-MM-DD>/`` feature-stack GeoTIFFs (or ``s3://bucket/prefix``).
    region : str or None
        Bbox, GeoJSON file, or region name (:func:`resolve_region`).
    start, end : str or date or None
        Inclusive date range of the stack folders (None: open-ended).
    output : path-like or URL
        Product folder (layout in the module docstring), or ``s3://bucket/prefix`` (``gs://``, ``abfss://``).
    static : path-like, optional
        Static layers (default: a ``static/`` folder beside ``stacks``).
    force : bool
        Recompute dates even when their marker says complete.
    hook : callable(stage, date), optional
        Called at ``"staged"`` (date written to staging, nothing moved), ``"partial"`` (Parquet
        partition moved, other outputs not), ``"publishing"`` (an output URL: the date's first object
        PUT, its marker not) and ``"committed"``; for tests of interruptions.
    staging_dir : path-like, optional
        With an output URL: the driver's local working folder (default ``SSM_STAGING_DIR``, else a
        temporary folder removed after the run); the executors need no access to it (the tiles are
        staged on the store).
    break_lock : bool
        Take over the output's lock even while it is fresh (``--break-lock``: its holder is known to
        be gone but cannot be asked, e.g. it ran on another machine).

    Returns
    -------
    dict
        Run summary: per-date status and counts, totals, pixels/s, failures.

    Raises
    ------
    InputError
        No stack date in range over the region, a bad region, an empty stacks folder.
    ModelRegistryError
        An unreadable or incompatible registry.
    ConfigError
        A bad date, or a ``produce.aggregate`` grid that does not nest in the product grid (checked
        first, before any work).
    InputIOError
        An output folder that cannot be written (before any work).
    """
    from ssm_spark.product.files import OutputLock, ensure_writable

    # the configuration's own checks first: a refused run writes nothing
    resolve_targets(cfg.produce.aggregate, cfg.grid.build(), cfg.produce.aggregate_min_fraction)  # ConfigError
    d0, d1 = _parse_date(start, "start"), _parse_date(end, "end")
    if d0 and d1 and d1 < d0:
        raise ConfigError(f"--end {d1} is before --start {d0}")
    # one s3fs client per store for the run's many small calls (a fresh one costs ~0.3 s: a date skipped
    # with its stacks on a store checked each file's size and time through a new client, ~5 s a date)
    with storage.shared_filesystems():
        if storage.is_remote(output):
            return _produce_remote(spark, cfg, models, stacks, region, d0, d1, str(output), static, force=force,
                                   hook=hook, staging_dir=staging_dir, break_lock=break_lock)
        output = ensure_writable(Path(output).resolve())  # permission, read-only, a file in the way
        with OutputLock(output, "ssm-spark produce", break_lock=break_lock):  # refused while another run writes
            return _produce(spark, cfg, models, stacks, region, d0, d1, output, static, force=force, hook=hook)


def _produce_remote(spark: "SparkSession", cfg: "Config", models, stacks, region, d0, d1, url: str, static, *,
                    force: bool, hook, staging_dir, break_lock: bool = False) -> dict:
    """:func:`produce` to an object store: tiles staged on the store by the executors, the driver's files in a
    local working folder, each date published after its commit (:mod:`ssm_spark.product.remote`)."""
    import shutil
    import tempfile

    from ssm_spark.product.files import OutputLock, ensure_writable
    from ssm_spark.product.remote import RemoteLock, RemoteOutput
    from ssm_spark.spark import share_store_environment

    remote = RemoteOutput(url, Path("."))
    share_store_environment(spark)  # local mode: the workers see the store's settings of this environment
    base = staging_dir or os.environ.get("SSM_STAGING_DIR")
    tmp = None if base else tempfile.mkdtemp(prefix="ssm-produce-")
    try:
        local = ensure_writable(Path(base or tmp).resolve() / "product", "the local working folder")
        remote.local = local
        # the store's lock (its probe first: credentials, bucket, permission, before any work), then the folder's
        with RemoteLock(remote.url, "ssm-spark produce", break_lock=break_lock) as lock, \
                OutputLock(local, "ssm-spark produce", break_lock=break_lock):
            remote.lock = lock
            remote.pull()
            summary = _produce(spark, cfg, models, stacks, region, d0, d1, local, static, force=force, hook=hook,
                               remote=remote)
            if "product.json" not in remote.sizes:  # a run that only skipped: product.json as a local run leaves it
                remote.put_metadata()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    summary["output"] = remote.url
    return summary


def _climatology_url(cfg: "Config", remote: Any) -> str | None:
    """Where the change-detection climatology is kept on a store: ``produce.climatology_dir`` when it is
    a URL; with a product on a store and no ``climatology_dir``, ``<product URL>/climatology``; else None."""
    cdir = cfg.produce.climatology_dir
    if cdir and storage.is_remote(cdir):
        return storage.url_of(cdir).rstrip("/")
    if remote is not None and not cdir:
        return f"{remote.url}/climatology"
    return None


def _parse_date(value: Any, what: str) -> dt.date | None:
    if value is None or value == "":
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value))
    except ValueError as exc:
        raise ConfigError(f"--{what} {value!r}: expected a date YYYY-MM-DD") from exc


def _produce(spark: "SparkSession", cfg: "Config", models: str | os.PathLike, stacks: str | os.PathLike,
             region: str | None, d0: dt.date | None, d1: dt.date | None, output: Path,
             static: str | os.PathLike | None = None, *, force: bool = False,
             hook: Callable[[str, str], None] | None = None, remote: Any = None) -> dict:
    """:func:`produce` while holding the output folder's lock: the run's setup, its dates, its summary."""
    from rasterio.windows import Window

    from ssm_spark.models.registry import load_registry
    from ssm_spark.product.climatology import climatology_for_produce
    from ssm_spark.sources.stacks import discover

    t_run = time.perf_counter()
    grid = cfg.grid.build()
    targets = resolve_targets(cfg.produce.aggregate, grid, cfg.produce.aggregate_min_fraction)  # ConfigError
    if storage.is_remote(stacks):  # read by GDAL: /vsis3/bucket/key paths
        storage.apply_gdal_env()
        stacks = storage.gdal_path(stacks)
        static = storage.gdal_path(static) if static is not None else None
    registry_src = str(models)
    if storage.is_remote(models):  # a published registry: a local copy, cached by its marker
        models = storage.local_copy(models, "model registry")
    else:
        registry_src = str(Path(models).resolve())
    models, stacks, output = Path(models), Path(stacks), Path(output).resolve()
    registry = load_registry(models)
    rgn = resolve_region(region, cfg, grid)
    if static is None:
        cand = stacks.parent / "static"
        static = cand if (storage.listdir(cand) if storage.is_remote(cand) else cand.is_dir()) else None
    wanted = set(rgn.tiles)

    def in_region(win: tuple[int, int, int, int]) -> bool:
        r0, c0, h, w = win
        return bool(wanted.intersection(grid.tiles_for_window(Window(c0, r0, w, h))))

    # only the date folders in range are opened, and only the region's files are fully checked
    inv = discover(stacks, grid, static, cfg.ingest.band_aliases, start=d0, end=d1, keep_window=in_region)
    if inv.files:  # a registry of another feature set: refused by name before any Spark work
        registry.check_inputs(set().union(*({*f.bands, *f.static_bands, *f.class_bands} for f in inv.files)),
                              f"the stack files under {stacks} have")
    by_date: dict[str, list] = {}
    for f in inv.files:
        by_date.setdefault(f.date, []).append(f)
    quarantined: dict[str, list] = {}
    for q in inv.quarantine:  # files that failed the driver's checks (CRS, alignment, bands, static layers)
        quarantined.setdefault(Path(q["file"]).parent.name, []).append(q)
    dates = sorted(by_date)
    unusable = sorted(set(quarantined) - set(by_date))
    if not dates:
        folders = sorted(p.name for p, is_dir in storage.listdir(stacks) if is_dir)
        why = (f"; every file of {len(unusable)} date(s) in range was quarantined, e.g. {quarantined[unusable[0]][0]['reason']}"
               if unusable else "")
        raise InputError(f"{stacks}: no usable stack file dated {d0 or 'any'}..{d1 or 'any'} covers region "
                         f"{rgn.name!r} (tiles {list(rgn.tiles)[:6]}{'...' if len(rgn.tiles) > 6 else ''}); date "
                         f"folders found: {folders[0] if folders else '-'}..{folders[-1] if folders else '-'}{why}")
    mid, chash = registry.manifest_id, cfg.hash()
    # change detection: every date's rows get their cells' climatology, built once over the window
    clim_url = _climatology_url(cfg, remote)
    if clim_url is None:
        clim = climatology_for_produce(spark, cfg, registry.wcm_params, stacks, static, rgn.tiles, output, inv, d0, d1)
    else:  # kept on the store: fetched into the working folder, built or reused there, published when changed
        from ssm_spark.product.climatology import climatology_key

        key = climatology_key(cfg, grid)
        folder = output / "climatology"
        if storage.download(f"{clim_url}/{key}", folder / key, "climatology"):
            log.info("produce: climatology %s fetched from %s", key, clim_url)
        clim = climatology_for_produce(spark, cfg, registry.wcm_params, stacks, static, rgn.tiles, output, inv, d0,
                                       d1, folder=folder)
        if clim:
            storage.publish(folder / key, f"{clim_url}/{key}", "climatology")
    phash = product_hash(cfg, rgn, mid, clim[0].digest if clim else None)
    pc = cfg.produce
    bands = tuple(pc.cog_bands) if pc.cog else None
    info = {"product": "surface soil moisture (m3/m3), ssm_spark", "software": f"ssm_spark {ssm_spark.__version__}",
            "grid": grid.describe(), "region": rgn.describe(grid), "manifest_id": mid, "config_hash": chash,
            "product_hash": phash, "registry": registry_src, "columns": list(PRODUCT_COLUMNS),
            "cog_bands": list(bands or []), "qc_bits": {q.name: int(q) for q in QC}}
    if clim:
        info["climatology"] = {k: clim[1][k] for k in ("key", "digest", "settings", "window_dates")}
    if targets:
        info["aggregates"] = {"grids": [t.describe() for t in targets], "columns": list(AGG_COLUMNS),
                              "cog_bands": [*(bands or []), "frac_valid"] if bands else []}
    log.info("produce: %d date(s) %s..%s over region %s (%d tiles) with manifest %s, config %s, product hash %s -> %s",
             len(dates), dates[0], dates[-1], rgn.name, len(rgn.tiles), mid, chash, phash, output)
    bc = spark.sparkContext.broadcast((registry.manifest, registry.model_bytes()))
    setup = RunSetup(spark, cfg, grid, rgn, stacks, output, targets, mid, chash, phash, bands, info, quarantined,
                     inv.absent_bands, bc, clim[0] if clim else None, force, hook, remote)
    sched = DateScheduler(setup, by_date)
    try:
        sched.run_dates()
    finally:
        bc.destroy()
        st = output / STAGING
        if st.is_dir() and not any(st.iterdir()):
            st.rmdir()
    for date in unusable:  # nothing to produce: said in the summary, nothing written
        log.warning("produce %s: every file quarantined, no product: %s", date,
                    "; ".join(q["reason"] for q in quarantined[date]))
        sched.per_date[date] = {"status": "failed", "reason": "every stack file quarantined"}
        sched.failed.extend(quarantined[date])
    if not (output / "product.json").exists():  # a run that only skipped leaves every file as it was
        write_product_json(output, info)
    total = time.perf_counter() - t_run
    summary = _summary(setup, sched, total, clim[1] if clim else None)
    # the run's ledger over the dates computed (skipped dates keep theirs in their markers)
    ledger = {k: int(sum(v.get(k, 0) for v in sched.per_date.values() if v["status"] in ("produced", "incomplete")))
              for k in _LEDGER}
    for date in unusable:
        ledger["files_in"] += len(quarantined[date])
        ledger["files_quarantined"] += len(quarantined[date])
    summary["ledger"] = ledger
    log.info("produce: %d date(s) produced, %d incomplete, %d skipped, %s pixels in %.1f s -> %s; files: %d in = %d "
             "read + %d without acquisition + %d unreadable + %d quarantined; pixels: %s = %s with ssm + %s masked + "
             "%s out of range + %s without estimate", summary["produced"], summary["incomplete"], summary["skipped"],
             f"{summary['pixels']:,}", total, output, *(ledger[k] for k in _LEDGER[:5]),
             *(f"{ledger[k]:,}" for k in _LEDGER[5:]))
    return summary


def _summary(setup: RunSetup, sched: DateScheduler, total: float, climatology: dict | None) -> dict:
    """The run summary (less its ledger): per-date status and counts, totals, pixels/s, failures."""
    per_date, px_done, secs_done = sched.per_date, sched.progress.pixels, sched.progress.seconds
    statuses = [v["status"] for v in per_date.values()]
    summary = {"output": str(setup.output), "manifest_id": setup.manifest_id, "config_hash": setup.config_hash,
               "product_hash": setup.product_hash, "region": setup.region.describe(setup.grid), "dates": per_date,
               "produced": statuses.count("produced"), "skipped": statuses.count("skipped"),
               "failed": statuses.count("failed"), "incomplete": statuses.count("incomplete"),
               "pixels": px_done, "seconds": round(total, 1),
               "pixels_per_s": round(px_done / secs_done) if secs_done else None, "failed_files": sched.failed}
    if climatology is not None:
        summary["climatology"] = climatology
    return summary
