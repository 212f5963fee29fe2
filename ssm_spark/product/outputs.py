"""The driver's part of a date once its fine tiles are staged: mosaics, quicklooks and aggregates.

Per grid (the product grid, then each grid of ``produce.aggregate``), with :func:`write_mosaic`::

    <base>/vrt/<date>.vrt          mosaic of the grid's tile COGs of the date (extent: the region's tiles)
    <base>/quicklook/<date>.png    SSM of the VRT (decimated read), colour bar, region outline

``<base>`` is the staging folder for the product grid and ``agg/<grid>`` below it for a coarse
grid, whose tiles are first aggregated from the staged fine Parquet files on the executors
(:func:`ssm_spark.product.aggregate.run_aggregates`). :func:`finish_date` does a date's whole part
and lists its staged outputs for the marker.

A product on a store (``job.staging`` a URL: the date's staging prefix, where the executors PUT
the tiles): the VRTs and quicklooks are still written by the driver into its local staging folder
(the VRT's bytes unchanged, its sources relative), but the quicklook is rendered from a temporary
VRT (in a temporary folder of the driver) whose sources are the staged COGs' GDAL paths
(``/vsis3/...``), and the outputs
listed for the marker are the staging prefix's objects (one listing, checked against the tiles'
summaries) with the driver's own files, in the order a local run lists them.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ssm_spark import storage
from ssm_spark.errors import InputIOError
from ssm_spark.grid import Grid
from ssm_spark.product.aggregate import AggJob, AggTarget, coarse_tiles, run_aggregates
from ssm_spark.product.commit import components
from ssm_spark.product.quicklook import render_quicklook
from ssm_spark.product.region import Region
from ssm_spark.product.tasks import reduce_tiles
from ssm_spark.product.tiles import DateJob, staged_path, store_error_of, tile_name
from ssm_spark.product.vrt import vrt_xml, write_vrt

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

    from ssm_spark.config import ProduceConfig

__all__ = ["Quicklook", "write_mosaic", "aggregate_date", "StagedDate", "finish_date"]

_IDS = ("manifest_id", "config_hash", "product_hash")


@dataclass(frozen=True)
class Quicklook:
    """How a grid's quicklook is drawn (:func:`ssm_spark.product.quicklook.render_quicklook`)."""

    title: str
    outline_xy: Sequence[np.ndarray]
    max_px: int
    vrange: tuple[float, float]
    metadata: dict[str, str]  # PNG text chunks, in order


def write_mosaic(base: Path, date: str, grid: Grid, tiles: Sequence[tuple[int, int]],
                 extent: Sequence[tuple[int, int]], bands: Sequence[str], tags: dict, *, blocksize: int = 0,
                 quicklook: Quicklook | None = None, cogs: str | None = None, read_vrt: Path | None = None) -> None:
    """A grid's VRT of the date's tile COGs under ``base``, and its quicklook when asked (and ``ssm`` is a band).

    ``cogs``, ``read_vrt``: the COGs are not under ``base`` but at ``<cogs>/cog/<date>/`` (the GDAL
    path of the grid's staging prefix on a store); the quicklook is then rendered from ``read_vrt``,
    a VRT of the same mosaic with those sources (kept for the STAC item's header read).
    """
    (base / "vrt").mkdir()
    vrt = base / "vrt" / f"{date}.vrt"
    write_vrt(vrt, grid, [(tr, tc, f"../cog/{date}/{tile_name(grid, tr, tc)}.tif") for tr, tc in tiles], extent,
              bands, tags, blocksize=blocksize)
    src = vrt
    if cogs is not None and read_vrt is not None:
        read_vrt.parent.mkdir(parents=True, exist_ok=True)
        read_vrt.write_text(vrt_xml(grid, [(tr, tc, f"{cogs}/cog/{date}/{tile_name(grid, tr, tc)}.tif")
                                           for tr, tc in tiles], extent, bands, tags, blocksize=blocksize))
        src = read_vrt
    if quicklook is not None and "ssm" in bands:
        (base / "quicklook").mkdir()
        render_quicklook(src, base / "quicklook" / f"{date}.png", band=list(bands).index("ssm") + 1,
                         title=quicklook.title, outline_xy=quicklook.outline_xy, max_px=quicklook.max_px,
                         vrange=quicklook.vrange, metadata=quicklook.metadata)


