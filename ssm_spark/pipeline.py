"""Runs that chain the library into jobs: features, matchups, training, validation.

Outputs are written atomically (:mod:`ssm_spark.parquet`, :mod:`ssm_spark.io`): a Parquet dataset is
written to a hidden sibling folder and renamed into place only when complete, so no half-written
output is ever visible; a re-run replaces it. The end-to-end demo is :mod:`ssm_spark.demo`.
"""

from __future__ import annotations

import logging
import posixpath
import time
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from ssm_spark.config import Config
from ssm_spark.io import write_json_atomic
from ssm_spark.parquet import write_parquet_atomic, write_table_atomic

if TYPE_CHECKING:  # pragma: no cover
    from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def _static_dir_for(stacks: "Path | str") -> "Path | str | None":
    """The ``static/`` folder beside the stacks, if there is one (a URL's: ``<parent>/static`` listed on the store)."""
    from ssm_spark import storage

    if storage.is_remote(stacks):
        cand = posixpath.join(posixpath.dirname(str(stacks).rstrip("/")), "static")
        return cand if storage.listdir(cand) else None
    cand = Path(stacks).parent / "static"
    return cand if cand.is_dir() else None


def features_run(spark: "SparkSession", cfg: Config, stacks: Path, output: Path, static: Path | None = None,
                 params=None) -> dict:
    """Feature stacks -> pixel table -> coupled physics features -> Parquet (partitioned by date).

    Returns
    -------
    dict
        Files read and quarantined, pixel counts (total, masked, with a retrieval-ready WCM value).
    """
    from pyspark.sql import functions as F

    from ssm_spark import storage
    from ssm_spark.environments import MASK_BITS
    from ssm_spark.sources.stacks import discover, inventory_summary, pixel_schema, read_pixels
    from ssm_spark.transforms import features_fn

    grid = cfg.grid.build()
    t0 = time.perf_counter()
    inv = discover(stacks, grid, static or _static_dir_for(stacks), cfg.ingest.band_aliases)
    fn, ddl = features_fn(pixel_schema(grid), params)
    feats = read_pixels(spark, inv, grid, cfg.ingest.max_slope_deg, then=fn, schema=ddl)  # one Python stage
    if storage.is_remote(output):  # staged on the store by the executors, published (no folder shared with them)
        from ssm_spark.remote_dataset import write_dataset

        res = write_dataset(feats, output, ["date"], what="feature table", stats=feature_counts,
                            check=lambda r: r["rows"] or _no_pixels(inv, output))
        counts = {k: res["stats"].get(k, 0) for k in ("pixels", "masked", "with_mv_wcm")}  # the tasks' own counts
    else:
        write_parquet_atomic(feats, output, ["date"])
        if not any(Path(output).rglob("*.parquet")):  # every file failed to read (e.g. a store the executors cannot reach)
            _no_pixels(inv, output)
        written = spark.read.parquet(str(output))
        counts = written.agg(
            F.count(F.lit(1)).alias("pixels"),
            F.sum((F.col("qc").bitwiseAND(F.lit(MASK_BITS)) != 0).cast("long")).alias("masked"),
            F.sum(F.col("mv_wcm").isNotNull().cast("long")).alias("with_mv_wcm"),
        ).first().asDict()
    secs = time.perf_counter() - t0
    summary = {"stacks": inventory_summary(inv), **{k: int(v or 0) for k, v in counts.items()},
               "output": str(output), "seconds": round(secs, 1),
               "pixels_per_s": round(counts["pixels"] / secs) if secs else None}
    log.info("features: %d pixels (%d masked) in %.1f s -> %s", summary["pixels"], summary["masked"], secs, output)
    return summary


def feature_counts(table) -> dict[str, int]:
    """A feature file's counts for the run's summary (Arrow, on the executors; :mod:`ssm_spark.remote_dataset`):
    pixels, masked (a ``MASK_BITS`` QC bit set), with a WCM retrieval (``mv_wcm`` not null), as the local run
    counts them on the written dataset."""
    import pyarrow.compute as pc

    from ssm_spark.environments import MASK_BITS

    masked = pc.sum(pc.not_equal(pc.bit_wise_and(table["qc"], MASK_BITS), 0).cast("int64")).as_py()
    return {"pixels": table.num_rows, "masked": int(masked or 0),
            "with_mv_wcm": table.num_rows - table["mv_wcm"].null_count}


