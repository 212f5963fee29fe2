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
from typing import TYPE_CHECKING, Callable

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


def _oof_vs_truth(output: Path, grid, matchups: Path | None = None) -> dict:
    """Cross-validated estimates at the stations against the simulated truth of their cells (and the
    stations' own in-situ readings against that truth: the floor set by representativeness error).
    ``matchups``: the matchup table (default ``output/matchups.parquet``)."""
    import pandas as pd

    from ssm_spark.sources.simulate import truth_table
    from ssm_spark.validation import metrics

    oof = pd.read_parquet(output / "models" / "oof_predictions.parquet")
    cells = pd.read_parquet(matchups or output / "matchups.parquet", columns=["station_id", "date", "row", "col"])
    truth = truth_table(output / "sim", grid, cells=set(zip(cells["row"], cells["col"])))
    if not {"row", "col"} <= set(oof.columns):
        oof = oof.merge(cells, on=["station_id", "date"])
    m = oof.merge(truth.rename(columns={"ssm": "truth"}), on=["row", "col", "date"])
    out = {"framework_vs_truth": metrics(m["framework"], m["truth"]), "insitu_vs_truth": metrics(m["ssm"], m["truth"])}
    out.update({f"{c[5:]}_vs_truth": metrics(m[c], m["truth"]) for c in m.columns if c.startswith("pred_")})
    return out


def run_demo(cfg: Config, output: "Path | str", *, hook: "Callable[[str, str], None] | None" = None) -> dict:
    """The whole pipeline on the configured (demo) region.

    simulate -> feature stacks -> pixel table + coupled physics features (Parquet) -> ISMN stations ->
    matchups (Parquet) -> training, selection, registry and report (``output/models/``), without the
    stations held out (``demo.holdout_stations``) -> the product of every date (``output/product/``:
    Parquet, COGs, VRTs, quicklooks) -> its validation against the held-out stations
    (``output/validation/held_out/``, independent), the training stations
    (``output/validation/training/``, in-sample) and the simulated truth of every land cell
    (``output/validation/truth.json``); plus a proof that Sedona's ST_ and RS_ functions run on the
    region's tiles.

    ``output`` may be a URL (``s3://bucket/prefix``; ``gs://``, ``abfss://``): see
    :func:`_run_demo_remote` (the same layout on the store, each part published when complete, the
    product by ``produce``'s own date-by-date commit, so a re-run resumes it). ``hook``: handed to
    :func:`~ssm_spark.product.produce.produce` (tests of interruptions).

    Returns
    -------
    dict
        The run summary, also written to ``output/demo_summary.json``.
    """
    from ssm_spark import storage

    if storage.is_remote(output):
        return _run_demo_remote(cfg, storage.url_of(str(output)).rstrip("/"), hook)
    return _run_demo(cfg, Path(output), None, hook)


def _run_demo_remote(cfg: Config, url: str, hook) -> dict:
    """The demo into ``url``: computed in a local staging folder, every part published as it is done.

    The staging folder is a temporary one under ``SSM_STAGING_DIR`` (else the system's), removed at
    the end, failed or not. The demo holds the lock ``<url>/_LOCK.json`` for the run (a second demo
    into the same URL is refused, naming the holder; :class:`ssm_spark.storage.RemoteLock`). In order:

    - ``sim/`` (stacks, static, insitu, truth, simulation.json): published whole after simulating
      (:func:`ssm_spark.storage.publish`: files PUT, leftovers deleted, ``_PUBLISHED.json`` last);
    - ``features/``, ``matchups.parquet``: Spark datasets written by the executors straight to the store
      (their stacks read there, ``<url>/sim/stacks``), staged under each one's ``_staging/`` prefix and
      published by the driver, marker last (:mod:`ssm_spark.remote_dataset`): nothing of them in the
      staging folder; training reads the published matchups through the read cache
      (:func:`ssm_spark.storage.local_copy`);
    - ``models/``: published when trained;
    - ``product/``: :func:`~ssm_spark.product.produce.produce` with ``output=<url>/product``, its
      stacks read from the store (``<url>/sim/stacks``, GDAL ``/vsis3/``) and its registry from
      ``<url>/models``: each date published with its marker last under the product's own lock, the
      climatology kept at ``product/climatology/``; resume keyed on the store's markers;
    - ``validation/``: computed from the product's committed dates as they are on the store (a
      checked copy, :func:`ssm_spark.validation.remote.committed_product`), published whole;
    - ``demo_summary.json``: one PUT, last; its paths are the URLs. A run deletes the previous one
      first, so the summary is on the store exactly when the last run completed.

    A re-run recomputes every part but the product in its staging folder (all deterministic) and
    publishes it again: a part whose files are byte-identical to the published ones is not rewritten
    (``sim/``: the simulator's files are; ``features/`` and ``matchups.parquet``: their files' names
    and bytes are deterministic), one whose bytes differ only by times is replaced by the same
    content (``models/``: ``manifest.json``'s ``created_utc`` and ``report.html``; the validation reports).
    The product's dates are skipped (the same manifest id, product hash and input objects: the stacks
    were not rewritten, so their ``LastModified`` times are those the markers hold), so a re-run does
    not change the product; a run interrupted in ``produce`` resumes it from its first date without a
    marker.
    """
    import os
    import shutil
    import tempfile

    from ssm_spark import storage

    base = os.environ.get("SSM_STAGING_DIR")
    if base:
        Path(base).mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="ssm-demo-", dir=base or None))
    try:
        with storage.RemoteLock(url, "ssm-spark demo") as lock:
            store = _Store(url, tmp / "demo", lock)
            store.unpublish("demo_summary.json")  # present on the store only once a run has completed
            return _run_demo(cfg, tmp / "demo", store, hook)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