def _quicklook(pc: "ProduceConfig", title: str, outline_xy, metadata: dict) -> Quicklook | None:
    if not pc.quicklook:
        return None
    return Quicklook(title, outline_xy, pc.quicklook_max_px, tuple(pc.quicklook_range), metadata)


def aggregate_date(spark: "SparkSession", pc: "ProduceConfig", job: DateJob, targets: Sequence[AggTarget],
                   written: list, staging: Path, region: Region, title_ids: str = "",
                   read_vrts: Path | None = None, summaries: list | None = None) -> dict:
    """Aggregate the date's staged fine tiles onto the coarser grids (Spark), then each grid's mosaic.

    ``staging``: the driver's local staging folder (the coarse tiles go to ``job.staging``: the same
    folder, or the date's staging prefix on a store); ``read_vrts``: with a staging prefix, the
    folder of the temporary VRTs over its COGs (:func:`write_mosaic`); ``summaries``: a list the
    coarse tiles' summaries are added to.

    Returns per grid: coarse tiles written, coarse cells, cells with an ssm value.
    """
    date = job.date
    remote = storage.is_remote(job.staging)
    bands = (*job.bands, "frac_valid") if job.bands else None
    if not remote:
        for t in targets:
            (staging / "agg" / t.name / "parquet" / f"date={date}").mkdir(parents=True)
            if bands:
                (staging / "agg" / t.name / "cog" / date).mkdir(parents=True)
    else:
        (staging / "agg").mkdir(exist_ok=True)
        for t in targets:
            (staging / "agg" / t.name).mkdir()
    ajob = AggJob(date, job.staging, job.tags, tuple(targets), bands, job.blocksize, job.compress,
                  job.overview_resampling, job.grid)
    fine = [(tr, tc, staged_path(job.staging, "parquet", f"date={date}", f"{job.tile_name(tr, tc)}.parquet"))
            for tr, tc in written]
    spark.sparkContext.setJobDescription(f"ssm-spark produce {date}: aggregate to {', '.join(t.name for t in targets)}")
    try:
        tiles = run_aggregates(spark, ajob, fine)
    except Exception as exc:  # an executor's read or PUT on the store refused: said as the store's error
        err = store_error_of(exc)
        if err is None:
            raise
        raise err from exc
    finally:
        spark.sparkContext.setJobDescription(None)
    if summaries is not None:
        summaries.extend(tiles)
    out = {}
    for t in targets:
        mine = [d for d in tiles if d["target"] == t.name and d["cells"] > 0]
        if bands and mine:
            ql = _quicklook(pc, f"SSM {date}, {t.name} (mean of {job.grid.name}), region {region.name}\n{title_ids}",
                            region.outline_xy(t.grid), {"grid": t.name, **{k: str(job.tags[k]) for k in _IDS}})
            write_mosaic(staging / "agg" / t.name, date, t.grid, [(d["tile_row"], d["tile_col"]) for d in mine],
                         coarse_tiles(job.grid, region.tiles, t), bands,
                         {k: str(v) for k, v in ajob.file_tags(t).items()}, blocksize=job.blocksize, quicklook=ql,
                         cogs=storage.gdal_path(staged_path(job.staging, "agg", t.name)) if remote else None,
                         read_vrt=read_vrts / "agg" / t.name / "vrt" / f"{date}.vrt" if remote and read_vrts else None)
        out[t.name] = {"tiles": len(mine), "cells": int(sum(d["cells"] for d in mine)),
                       "valid": int(sum(d["valid"] for d in mine))}
    return out


@dataclass
class StagedDate:
    """A date with every output in its staging folder, ready to commit."""

    result: dict  # the date's counts (the marker's ``counts``, the run summary's entry)
    failed: list[dict]  # files that could not be read
    rejected: dict[str, int]
    rejected_by_file: list[dict]
    empty: list[dict]
    outputs: dict[str, int]  # every staged file (relative to the product folder) and its size
    aggregate_seconds: float | None
    staged: dict[str, int] = field(default_factory=dict)  # on a store: the staging prefix's objects (rel -> size)
    sources: dict[str, str] = field(default_factory=dict)  # on a store: where each output is read (GDAL paths)


