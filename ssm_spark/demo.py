"""The end-to-end demo: simulate, features, matchups, training, product, validation (``ssm-spark demo``).

:func:`run_demo` chains the library's jobs (:mod:`ssm_spark.pipeline`,
:func:`ssm_spark.product.produce.produce`) on the configured (demo) region, keeps some stations out
of training (:func:`holdout_stations`) and validates the product against them, the training
stations and the simulated truth.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING

from ssm_spark.config import Config
from ssm_spark.io import write_json_atomic
from ssm_spark.pipeline import features_run, matchups_run, train_run, validate_run

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)

__all__ = ["run_demo", "holdout_stations"]


def holdout_stations(station_ids, fraction: float) -> list[str]:
    """The stations kept out of training: those whose id hashes (sha256) below ``fraction``.

    Deterministic and independent of the other stations (adding a station does not move another
    one between the sets)."""
    out = []
    for sid in sorted({str(s) for s in station_ids}):
        h = int.from_bytes(hashlib.sha256(sid.encode()).digest()[:8], "big") / 2.0 ** 64
        if h < fraction:
            out.append(sid)
    return out


def _oof_vs_truth(output: Path, grid) -> dict:
    """Cross-validated estimates at the stations against the simulated truth of their cells (and the
    stations' own in-situ readings against that truth: the floor set by representativeness error)."""
    import pandas as pd

    from ssm_spark.sources.simulate import truth_table
    from ssm_spark.validation import metrics

    oof = pd.read_parquet(output / "models" / "oof_predictions.parquet")
    cells = pd.read_parquet(output / "matchups.parquet", columns=["station_id", "date", "row", "col"])
    truth = truth_table(output / "sim", grid, cells=set(zip(cells["row"], cells["col"])))
    if not {"row", "col"} <= set(oof.columns):
        oof = oof.merge(cells, on=["station_id", "date"])
    m = oof.merge(truth.rename(columns={"ssm": "truth"}), on=["row", "col", "date"])
    out = {"framework_vs_truth": metrics(m["framework"], m["truth"]), "insitu_vs_truth": metrics(m["ssm"], m["truth"])}
    out.update({f"{c[5:]}_vs_truth": metrics(m[c], m["truth"]) for c in m.columns if c.startswith("pred_")})
    return out


def run_demo(cfg: Config, output: Path) -> dict:
    """The whole pipeline on the configured (demo) region.

    simulate -> feature stacks -> pixel table + coupled physics features (Parquet) -> ISMN stations ->
    matchups (Parquet) -> training, selection, registry and report (``output/models/``), without the
    stations held out (``demo.holdout_stations``) -> the product of every date (``output/product/``:
    Parquet, COGs, VRTs, quicklooks) -> its validation against the held-out stations
    (``output/validation/held_out/``, independent), the training stations
    (``output/validation/training/``, in-sample) and the simulated truth of every land cell
    (``output/validation/truth.json``); plus a proof that Sedona's ST_ and RS_ functions run on the
    region's tiles.

    Returns
    -------
    dict
        The run summary, also written to ``output/demo_summary.json``.
    """
    import pandas as pd

    from ssm_spark.sources.simulate import simulate
    from ssm_spark.spark import sedona_selfcheck, session

    output = Path(output)
    grid = cfg.grid.build()
    window = cfg.region.window(grid)
    tiles = grid.tiles_for_window(window)
    t0 = time.perf_counter()
    sim = simulate(cfg, output / "sim")
    t_sim = time.perf_counter() - t0
    spark = session(cfg.spark)
    summary = {
        "config_hash": cfg.hash(),
        "spark": spark.version,
        "grid": grid.describe(),
        "region": {"name": cfg.region.name, "window": {"row_off": window.row_off, "col_off": window.col_off,
                                                       "height": window.height, "width": window.width},
                   "cells": window.height * window.width, "tiles": [list(t) for t in tiles]},
        "sedona_check": sedona_selfcheck(spark, grid, tiles),
        "simulate": {"seconds": round(t_sim, 1), **sim.to_dict()},
    }
    stacks, insitu = output / "sim" / "stacks", output / "sim" / "insitu"
    summary["features"] = features_run(spark, cfg, stacks, output / "features")
    summary["matchups"] = matchups_run(spark, cfg, stacks, insitu, output / "matchups.parquet")
    ids = pd.read_parquet(output / "matchups.parquet", columns=["station_id"])["station_id"].unique()
    held = holdout_stations(ids, cfg.demo.holdout_stations)
    summary["train"] = train_run(spark, cfg, output / "matchups.parquet", output / "models", exclude_stations=held)
    summary["train"]["vs_truth"] = _oof_vs_truth(output, grid)
    if cfg.demo.produce:
        summary.update(_demo_product(spark, cfg, output, grid, held, [s for s in map(str, ids) if s not in held]))
    write_json_atomic(output / "demo_summary.json", summary, default=str)
    log.info("demo summary written to %s", output / "demo_summary.json")
    return summary


def _demo_product(spark: "SparkSession", cfg: Config, output: Path, grid, held: list[str],
                  trained: list[str]) -> dict:
    """Produce every simulated date of the region, then validate the product three ways."""
    from ssm_spark.product.produce import produce
    from ssm_spark.validation.truth import product_vs_truth

    keys = ("R", "ubRMSE", "bias", "RMSE", "n", "stations")
    prod = produce(spark, cfg, output / "models", output / "sim" / "stacks", None, None, None, output / "product")
    t0 = time.perf_counter()
    val: dict = {}
    for name, ids, title in (("held_out", held, "held-out stations (not used in training): independent"),
                             ("training", trained, "training stations: in-sample, not independent")):
        if not ids:
            continue
        r = validate_run(spark, cfg, output / "product" / "parquet", output / "sim" / "insitu",
                         output / "validation" / name, stations=ids,
                         title=f"ssm-spark demo product vs in situ, {title}")
        val[name] = {"stations": len(ids), "pooled": {k: r["overall"]["pooled"].get(k) for k in keys},
                     "report": str(output / "validation" / name / "report.html")}
    truth = product_vs_truth(output / "product", output / "sim", grid)
    write_json_atomic(output / "validation" / "truth.json", truth, default=str)
    val["truth"] = {k: truth[k] for k in ("dates", "pooled", "spatial", "temporal", "coverage")}
    val["seconds"] = round(time.perf_counter() - t0, 1)
    produced = {k: prod[k] for k in ("output", "manifest_id", "product_hash", "produced", "skipped", "pixels",
                                     "seconds", "pixels_per_s", "failed_files")}
    if "climatology" in prod:  # change detection: the climatology stack built (or reused) for the product
        produced["climatology"] = {k: prod["climatology"][k] for k in ("key", "folder", "dates", "window_dates",
                                                                       "computed", "reused", "seconds")}
    if "held_out" in val:
        h, t = val["held_out"]["pooled"], truth["pooled"]
        log.info("demo product: held-out stations R=%.3f ubRMSE=%.4f; truth (every land cell) R=%.3f ubRMSE=%.4f",
                 h["R"], h["ubRMSE"], t["R"], t["ubRMSE"])
    return {"produce": produced, "validation": val}