class _Store:
    """Where a remote demo publishes: the URL of each local part, its publication, paths renamed."""

    def __init__(self, url: str, local: Path, lock) -> None:
        self.url, self.local, self.lock = url, local, lock

    def url_of(self, local: Path) -> str:
        return f"{self.url}/{Path(local).relative_to(self.local).as_posix()}"

    def publish(self, local: Path, what: str) -> None:
        from ssm_spark import storage

        self.lock.check()  # still the demo's: else another run owns the URL now
        storage.publish(local, self.url_of(local), what)
        log.info("demo: %s published to %s", what, self.url_of(local))

    def unpublish(self, rel: str) -> None:
        """Delete one object (if there)."""
        from ssm_spark import storage

        storage.delete(f"{self.url}/{rel}")

    def rename(self, summary: dict) -> dict:
        """``summary`` with the staging folder's paths replaced by their URLs."""
        import json

        text = json.dumps(summary, default=str).replace(json.dumps(str(self.local))[1:-1], self.url)
        return json.loads(text)


def _run_demo(cfg: Config, output: Path, store: "_Store | None", hook) -> dict:
    """:func:`run_demo` into the local folder ``output``; with ``store``, each part published when done."""
    import pandas as pd

    from ssm_spark.sources.simulate import simulate
    from ssm_spark.spark import sedona_selfcheck, session

    grid = cfg.grid.build()
    window = cfg.region.window(grid)
    tiles = grid.tiles_for_window(window)
    t0 = time.perf_counter()
    sim = simulate(cfg, output / "sim")
    t_sim = time.perf_counter() - t0
    if store:
        store.publish(output / "sim", "simulated region")
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
    stacks, insitu, matchups = output / "sim" / "stacks", output / "sim" / "insitu", output / "matchups.parquet"
    if store:  # no folder shared with the executors: they read the stacks from the store and stage both datasets
        # there (ssm_spark.remote_dataset: published, marker last); training reads the published matchups' copy
        store.lock.check()
        summary["features"] = features_run(spark, cfg, store.url_of(stacks), store.url_of(output / "features"))
        store.lock.check()
        summary["matchups"] = matchups_run(spark, cfg, store.url_of(stacks), insitu, store.url_of(matchups))
        from ssm_spark import storage

        matchups = storage.local_copy(store.url_of(matchups), "matchup table")  # the read cache, checked
    else:
        summary["features"] = features_run(spark, cfg, stacks, output / "features")
        summary["matchups"] = matchups_run(spark, cfg, stacks, insitu, matchups)
    ids = pd.read_parquet(matchups, columns=["station_id"])["station_id"].unique()
    held = holdout_stations(ids, cfg.demo.holdout_stations)
    summary["train"] = train_run(spark, cfg, matchups, output / "models", exclude_stations=held)
    summary["train"]["vs_truth"] = _oof_vs_truth(output, grid, matchups)
    if store:
        store.publish(output / "models", "model registry")
    if cfg.demo.produce:
        summary.update(_demo_product(spark, cfg, output, grid, held, [s for s in map(str, ids) if s not in held],
                                     store, hook))
    if store:
        summary = store.rename(summary)
    write_json_atomic(output / "demo_summary.json", summary, default=str)
    if store:
        store.publish(output / "demo_summary.json", "demo summary")
    log.info("demo summary written to %s", store.url_of(output / "demo_summary.json") if store
             else output / "demo_summary.json")
    return summary


def _demo_product(spark: "SparkSession", cfg: Config, output: Path, grid, held: list[str],
                  trained: list[str], store: "_Store | None" = None, hook=None) -> dict:
    """Produce every simulated date of the region, then validate the product three ways.

    With ``store``: the product is produced into its URL from the stacks and the registry on the
    store, and validated from its committed dates as they are there (a checked copy in the staging
    folder); the validation folder is published when done."""
    from ssm_spark.product.produce import produce
    from ssm_spark.validation.truth import product_vs_truth

    keys = ("R", "ubRMSE", "bias", "RMSE", "n", "stations")
    if store:
        from ssm_spark.validation.remote import committed_product

        purl = store.url_of(output / "product")
        prod = produce(spark, cfg, store.url_of(output / "models"), store.url_of(output / "sim" / "stacks"), None,
                       None, None, purl, hook=hook, staging_dir=output)  # its working folder: output/product
        product = committed_product(purl, output.parent / "product-read")  # what the store holds, committed
        source = f"{purl}/parquet"
    else:
        prod = produce(spark, cfg, output / "models", output / "sim" / "stacks", None, None, None, output / "product",
                       hook=hook)
        product, source = output / "product", None
    t0 = time.perf_counter()
    val: dict = {}
    for name, ids, title in (("held_out", held, "held-out stations (not used in training): independent"),
                             ("training", trained, "training stations: in-sample, not independent")):
        if not ids:
            continue
        r = validate_run(spark, cfg, product / "parquet", output / "sim" / "insitu",
                         output / "validation" / name, stations=ids,
                         title=f"ssm-spark demo product vs in situ, {title}", source=source)
        val[name] = {"stations": len(ids), "pooled": {k: r["overall"]["pooled"].get(k) for k in keys},
                     "report": str(output / "validation" / name / "report.html")}
    truth = product_vs_truth(product, output / "sim", grid)
    write_json_atomic(output / "validation" / "truth.json", truth, default=str)
    if store:
        store.publish(output / "validation", "validation reports")
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
