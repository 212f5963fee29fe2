"""End-to-end runs that chain the jobs (the README's main command: ``ssm-spark demo``)."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from ssm_spark.config import Config

log = logging.getLogger(__name__)


def write_json_atomic(path: Path, data: dict) -> None:
    """Write JSON to ``path`` through a temporary file and a rename, so readers never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n")
    os.replace(tmp, path)


def run_demo(cfg: Config, output: Path) -> dict:
    """Run what exists of the pipeline on the configured (demo) region and summarise it.

    Now: build the Spark session with Sedona, prove Sedona's ST_ and RS_ functions on the demo
    region's tiles, and describe the region's grid and tiles.

    Returns
    -------
    dict
        The run summary, also written to ``output/demo_summary.json``.
    """
    from ssm_spark.spark import sedona_selfcheck, session

    grid = cfg.grid.build()
    window = cfg.region.window(grid)
    tiles = grid.tiles_for_window(window)
    spark = session(cfg.spark)
    summary = {
        "config_hash": cfg.hash(),
        "spark": spark.version,
        "grid": grid.describe(),
        "region": {"name": cfg.region.name, "window": {"row_off": window.row_off, "col_off": window.col_off,
                                                       "height": window.height, "width": window.width},
                   "cells": window.height * window.width},
        "tiles": [{"tile_row": tr, "tile_col": tc, "bounds_lonlat": [round(v, 5) for v in grid.tile_polygon(tr, tc).bounds]}
                  for tr, tc in tiles],
        "sedona_check": sedona_selfcheck(spark, grid, tiles),
    }
    write_json_atomic(output / "demo_summary.json", summary)
    log.info("demo summary written to %s", output / "demo_summary.json")
    return summary
