"""The ``ssm-spark`` command and the ``jobs/*.py`` spark-submit entry points share this module.

``ssm-spark <job> ARGS`` and ``spark-submit jobs/<job>.py ARGS`` take the same arguments: each job
is declared once here (its arguments and the library function it calls). Only this module configures
logging (``-v``/``-q``). Exit codes: 0 success, 2 a user error (:class:`~ssm_spark.errors.SSMError`:
bad config, bad input, missing jars), 1 anything unexpected.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import re
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ssm_spark import __version__
from ssm_spark.config import Config, load_config
from ssm_spark.errors import ConfigError, SSMError

log = logging.getLogger("ssm_spark.cli")


@dataclass(frozen=True)
class Job:
    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace, Config], int]


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", action="append", metavar="FILE",
                        help="YAML configuration file; repeat to layer files (default: conf/default.yaml)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                        help="override one configuration key, e.g. --set spark.master=local[1]; repeatable")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="count", default=0, help="less logging")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at each record, not the stream it was when the handler was
    made: a caller (a notebook, pytest's capture) that swaps and later closes ``sys.stderr`` would
    otherwise leave a handler on a closed stream ("--- Logging error ---" at every later record)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # noqa: ANN201 - logging's attribute
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # noqa: ANN001 - set by StreamHandler.__init__; sys.stderr rules
        pass


def configure_logging(verbose: int = 0, quiet: int = 0) -> None:
    level = logging.INFO - 10 * verbose + 10 * quiet
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S", force=True, handlers=[_StderrHandler()])
    logging.getLogger("py4j").setLevel(logging.WARNING)


def iso_date(value: str) -> dt.date:
    """An argparse ``type``: ``YYYY-MM-DD`` -> :class:`datetime.date` (else a usage error naming the value)."""
    try:
        return dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a date YYYY-MM-DD") from None


def iso_dates(value: str) -> list[dt.date]:
    """An argparse ``type``: comma-separated ``YYYY-MM-DD`` -> sorted dates (else a usage error: no
    date, a bad one, or one given twice)."""
    parts = [p.strip() for p in value.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError(f"{value!r} holds no date (comma-separated YYYY-MM-DD)")
    dates = [iso_date(p) for p in parts]
    twice = sorted({d for d in dates if dates.count(d) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(map(str, twice))} given more than once in {value!r}")
    return sorted(dates)


# -- jobs ---------------------------------------------------------------------------------------
def _published(summary: dict, local: Path, output: str) -> dict:
    """A summary with the local staging path of an output on a store replaced by its URL."""
    if str(local) == str(output):
        return summary
    text = json.dumps(summary, default=str).replace(json.dumps(str(local))[1:-1], output.rstrip("/"))
    return json.loads(text)


def _args_none(parser: argparse.ArgumentParser) -> None:
    return None


def _run_config(args: argparse.Namespace, cfg: Config) -> int:
    print(cfg.to_yaml(), end="")
    print(f"# config hash: {cfg.hash()}")
    return 0


def _args_demo(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", default="out/demo",
                        help="folder for the demo's outputs (default: out/demo), or s3://bucket/prefix (each part "
                             "published when done, the product date by date; a re-run resumes the product)")


def _run_demo(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark import storage
    from ssm_spark.demo import run_demo

    # a URL as given: Path would fold its "//"
    summary = run_demo(cfg, args.output if storage.is_remote(args.output) else Path(args.output))
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _args_simulate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="folder for the simulated region (stacks/, static/, insitu/, "
                                                       "truth/), or s3://bucket/prefix (published)")


def _run_simulate(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark import storage
    from ssm_spark.sources.simulate import simulate

    with storage.staged(args.output, "simulated region") as out:  # a URL: written locally, then published
        summary = simulate(cfg, out).to_dict()
    print(json.dumps(_published(summary, out, args.output), indent=2, default=str))
    return 0


def _args_stacks(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--stacks", required=True, help="folder of <YYYY-MM-DD>/ folders of feature-stack GeoTIFFs, "
                                                       "or its s3:// URL (read in place through GDAL)")
    parser.add_argument("--static", default=None, help="folder (or URL) of static layers (default: a static/ folder "
                                                       "beside --stacks)")


def _stacks_arg(value: str) -> "Path | str":
    """A ``--stacks``/``--static`` value: a local folder as a Path; a URL as it is (read in place by GDAL,
    ``/vsis3/...``, in the executors: :func:`ssm_spark.sources.stacks.discover`)."""
    from ssm_spark import storage

    return value if storage.is_remote(value) else Path(value)


def _insitu_arg(value: str) -> Path:
    """An ``--insitu`` value: a local folder or zip; a URL (a published folder or one object, e.g. the ISMN
    ``.zip``) fetched once into the read cache (:func:`ssm_spark.storage.local_copy`, exit 2 naming the
    URL when nothing is published there)."""
    from ssm_spark import storage

    return storage.local_copy(value, "in-situ (ISMN) download") if storage.is_remote(value) else Path(value)


def _args_features(parser: argparse.ArgumentParser) -> None:
    _args_stacks(parser)
    parser.add_argument("--output", required=True, help="Parquet dataset of pixels with coupled features (by date), "
                                                       "or s3://bucket/prefix (published)")


def _run_features(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark import storage
    from ssm_spark.pipeline import features_run
    from ssm_spark.spark import session

    # a URL: the executors stage the dataset's files on the store, the driver publishes them (remote_dataset)
    out = storage.url_of(args.output).rstrip("/") if storage.is_remote(args.output) else Path(args.output)
    summary = features_run(session(cfg.spark), cfg, _stacks_arg(args.stacks), out,
                           _stacks_arg(args.static) if args.static else None)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _args_matchups(parser: argparse.ArgumentParser) -> None:
    src = parser.add_mutually_exclusive_group(required=True)
    src.add_argument("--stacks", help="folder of <YYYY-MM-DD>/ folders of feature-stack GeoTIFFs, or its s3:// URL "
                                      "(with --insitu)")
    src.add_argument("--table", help="a user's own matchup table, CSV or Parquet (column mapping: the table section of the config)")
    src.add_argument("--source", choices=["ee"], help="'ee': the stations' cells sampled from Earth Engine (with --insitu)")
    parser.add_argument("--static", default=None, help="folder of static layers (default: a static/ folder beside --stacks)")
    parser.add_argument("--insitu", help="ISMN download (header_values or CEOP format, folder or .zip), or its s3:// "
                                         "URL (a published folder or the .zip: fetched once into the read cache); "
                                         "with --stacks")
    parser.add_argument("--output", required=True, help="matchup table (Parquet); or s3://bucket/key (published)")


def _run_matchups(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark import storage
    from ssm_spark.pipeline import matchups_run, table_matchups_run

    if not args.table and not args.insitu:
        raise ConfigError(f"matchups --{'source ee' if args.source == 'ee' else 'stacks'} needs --insitu (an ISMN download)")
    # an s3:// (gs://, abfss://) --output: a Spark dataset is staged on the store by the executors and published
    # (remote_dataset); a user's table (pandas, one file) is written locally, then published (storage.staged)
    direct = storage.is_remote(args.output) and not args.table
    with (nullcontext(storage.url_of(args.output).rstrip("/")) if direct
          else storage.staged(args.output, "matchup table")) as out:
        if args.table:  # a URL: the published table (or one object) from the read cache
            summary = table_matchups_run(cfg, storage.local_copy(args.table, "matchup table"), out)
        elif args.source == "ee":  # ssm_spark.sources.earthengine.matchups (point extraction, then the stack path's steps)
            from ssm_spark.sources.earthengine.matchups import ee_matchups_run
            from ssm_spark.spark import session

            summary = ee_matchups_run(session(cfg.spark), cfg, _insitu_arg(args.insitu), out)
        else:
            from ssm_spark.spark import session

            summary = matchups_run(session(cfg.spark), cfg, _stacks_arg(args.stacks), _insitu_arg(args.insitu), out,
                                   _stacks_arg(args.static) if args.static else None)
    print(json.dumps(_published(summary, out, args.output), indent=2, default=str))
    return 0


def _args_train(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--matchups", required=True, help="matchup table (Parquet or CSV in the matchup contract), "
                                                         "or its s3:// URL")
    parser.add_argument("--output", required=True, help="model registry folder (manifest.json, cv_metrics.json, "
                                                       "models/, report.html), or s3://bucket/prefix (published)")


def _run_train(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark.pipeline import train_run
    from ssm_spark.spark import session

    from ssm_spark import storage

    matchups = storage.local_copy(args.matchups, "matchup table")  # a URL: downloaded once (cached by its marker)
    with storage.staged(args.output, "model registry") as out:  # a URL: written locally, then published
        summary = train_run(session(cfg.spark), cfg, matchups, out)
    print(json.dumps(_published(summary, out, args.output), indent=2, default=str))
    return 0


def _args_validate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--product", required=True,
                        help="product Parquet (row, col, date, ssm[, ssm_p05, ssm_p95, env, qc]); or its URL, "
                             "s3://bucket/prefix/product/parquet (only the dates committed there are read)")
    parser.add_argument("--insitu", required=True, help="ISMN download (header_values or CEOP format, folder or .zip), "
                                                       "or its s3:// URL (a published folder or the .zip)")
    parser.add_argument("--output", required=True, help="folder for metrics.json, pairs.parquet, report.html; or "
                                                       "s3://bucket/prefix (published)")
    parser.add_argument("--estimate", default="ssm", help="the product's estimate column (default: ssm)")


def _run_validate(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark.pipeline import validate_run
    from ssm_spark.spark import session

    from ssm_spark import storage

    insitu = _insitu_arg(args.insitu)  # a URL: fetched once into the read cache
    with storage.staged(args.output, "validation report") as out:  # a URL: written locally, then published
        product = args.product if storage.is_remote(args.product) else Path(args.product)  # a URL as given
        res = validate_run(session(cfg.spark), cfg, product, insitu, out, args.estimate)
    print(json.dumps({"overall": res["overall"], "pairs": res["pairs"], "output": args.output}, indent=2, default=str))
    return 0


def _args_produce(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True,
                        help="model registry folder (from ssm-spark train), or its s3:// URL")
    _args_stacks(parser)
    parser.add_argument("--region", default=None,
                        help="bbox lon_min,lat_min,lon_max,lat_max (write --region=-5,40,3,45 when it starts with "
                             "'-'), a GeoJSON file (lon/lat polygons), or a region name (produce.regions, or the "
                             "configured region's name); default: the configured region")
    parser.add_argument("--start", default=None, type=iso_date,
                        help="first date YYYY-MM-DD (default: the first stack date)")
    parser.add_argument("--end", default=None, type=iso_date,
                        help="last date YYYY-MM-DD, inclusive (default: the last stack date)")
    parser.add_argument("--output", required=True,
                        help="product folder (parquet/, cog/, vrt/, quicklook/, product.json)")
    parser.add_argument("--force", action="store_true", help="recompute dates that are already complete")
    parser.add_argument("--break-lock", action="store_true",
                        help="take over the output's lock (_LOCK.json) even while it is fresh: only when its holder, "
                             "named by the refusal, is known to be gone (a lock not refreshed for SSM_LOCK_STALE_S, "
                             "default 120 s, or whose process is dead on this host, is taken over without it)")


def _run_produce(args: argparse.Namespace, cfg: Config) -> int:
    """Prints the run summary as JSON; 0 on success (files that could not be read are listed in the
    summary and the markers, and logged)."""
    from ssm_spark.product.produce import produce
    from ssm_spark.spark import session

    # paths as given: a URL (s3://...) must not go through Path, which would fold its "//"
    summary = produce(session(cfg.spark), cfg, args.models, args.stacks, args.region, args.start,
                      args.end, args.output, args.static or None, force=args.force, break_lock=args.break_lock)
    print(json.dumps(summary, indent=2, default=str))
    return 0


def _args_watch(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="model registry folder (from ssm-spark train)")
    _args_stacks(parser)
    parser.add_argument("--region", default=None, help="as for produce: bbox, GeoJSON file or region name")
    parser.add_argument("--start", default=None, type=iso_date, help="ignore dates before YYYY-MM-DD")
    parser.add_argument("--output", required=True, help="product folder (as produce's; the watcher's state: _watch/), "
                        "or s3://bucket/product (published date by date as produce does; state: --state-dir)")
    parser.add_argument("--state-dir", default=None,
                        help="with an --output URL: the local folder of the watcher's state (checkpoint, state.json, "
                             "log.jsonl); default $SSM_STAGING_DIR/watch-<digest of the URL>")
    parser.add_argument("--once", action="store_true", help="process what has landed (availableNow) and exit")
    parser.add_argument("--retry-failed", action="store_true", help="retry dates that failed watch.max_attempts times")
    parser.add_argument("--max-seconds", type=float, default=None, help="stop after this long (default: until Ctrl-C)")


def _run_watch(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark.spark import session
    from ssm_spark.watch import plan, watch

    plan(args.stacks, args.output, args.state_dir, cfg)  # refused by name before a session starts
    # paths as given: a URL (s3://...) must not go through Path, which would fold its "//"
    summary = watch(session(cfg.spark), cfg, args.models, args.stacks, args.region, args.output,
                    args.static or None, once=args.once, start=args.start, retry_failed=args.retry_failed,
                    max_seconds=args.max_seconds, state_dir=args.state_dir)
    print(json.dumps(summary, indent=2, default=str))  # failed dates: in it, in the log and kept to retry
    return 0


def _args_cache(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["list", "prune"],
                        help="list the local copies of published outputs (SSM_CACHE_DIR, else "
                             "~/.cache/ssm-spark/remote), or prune them: per URL the --keep most recently used "
                             "versions stay, then with --max-gb the least recently used go; a copy a running "
                             "process holds is never removed")
    parser.add_argument("--keep", type=int, default=None, help="versions kept per URL (default SSM_CACHE_KEEP, else 2)")
    parser.add_argument("--max-gb", type=float, default=None,
                        help="size bound in GiB (default SSM_CACHE_MAX_GB, else none)")
    parser.add_argument("--dry-run", action="store_true", help="say what prune would remove; remove nothing")


def _run_cache(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark import cache

    if args.action == "list":
        copies = [c.describe() for c in cache.entries()]
        print(json.dumps({"cache": str(cache.cache_dir()), "copies": copies,
                          "bytes": sum(c["bytes"] for c in copies)}, indent=2))
        return 0
    if args.keep is not None and args.keep < 1:
        raise ConfigError(f"cache prune --keep {args.keep}: at least 1 version per URL is kept")
    if args.max_gb is not None and not args.max_gb >= 0:
        raise ConfigError(f"cache prune --max-gb {args.max_gb}: expected a size in GiB, >= 0")
    print(json.dumps(cache.prune(keep=args.keep, dry_run=args.dry_run,
                                 max_bytes_=None if args.max_gb is None else int(args.max_gb * 2 ** 30)), indent=2))
    return 0


def _args_jars(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["fetch", "verify", "path", "jars", "packages"],
                        help="fetch (Maven Central, idempotent) or verify the Sedona jars; print their folder (path), "
                             "their paths for --jars (jars) or their coordinates for --packages (packages)")
    parser.add_argument("dir", nargs="?", default=None,
                        help="jars folder (default: spark.jars.dir, else $SSM_SPARK_JARS, else the checkout's jars/ "
                             "or ~/.cache/ssm-spark/jars-VERSION for an installed wheel)")
    parser.add_argument("--s3a", action="store_true",
                        help="also hadoop-aws and the AWS SDK v2 modules it needs (about 10 MB), for s3a:// paths in Spark")


def _run_jars(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark import jars

    directory = args.dir or cfg.spark.jars.dir
    if args.action == "packages":
        print(jars.maven_packages())
    elif args.action == "path":
        print(jars.jars_dir(directory))
    else:
        paths = jars.fetch(directory, s3a=args.s3a) if args.action == "fetch" else jars.verify(directory, args.s3a)
        if args.action == "jars" and not args.s3a:
            paths += jars.s3a_jars(directory)  # for --jars: S3A's too when they were fetched
        print(",".join(map(str, paths)) if args.action == "jars" else "\n".join(map(str, paths)))
    return 0


def _args_point(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="model registry folder (from ssm-spark train)")
    parser.add_argument("--lat", required=True, type=float, help="latitude, degrees (WGS84)")
    parser.add_argument("--lon", required=True, type=float, help="longitude, degrees (WGS84)")
    parser.add_argument("--date", required=True, type=iso_date,
                        help="date YYYY-MM-DD (with --end: the first date of a series)")
    parser.add_argument("--end", default=None, type=iso_date, help="last date YYYY-MM-DD of a series (inclusive)")
    parser.add_argument("--source", default=None,
                        help="'ee' (Earth Engine, credentials from earthengine.credentials or the environment), "
                             "a stacks folder (<YYYY-MM-DD>/*.tif) or a product folder (from ssm-spark produce)")
    parser.add_argument("--stacks", default=None, help="feature-stack folder (same as --source PATH)")
    parser.add_argument("--static", default=None, help="static layers (default: a static/ folder beside the stacks)")
    parser.add_argument("--climatology", default=None,
                        help="change-detection climatology folder built by produce (OUTPUT/climatology), for "
                             "registries that use it (default: produce.climatology_dir; with --source ee: each "
                             "cell's own, from its Earth Engine series over physics.change_detection.window_start.."
                             "window_end, default the registry's training period)")
    parser.add_argument("--json", action="store_true", help="print the full answer as JSON")


def _run_point(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark.point import run

    return run(args, cfg)


def _args_serve(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--models", required=True, help="model registry folder (from ssm-spark train)")
    parser.add_argument("--stacks", default=None, help="feature-stack folder (<YYYY-MM-DD>/*.tif)")
    parser.add_argument("--static", default=None, help="static layers (default: a static/ folder beside --stacks)")
    parser.add_argument("--product", default=None, help="an existing product folder, answered from for its dates")
    parser.add_argument("--source", default=None, help="'ee' to sample Earth Engine instead of local stacks")
    parser.add_argument("--climatology", default=None,
                        help="change-detection climatology folder built by produce, for registries that use it")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 exposes it)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080; 0: any free port)")
    parser.add_argument("--max-series-days", type=int, default=None,
                        help="longest /series range in days (default: the service's limit, "
                             "ssm_spark.point.MAX_SERIES_DAYS)")
    parser.add_argument("--cache-files", type=int, default=256,
                        help="stack files kept open, their decoded blocks in GDAL's block cache (GDAL_CACHEMAX, "
                             "default 5%% of the memory; about 1.5 MB per 256 x 256 file read; default 256; "
                             "0: open and close them at every read)")


def _run_serve(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark.serve import run

    return run(args, cfg)


def _args_ee_export(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--output", required=True, help="folder of the export state (and, copied from the "
                        "bucket, of the exported stacks/ and static/)")
    parser.add_argument("--region", default=None, help="as for produce: bbox, GeoJSON file or region name")
    parser.add_argument("--start", default=None, type=iso_date, help="first date YYYY-MM-DD")
    parser.add_argument("--end", default=None, type=iso_date, help="last date YYYY-MM-DD (inclusive)")
    parser.add_argument("--dates", default=None, type=iso_dates, help="comma-separated dates instead of --start/--end")
    parser.add_argument("--all-days", action="store_true",
                        help="every day of the range (default, live: only days with a Sentinel-1 scene over the region)")
    parser.add_argument("--no-static", action="store_true", help="skip the static and classes stacks")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the plan and the serialised requests (no network, no credentials)")
    parser.add_argument("--finalize", action="store_true",
                        help="name the bands of exported files copied into --output (after the exports)")


def _run_ee_export(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark.sources.earthengine.export import run

    return run(args, cfg)


def _args_zonal(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--product", required=True, help="product folder (made by ssm-spark produce)")
    parser.add_argument("--zones", required=True, help="zone polygons: GeoJSON, GeoPackage or GeoParquet, any CRS")
    parser.add_argument("--layer", default=None, help="the GeoPackage's feature table (when it has several)")
    parser.add_argument("--id", default=None, dest="id_column", help="the zones' unique id column (default: the "
                        "feature's index in the file)")
    parser.add_argument("--dates", default=None, type=iso_dates,
                        help="comma-separated YYYY-MM-DD (default: every date)")
    parser.add_argument("--approx", action="store_true", help="percentile_approx instead of exact percentiles")
    parser.add_argument("--output", default=None, help="output prefix: PREFIX.parquet (GeoParquet) and PREFIX.csv "
                        "(default: PRODUCT/zonal/<zones file name>)")


def _run_zonal(args: argparse.Namespace, cfg: Config) -> int:
    from ssm_spark.zonal import run

    return run(args, cfg)


JOBS: dict[str, Job] = {
    j.name: j
    for j in [
        Job("demo", "run the whole pipeline end to end on the embedded demo region", _args_demo, _run_demo),
        Job("simulate", "simulate the demo region: feature stacks, ISMN stations, truth", _args_simulate, _run_simulate),
        Job("features", "feature stacks -> pixel table with the coupled physics features (Parquet)", _args_features, _run_features),
        Job("matchups", "feature stacks + ISMN in situ -> matchup table (Parquet)", _args_matchups, _run_matchups),
        Job("train", "matchups -> per-environment candidates, CV selection, model registry and report", _args_train, _run_train),
        Job("produce", "feature stacks + model registry -> regional SSM product (Parquet, tile COGs, VRT, quicklooks)",
            _args_produce, _run_produce),
        Job("watch", "produce each date as its stacks land: Structured Streaming over the stacks folder, exactly "
            "once (checkpoint + markers), latency logged", _args_watch, _run_watch),
        Job("validate", "a product (or any estimates on the grid) against ISMN in situ: metrics and report", _args_validate, _run_validate),
        Job("config", "print the resolved configuration and its hash", _args_none, _run_config),
        Job("point", "SSM at (lat, lon, date) from a registry and stacks, a product or Earth Engine (no Spark)",
            _args_point, _run_point),
        Job("serve", "HTTP point service: /point, /series, /health (binds 127.0.0.1 by default)", _args_serve, _run_serve),
        Job("ee-export", "Earth Engine: export per-date feature stacks on the grid's tiles (task manager, --dry-run)",
            _args_ee_export, _run_ee_export),
        Job("jars", "fetch, verify or locate the Sedona jars (Maven Central -> a folder)", _args_jars, _run_jars),
        Job("cache", "list or prune the local copies of published outputs (registries, matchups read from s3://)",
            _args_cache, _run_cache),
        Job("zonal", "SSM statistics per zone (GeoJSON/GeoPackage/GeoParquet polygons) and date: Sedona "
            "spatial join -> GeoParquet + CSV", _args_zonal, _run_zonal),
    ]
}


def build_parser(jobs: dict[str, Job] | None = None) -> argparse.ArgumentParser:
    jobs = jobs or JOBS
    parser = argparse.ArgumentParser(prog="ssm-spark", description="Surface soil moisture from Sentinel-1 on Spark + Sedona")
    parser.add_argument("--version", action="version", version=f"ssm-spark {__version__}")
    sub = parser.add_subparsers(dest="job", required=True, metavar="JOB")
    for job in jobs.values():
        p = sub.add_parser(job.name, help=job.help, description=job.help)
        _common(p)
        job.add_arguments(p)
    return parser


#: Options that name local files or folders read or written by executors as well as the driver.
PATH_OPTIONS = ("stacks", "static", "insitu", "output", "models", "matchups", "product", "table")


def absolute_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Make relative local paths absolute, on the driver, before any job sees them: on a cluster the
    executors run in their own working folders, where ``sim/stacks`` names nothing (URLs such as
    ``s3://...`` or ``dbfs:/...`` are left as they are)."""
    for name in PATH_OPTIONS:
        value = getattr(args, name, None)
        if isinstance(value, str) and value and not re.match(r"^[a-z][a-z0-9+.-]*:", value):
            setattr(args, name, os.path.abspath(value))
    return args


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``ssm-spark``."""
    args = absolute_paths(build_parser().parse_args(argv))
    configure_logging(args.verbose, args.quiet)
    job = JOBS[args.job]
    t0 = time.perf_counter()
    try:
        cfg = load_config(args.config, args.overrides)
        log.info("ssm-spark %s %s, config hash %s", __version__, job.name, cfg.hash())
        rc = job.run(args, cfg)
    except SSMError as exc:
        log.error("%s", exc)
        return 2
    except OSError as exc:  # an output the user cannot write (permission, read-only, full disk): theirs to fix
        import errno

        if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise
        log.error("cannot write %s: %s (check --output: a folder you may write to, on a filesystem with space)",
                  exc.filename or "the output", exc.strerror or exc)
        return 2
    except KeyboardInterrupt:
        log.error("interrupted")
        return 130
    log.info("%s finished in %.1f s", job.name, time.perf_counter() - t0)
    return rc


def run_job(name: str, argv: list[str] | None = None) -> int:
    """Entry point of ``jobs/<name>.py`` (``spark-submit jobs/<name>.py ARGS``)."""
    argv = sys.argv[1:] if argv is None else argv
    return main([name, *argv])