def finish_date(spark: "SparkSession", pc: "ProduceConfig", job: DateJob, n_files: int, tiles: list[dict],
                fused: bool, staging: Path, region: Region, title_ids: str,
                targets: Sequence[AggTarget] = (), read_vrts: Path | None = None) -> StagedDate:
    """The driver's part of a date once its tiles are staged: VRT, quicklook, aggregates, summary.

    ``staging``: the driver's local staging folder of the date. When ``job.staging`` is a store's
    staging prefix (the tiles' objects), ``read_vrts`` is a temporary folder for the VRTs over the
    staged COGs (see the module docstring), and the result also holds the staged objects
    (``staged``) and the GDAL path each output is read from (``sources``, for the STAC item).

    Raises
    ------
    ModelRegistryError
        A tile mostly out of the physical range (:func:`ssm_spark.product.tasks.reduce_tiles`).
    InputIOError
        On a store: an object a tile's summary names is missing from the staging prefix or of
        another size (a lost PUT).
    """
    date = job.date
    remote = storage.is_remote(job.staging)
    red = reduce_tiles(tiles, job, staging)
    if job.bands and red.written:
        ql = _quicklook(pc, f"SSM {date}, {job.grid.name}, region {region.name}\n{title_ids}",
                        region.outline_xy(job.grid), {k: str(job.tags[k]) for k in _IDS})
        write_mosaic(staging, date, job.grid, red.written, region.tiles, job.bands, job.tags,
                     blocksize=job.blocksize, quicklook=ql, cogs=storage.gdal_path(job.staging) if remote else None,
                     read_vrt=read_vrts / "vrt" / f"{date}.vrt" if remote and read_vrts else None)
    t_agg = time.perf_counter()
    coarse: list = []
    aggregates = (aggregate_date(spark, pc, job, targets, red.written, staging, region, title_ids, read_vrts, coarse)
                  if targets and red.written else {})
    t_agg = time.perf_counter() - t_agg
    outputs = {}
    staged: dict[str, int] = {}
    sources: dict[str, str] = {}
    if not remote:
        for rel in components(date, [t.name for t in targets]):
            p = staging / rel
            for q in sorted([p] if p.is_file() else p.rglob("*") if p.is_dir() else []):
                if q.is_file():
                    outputs[str(Path(rel.parts[0]) / q.relative_to(staging / rel.parts[0]))] = q.stat().st_size
    else:
        staged = _staged_objects(job.staging, [*tiles, *coarse])
        found = dict(staged)
        for q in staging.rglob("*"):
            if q.is_file():
                found[q.relative_to(staging).as_posix()] = q.stat().st_size
        for rel in components(date, [t.name for t in targets]):
            key = rel.as_posix()
            outputs.update((k, found[k]) for k in sorted((k for k in found if k == key or k.startswith(key + "/")),
                                                         key=PurePosixPath))
        gdal = storage.gdal_path(job.staging)
        sources = {rel: f"{gdal}/{rel}" for rel in staged}
        for q in (read_vrts.rglob("*.vrt") if read_vrts is not None and read_vrts.is_dir() else []):
            sources[q.relative_to(read_vrts).as_posix()] = str(q)  # the same layout as the VRTs it reads like
    result = red.result(n_files, fused)
    if targets:
        result["aggregates"] = aggregates
    return StagedDate(result, red.failed, red.rejected, red.rejected_by_file, red.empty, outputs,
                      round(t_agg, 2) if targets else None, staged, sources)


def _staged_objects(url: str, summaries: Sequence[dict]) -> dict[str, int]:
    """The objects under a date's staging prefix (rel -> size: one listing), checked against the keys
    and sizes the tasks' summaries say they PUT."""
    fs = storage.filesystem(url)
    root = storage.fs_path(url)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        found = {}
    except Exception as exc:  # noqa: BLE001 - botocore's errors, named in ours
        raise storage.io_error(url, "list it", exc) from exc
    n = len(root) + 1
    have = {k[n:]: int(v["size"]) for k, v in found.items() if v.get("type", "file") != "directory"}
    for s in summaries:
        for rel, size in (json.loads(s["files"]) if s.get("files") else {}).items():
            if have.get(rel) != size:
                raise InputIOError(f"{url}/{rel}: a task wrote {size} bytes there, the store lists "
                                   f"{have.get(rel, 'no object')}: a PUT was lost or the staging prefix was changed "
                                   "by another process; the date is not committed")
    return have