def _no_pixels(inv, output: Path) -> None:
    """Refuse a feature run that read no pixel at all, naming why (the written, empty folder removed; on a
    store nothing was published)."""
    import shutil

    from ssm_spark import storage
    from ssm_spark.errors import InputIOError
    from ssm_spark.sources.stacks import inventory_summary

    bad = inventory_summary(inv)["quarantined"]
    if not storage.is_remote(output):
        shutil.rmtree(output, ignore_errors=True)
    first = f"; first: {bad[0]['reason']}" if bad else ""  # the reason names its file
    raise InputIOError(f"features: no pixel read from {len(inv.files)} stack file(s), {len(bad)} unreadable{first}. "
                       "(Files on an object store are read by the executors: they need the store's endpoint and "
                       "credentials in their own environment: spark.executorEnv.*, or the cluster's role)")


def matchups_run(spark: "SparkSession", cfg: Config, stacks: Path, insitu: Path, output: Path,
                 static: Path | None = None, params=None) -> dict:
    """Stacks + ISMN in situ -> matchup table (Parquet), with the coupled features of each pixel."""
    from ssm_spark.insitu import daily_means, read_ismn
    from ssm_spark.matchups import candidate_cells, locate_stations, write_station_matchups
    from ssm_spark.sources.stacks import discover, inventory_summary, read_pixels

    grid = cfg.grid.build()
    t0 = time.perf_counter()
    ins = read_ismn(insitu, max_depth_m=cfg.insitu.max_depth_m, depth_tolerance_m=cfg.insitu.depth_tolerance_m,
                    good_flags=tuple(cfg.insitu.good_flags))
    daily = daily_means(ins.observations)
    inv = discover(stacks, grid, static or _static_dir_for(stacks), cfg.ingest.band_aliases)
    located, _ = locate_stations(daily[["station_id", "network", "lon", "lat"]], grid)
    cells = [(r, c) for *_, r, c, _own in candidate_cells(located, grid, cfg.matchups.tolerance_m)]
    pixels = read_pixels(spark, inv, grid, cfg.ingest.max_slope_deg, cells=cells)
    n, report, cov = write_station_matchups(spark, cfg, pixels, daily, grid, output, params, "stack dates")
    summary = {"insitu": ins.report, "stacks": inventory_summary(inv), "matchups": report, "rows": n,
               "output": str(output), "seconds": round(time.perf_counter() - t0, 1)}
    if cov is not None:   # station cells whose stack series is too short: no change-detection features
        summary["change_detection"] = cov
    log.info("matchups: %d rows from %d stations -> %s", n, report["stations_located"], output)
    return summary


def table_matchups_run(cfg: Config, table: Path, output: Path, params=None) -> dict:
    """A user's matchup table -> the matchup contract with the coupled physics features (no Spark:
    user tables are small). Features that need an absent column (VV, incidence) are dropped."""
    from ssm_spark.physics.features import coupled_features, radar_vegetation_index, vegetation_column
    from ssm_spark.sources.table import import_table

    df, report = import_table(table, cfg.table)
    if cfg.physics.change_detection.enabled:
        df, report["change_detection"] = _table_climatology(df, cfg)
    veg = vegetation_column(df, cfg.physics.vegetation)
    if veg == "rvi":   # no optical index: the radar's own (recorded; the report says so)
        df = df.assign(rvi=radar_vegetation_index(df["vv_db"].to_numpy(float), df["vh_db"].to_numpy(float)))
        report["vegetation_descriptor"] = "rvi (radar vegetation index 4 vh / (vv + vh)): the table has no NDVI"
    feats = coupled_features(df, params, nominal_incidence_deg=cfg.table.nominal_incidence_deg, veg_col=veg)
    write_table_atomic(feats, output)
    added = [c for c in feats.columns if c not in df.columns]
    summary = {"table": report, "rows": len(feats), "features_added": added, "output": str(output)}
    log.info("matchups from table %s: %d rows, %d stations -> %s", table, len(feats), report["stations"], output)
    return summary


