"""The driver's part of a date once its fine tiles are staged: mosaics, quicklooks and aggregates.

Per grid (the product grid, then each grid of ``produce.aggregate``), with :func:`write_mosaic`::

    <base>/vrt/<date>.vrt          mosaic of the grid's tile COGs of the date (extent: the region's tiles)
    <base>/quicklook/<date>.png    SSM of the VRT (decimated read), colour bar, region outline

``<base>`` is the staging folder for the product grid and ``agg/<grid>`` below it for a coarse
grid, whose tiles are first aggregated from the staged fine Parquet files on the executors
(:func:`ssm_spark.product.aggregate.run_aggregates`). :func:`finish_date` does a date's whole part
and lists its staged outputs for the marker.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from ssm_spark.grid import Grid
from ssm_spark.product.aggregate import AggJob, AggTarget, coarse_tiles, run_aggregates
from ssm_spark.product.commit import components
from ssm_spark.product.quicklook import render_quicklook
from ssm_spark.product.region import Region
from ssm_spark.product.tasks import reduce_tiles
from ssm_spark.product.tiles import DateJob, tile_name
from ssm_spark.product.vrt import write_vrt

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
                 quicklook: Quicklook | None = None) -> None:
    """A grid's VRT of the date's tile COGs under ``base``, and its quicklook when asked (and ``ssm`` is a band)."""
    (base / "vrt").mkdir()
    vrt = base / "vrt" / f"{date}.vrt"
    write_vrt(vrt, grid, [(tr, tc, f"../cog/{date}/{tile_name(grid, tr, tc)}.tif") for tr, tc in tiles], extent,
              bands, tags, blocksize=blocksize)
    if quicklook is not None and "ssm" in bands:
        (base / "quicklook").mkdir()
        render_quicklook(vrt, base / "quicklook" / f"{date}.png", band=list(bands).index("ssm") + 1,
                         title=quicklook.title, outline_xy=quicklook.outline_xy, max_px=quicklook.max_px,
                         vrange=quicklook.vrange, metadata=quicklook.metadata)


def _quicklook(pc: "ProduceConfig", title: str, outline_xy, metadata: dict) -> Quicklook | None:
    if not pc.quicklook:
        return None
    return Quicklook(title, outline_xy, pc.quicklook_max_px, tuple(pc.quicklook_range), metadata)


def aggregate_date(spark: "SparkSession", pc: "ProduceConfig", job: DateJob, targets: Sequence[AggTarget],
                   written: list, staging: Path, region: Region, title_ids: str = "") -> dict:
    """Aggregate the date's staged fine tiles onto the coarser grids (Spark), then each grid's mosaic.

    Returns per grid: coarse tiles written, coarse cells, cells with an ssm value.
    """
    date = job.date
    bands = (*job.bands, "frac_valid") if job.bands else None
    for t in targets:
        (staging / "agg" / t.name / "parquet" / f"date={date}").mkdir(parents=True)
        if bands:
            (staging / "agg" / t.name / "cog" / date).mkdir(parents=True)
    ajob = AggJob(date, str(staging), job.tags, tuple(targets), bands, job.blocksize, job.compress,
                  job.overview_resampling, job.grid)
    fine = [(tr, tc, str(staging / "parquet" / f"date={date}" / f"{job.tile_name(tr, tc)}.parquet"))
            for tr, tc in written]
    spark.sparkContext.setJobDescription(f"ssm-spark produce {date}: aggregate to {', '.join(t.name for t in targets)}")
    try:
        tiles = run_aggregates(spark, ajob, fine)
    finally:
        spark.sparkContext.setJobDescription(None)
    out = {}
    for t in targets:
        mine = [d for d in tiles if d["target"] == t.name and d["cells"] > 0]
        if bands and mine:
            ql = _quicklook(pc, f"SSM {date}, {t.name} (mean of {job.grid.name}), region {region.name}\n{title_ids}",
                            region.outline_xy(t.grid), {"grid": t.name, **{k: str(job.tags[k]) for k in _IDS}})
            write_mosaic(staging / "agg" / t.name, date, t.grid, [(d["tile_row"], d["tile_col"]) for d in mine],
                         coarse_tiles(job.grid, region.tiles, t), bands,
                         {k: str(v) for k, v in ajob.file_tags(t).items()}, blocksize=job.blocksize, quicklook=ql)
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


def finish_date(spark: "SparkSession", pc: "ProduceConfig", job: DateJob, n_files: int, tiles: list[dict],
                fused: bool, staging: Path, region: Region, title_ids: str,
                targets: Sequence[AggTarget] = ()) -> StagedDate:
    """The driver's part of a date once its tiles are staged: VRT, quicklook, aggregates, summary.

    Raises
    ------
    ModelRegistryError
        A tile mostly out of the physical range (:func:`ssm_spark.product.tasks.reduce_tiles`).
    """
    date = job.date
    red = reduce_tiles(tiles, job, staging)
    if job.bands and red.written:
        ql = _quicklook(pc, f"SSM {date}, {job.grid.name}, region {region.name}\n{title_ids}",
                        region.outline_xy(job.grid), {k: str(job.tags[k]) for k in _IDS})
        write_mosaic(staging, date, job.grid, red.written, region.tiles, job.bands, job.tags,
                     blocksize=job.blocksize, quicklook=ql)
    t_agg = time.perf_counter()
    aggregates = (aggregate_date(spark, pc, job, targets, red.written, staging, region, title_ids)
                  if targets and red.written else {})
    t_agg = time.perf_counter() - t_agg
    outputs = {}
    for rel in components(date, [t.name for t in targets]):
        p = staging / rel
        for q in sorted([p] if p.is_file() else p.rglob("*") if p.is_dir() else []):
            if q.is_file():
                outputs[str(Path(rel.parts[0]) / q.relative_to(staging / rel.parts[0]))] = q.stat().st_size
    result = red.result(n_files, fused)
    if targets:
        result["aggregates"] = aggregates
    return StagedDate(result, red.failed, red.rejected, red.rejected_by_file, red.empty, outputs,
                      round(t_agg, 2) if targets else None)