def _table_climatology(df, cfg: Config):
    """Each station's change-detection climatology from its own rows of backscatter (never its
    in-situ values), joined to its rows; stations with fewer than ``min_dates`` dates get NaN (and
    the CHANGE_DETECTION_MISSING bit when features are computed)."""
    from ssm_spark.errors import InputError
    from ssm_spark.physics.change_detection import climatology_frame
    from ssm_spark.transforms import cd_kwargs, cd_window

    cdc = cfg.physics.change_detection
    key = cdc.table_group
    if key not in df.columns:
        raise InputError(f"physics.change_detection.table_group {key!r} is not a column of the table "
                         f"(columns: {list(df.columns)})")
    clim = climatology_frame(df, [key], window=cd_window(cdc),
                             nominal_incidence_deg=cfg.table.nominal_incidence_deg, **cd_kwargs(cdc))
    out = df.merge(clim, on=key, how="left", validate="many_to_one")
    usable = clim["clim_n"].ge(cdc.min_dates) if "clim_n" in clim.columns else clim[key].map(lambda _: False)
    report = {"grouped_by": key, "groups": int(len(clim)), "groups_with_climatology": int(usable.sum()),
              "groups_too_few_dates": sorted(map(str, clim.loc[~usable, key]))[:50],
              "min_dates": cdc.min_dates, "window": [str(x) if x else None for x in (cd_window(cdc) or (None, None))]}
    return out, report


def read_matchups(path: Path):
    """A matchup table (Parquet file or dataset folder, or CSV already in the contract) as pandas."""
    import pandas as pd

    from ssm_spark.errors import InputIOError

    path = Path(path)
    if not path.exists():
        raise InputIOError(f"{path}: matchup table not found (build it with `ssm-spark matchups`)")
    try:
        return pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise InputIOError(f"{path}: cannot read the matchup table ({exc})") from exc


def physics_notes(params: dict) -> list[str]:
    """What the physics chain of a registry did, in words for the training report."""
    notes = []
    angle = params.get("angle") or {}
    if angle.get("mode", "none") != "none":
        g = angle.get("slopes", {}).get("global", {})
        slopes = ", ".join(f"{p.upper()} {v['slope']:.3f} dB/deg ({v['source']})" for p, v in g.items())
        notes.append(f"Backscatter normalised to {angle.get('theta_ref')} deg before the WCM "
                     f"({angle['mode']} slopes; global {slopes})"
                     + ("; the table has no incidence angle, so the nominal one was used" if angle.get("nominal_angle")
                        else "") + ".")
    if params.get("vegetation") == "rvi":
        notes.append("No optical vegetation index in the table: the WCM's vegetation descriptor is the radar "
                     "vegetation index 4 vh / (vv + vh) of the backscatter itself.")
    cd = params.get("cd")
    if cd and cd.get("entries"):
        g = cd["entries"]["global"]
        notes.append(f"Change detection: relative wetness from each cell's (station's) own backscatter series; "
                     f"global calibration mv = {g['a']:.3f} + {g['b']:.3f} m_s, per environment where it has the "
                     "stations.")
    if params.get("bound_to_porosity"):
        notes.append("The physics and change_detection estimates are bounded to [0, porosity]; bounded rows carry "
                     "a QC flag.")
    return notes


def train_run(spark: "SparkSession", cfg: Config, matchups: Path, output: Path,
              exclude_stations: "Iterable[str] | None" = None) -> dict:
    """Matchups -> candidates per environment, station-grouped CV, selection, registry, report.

    Writes ``output/manifest.json``, ``output/cv_metrics.json``, ``output/models/...`` (atomically,
    as one folder) and ``output/report.html``. ``exclude_stations``: station ids left out of
    training (kept apart for an independent validation).
    """
    from ssm_spark.models.registry import save_registry
    from ssm_spark.models.spark_train import train_on_spark
    from ssm_spark.validation.report import write_report

    t0 = time.perf_counter()
    table = read_matchups(matchups)
    excluded = sorted(set(map(str, exclude_stations or ())))
    if excluded:
        keep = ~table["station_id"].astype(str).isin(excluded)
        log.info("training without %d held-out station(s) (%d matchups)", len(excluded), int((~keep).sum()))
        table = table[keep].reset_index(drop=True)
    result = train_on_spark(spark, table, cfg)
    manifest = save_registry(output, result, cfg)
    cvm = result.cv_metrics
    oof_cols = [c for c in result.oof.columns if not c.startswith("_")]
    write_table_atomic(result.oof[oof_cols], Path(output) / "oof_predictions.parquet")
    notes = []
    if "incidence_nominal" in table and bool(table["incidence_nominal"].any()):
        notes.append(f"{int(table['incidence_nominal'].sum())} matchups have no incidence angle: the configured nominal "
                     f"{cfg.table.nominal_incidence_deg} deg was used for them.")
    notes.extend(physics_notes(result.ctx.wcm_params))
    oof = result.oof   # with each row's date, lon and lat (models.runner carries them)
    sel_map = oof.groupby("station_id", as_index=False).agg(lon=("lon", "first"), lat=("lat", "first"),
                                                           env=("env", "first"), selected=("selected", "first"))
    report = write_report(
        Path(output) / "report.html", predictions=oof, cv_metrics=cvm, selected_map=sel_map,
        title="ssm-spark training: station-grouped cross-validation",
        provenance={"manifest_id": manifest["manifest_id"], "config_hash": cfg.hash(), "matchups": str(matchups),
                    "k_folds": result.ctx.k},
        notes=notes, columns={"est": "framework", "p05": "lo", "p95": "hi", "time": "date"},
        candidate_cols={c: f"pred_{c}" for c in result.ctx.candidates if f"pred_{c}" in oof})
    overall = cvm["overall"]
    summary = {
        "registry": str(output), "manifest_id": manifest["manifest_id"], "report": str(report),
        "rows": int(len(table)), "stations": int(table["station_id"].nunique()),
        "framework": {k: overall["framework"][k] for k in ("R", "ubRMSE", "bias", "RMSE", "n", "stations")},
        "candidates": {c: {k: m[k] for k in ("R", "ubRMSE")} for c, m in overall["candidates"].items()},
        "selected": {e: v["selected"] for e, v in cvm["environments"].items()},
        "held_out_stations": len(excluded),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    log.info("trained: framework R=%.3f ubRMSE=%.4f on %d stations -> %s (report %s)", overall["framework"]["R"],
             overall["framework"]["ubRMSE"], summary["stations"], output, report)
    return summary


def validate_run(spark: "SparkSession", cfg: Config, product: "Path | str", insitu: Path, output: Path,
                 estimate: str = "ssm", stations: "Iterable[str] | None" = None,
                 title: str = "ssm-spark validation against in situ", source: str | None = None) -> dict:
    """A product (or any estimates on the grid) against ISMN in situ: metrics JSON + HTML report.

    ``stations``: only these station ids (e.g. those held out of training); default every station
    read from ``insitu``.

    The product is Parquet with at least ``row, col, date`` and the estimate column (the product
    contract: ``ssm``, and ``ssm_p05``/``ssm_p95`` when present). Stations are matched to their cell
    (or the nearest usable one, ``matchups.tolerance_m``), in time by ``matchups.window_days``, as
    for training. Writes ``output/metrics.json``, ``output/pairs.parquet`` and ``output/report.html``.

    ``product`` may be a URL (``s3://.../product/parquet`` or ``.../product``): only its committed
    dates (a ``_SUCCESS.json`` on the store) are read, and of those only the tile files of the
    stations' tiles, through a checked local copy cached by the markers
    (:func:`ssm_spark.validation.remote.product_parquet`); a URL without date partitions is read as a
    published output (``_PUBLISHED.json``). ``source``: how to name the product in the metrics and the
    report (default ``product`` as given).
    """
    from pyspark.sql import functions as F

    from ssm_spark import storage
    from ssm_spark.environments import MASK_BITS
    from ssm_spark.errors import InputError
    from ssm_spark.insitu import daily_means, read_ismn
    from ssm_spark.matchups import build_matchups
    from ssm_spark.validation import scores
    from ssm_spark.validation.report import write_report

    grid = cfg.grid.build()
    t0 = time.perf_counter()
    source = source or (storage.url_of(str(product)).rstrip("/") if storage.is_remote(product) else str(product))
    ins = read_ismn(insitu, max_depth_m=cfg.insitu.max_depth_m, depth_tolerance_m=cfg.insitu.depth_tolerance_m,
                    good_flags=tuple(cfg.insitu.good_flags))
    daily = daily_means(ins.observations)
    if stations is not None:
        wanted = set(map(str, stations))
        daily = daily[daily["station_id"].astype(str).isin(wanted)]
        if daily.empty:
            raise InputError(f"{insitu}: none of the {len(wanted)} requested stations has usable readings "
                             f"(first ids: {sorted(wanted)[:5]})")
    if storage.is_remote(product):  # the committed dates' files of the stations' tiles, copied (cached)
        from ssm_spark.matchups import candidate_cells, locate_stations
        from ssm_spark.validation.remote import product_parquet

        located, _ = locate_stations(daily[["station_id", "network", "lon", "lat"]], grid)
        tiles = {(r // grid.tile_size, c // grid.tile_size)
                 for *_, r, c, _own in candidate_cells(located, grid, cfg.matchups.tolerance_m)}
        product = product_parquet(str(product), tiles=tiles, grid_name=grid.name)
        if Path(product).is_dir() and not any(Path(product).rglob("*.parquet")):
            raise InputError(f"{source}: none of its committed dates has a file of the {len(tiles)} tile(s) of the "
                             f"{len(located)} station(s) (tiles {sorted(tiles)[:6]}): the product does not cover them")
    prod = spark.read.parquet(str(product))
    missing = {"row", "col", "date", estimate} - set(prod.columns)
    if missing:
        raise InputError(f"{source}: the product lacks column(s) {sorted(missing)} (needs row, col, date and {estimate!r})")
    prod = prod.withColumnRenamed(estimate, "ssm_est")
    for c in ("qc", "env", "lon", "lat", "grid", "tile_row", "tile_col"):
        if c not in prod.columns:
            prod = prod.withColumn(c, F.lit(0) if c == "qc" else F.lit(None).cast("string" if c in ("env", "grid") else "double"))
    pairs_df, mrep = build_matchups(spark, prod, daily, grid, window_days=cfg.matchups.window_days,
                                    tolerance_m=cfg.matchups.tolerance_m, usable_qc_mask=MASK_BITS)
    pairs = pairs_df.toPandas()
    masked = (pairs["qc"].fillna(0).astype(int) & MASK_BITS) != 0
    scored = pairs[~masked]
    result = scores.to_jsonable(scores.summary(scored, est="ssm_est", obs="ssm"))
    result.update({"product": source, "insitu": str(insitu), "pairs": int(len(pairs)),
                   "pairs_masked": int(masked.sum()), "matchups": mrep, "insitu_report": ins.report,
                   "stations_requested": None if stations is None else len(set(map(str, stations))),
                   "config_hash": cfg.hash()})
    Path(output).mkdir(parents=True, exist_ok=True)
    write_table_atomic(pairs, Path(output) / "pairs.parquet")
    write_json_atomic(Path(output) / "metrics.json", result, default=str)
    cols = {"est": "ssm_est", "time": "date"}
    if "ssm_p05" in scored and "ssm_p95" in scored:
        cols.update(p05="ssm_p05", p95="ssm_p95")
    write_report(Path(output) / "report.html", predictions=scored, title=title,
                 provenance={"product": source, "config_hash": cfg.hash()}, columns=cols)
    pooled = result["overall"]["pooled"]
    log.info("validation: R=%s ubRMSE=%s on %d pairs, %d stations -> %s", pooled["R"], pooled["ubRMSE"],
             pooled["n"], pooled["stations"], output)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    return result
