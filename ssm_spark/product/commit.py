"""A date's commit: staging, the marker, resume, the product hash and ``product.json``.

A date is computed into ``OUTPUT/_staging/<date>.<random>/`` and then moved into place component
by component (:func:`components`: the Parquet partition first; the old marker removed first, the
new one written last), so a date is complete exactly when its marker
(``parquet/date=<date>/_SUCCESS.json``) exists. The aggregated outputs are components of the date
like the others: the marker lists their files, and the outputs of grids no longer configured are
removed when the date is replaced.

A re-run skips a date whose marker (:func:`is_complete`) has the same manifest id and product hash,
the same input files (names, sizes, modification times: :func:`inputs`) and whose outputs are all
present; any other date is recomputed and replaces the old one. A date's leftover staging folder
(an interrupted run) is removed when the date is next produced or found complete.

The product hash (:func:`product_hash`) covers what decides the product's bytes: the package
version, the ``grid``, ``ingest`` and ``produce`` sections (except ``nthread``, ``tile_grouping``,
``min_files_per_task``, ``keep_tile_memory``, ``dates_in_flight``, ``regions`` and ``climatology_dir``; the ``aggregate*`` keys only when
aggregation is on, so products made without it keep their hash), the resolved region, the
manifest id, and with change detection the digest of the climatology stack the rows get.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import ssm_spark
from ssm_spark import storage
from ssm_spark.io import write_json_atomic
from ssm_spark.product.aggregate import components as agg_components
from ssm_spark.product.region import Region

if TYPE_CHECKING:  # pragma: no cover
    from ssm_spark.config import Config
    from ssm_spark.sources.stacks import StackFile

__all__ = ["MARKER", "STAGING", "product_hash", "inputs", "components", "read_marker", "is_complete",
           "clean_staging", "commit", "write_product_json"]

MARKER = "_SUCCESS.json"
STAGING = "_staging"


def product_hash(cfg: "Config", region: Region, manifest_id: str, climatology: str | None = None) -> str:
    """16-hex-digit hash of what decides a product's bytes (see the module docstring); ``climatology``:
    the digest of the change-detection climatology stack the rows get (None: none)."""
    blob = {"package": ssm_spark.__version__, "grid": cfg.grid.model_dump(mode="json"),
            "ingest": cfg.ingest.model_dump(mode="json"),
            "produce": cfg.produce.model_dump(mode="json", exclude={"nthread", "tile_grouping", "regions",
                                                                      "dates_in_flight", "climatology_dir",
                                                                      "min_files_per_task", "keep_tile_memory"}),
            "region": region.key(), "manifest_id": manifest_id}
    if climatology is not None:
        blob["climatology"] = climatology
    return hashlib.sha256(json.dumps(blob, sort_keys=True, separators=(",", ":")).encode()).hexdigest()[:16]



def inputs(files: Sequence["StackFile"], stacks: Path, quarantined: Sequence[dict] = ()) -> list[dict]:
    """Names, sizes and modification times of a date's inputs (quarantined files included, so that
    replacing a bad file makes the date recompute)."""
    paths = {q["file"] for q in quarantined if storage.exists(q["file"])}
    for f in files:
        paths.update(p for p in (f.path, f.static_path, f.classes_path) if p)
    out = []
    for p in sorted(paths):
        size, mtime_ns = storage.stat(p)  # a local file, or an object (GDAL /vsis3/ path)
        try:
            rel = os.path.relpath(p, stacks.parent)
        except ValueError:
            rel = p
        out.append({"file": rel, "bytes": size, "mtime_ns": mtime_ns})
    return out


def components(date: str, aggregates: Sequence[str] = ()) -> list[Path]:
    """A date's outputs (folders and files, relative to the product folder), the Parquet partition
    first; ``aggregates``: the target grid names of ``produce.aggregate``."""
    return [Path("parquet") / f"date={date}", Path("cog") / date, Path("vrt") / f"{date}.vrt",
            Path("quicklook") / f"{date}.png", *agg_components(date, aggregates)]


def _stale_components(output: Path, date: str, aggregates: Sequence[str]) -> list[Path]:
    """Aggregated outputs of a date for grids no longer configured (removed when the date is replaced)."""
    agg = output / "agg"
    old = sorted(p.name for p in agg.iterdir() if p.is_dir() and p.name not in aggregates) if agg.is_dir() else []
    return [rel for rel in agg_components(date, old) if (output / rel).exists()]


def _marker_path(output: Path, date: str) -> Path:
    return output / "parquet" / f"date={date}" / MARKER


def read_marker(output: Path, date: str) -> dict | None:
    p = _marker_path(output, date)
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def is_complete(marker: dict | None, output: Path, manifest_id: str, phash: str, inputs: list,
                sizes: dict[str, int] | None = None) -> tuple[bool, str]:
    """Whether a date's marker makes it complete (see the module docstring), and if not why; ``sizes``:
    the outputs' sizes by relative path when they are not under ``output`` (an object store's listing)."""
    if marker is None:
        return False, "no marker"
    if marker.get("status") != "complete":
        return False, f"{marker.get('status', 'not complete')} (files failed to read: " + "; ".join(
            f.get("reason", "?") for f in marker.get("failed_files", []))[:500] + ")"
    if marker.get("manifest_id") != manifest_id:
        return False, f"models changed (manifest {marker.get('manifest_id')} -> {manifest_id})"
    if marker.get("product_hash") != phash:
        return False, f"settings or region changed (product hash {marker.get('product_hash')} -> {phash})"
    if marker.get("inputs") != inputs:
        return False, "input files changed"
    for rel, size in marker.get("outputs", {}).items():
        if sizes is not None:
            if sizes.get(rel) != size:
                return False, f"output {rel} missing or changed"
            continue
        p = output / rel
        if not p.is_file() or p.stat().st_size != size:
            return False, f"output {rel} missing or changed"
    return True, ""


def clean_staging(output: Path, date: str | None = None) -> None:
    st = output / STAGING
    if not st.is_dir():
        return
    for p in st.iterdir():
        if date is None or p.name.split(".")[0] == date:
            shutil.rmtree(p, ignore_errors=True)


def commit(staging: Path, output: Path, date: str, marker: dict, hook: Callable | None,
            aggregates: Sequence[str] = ()) -> None:
    """Move a staged date into place; the marker goes last (see the module docstring)."""
    _marker_path(output, date).unlink(missing_ok=True)
    trash = staging / "_replaced"
    trash.mkdir(exist_ok=True)
    for i, rel in enumerate(components(date, aggregates) + _stale_components(output, date, aggregates)):
        src, dst = staging / rel, output / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        if src.is_file():
            os.replace(src, dst)  # atomic for a file
        else:
            if dst.exists() or dst.is_symlink():
                os.replace(dst, trash / str(i))
            if src.exists():
                os.replace(src, dst)
        if i == 0 and hook is not None:
            hook("partial", date)
    write_json_atomic(_marker_path(output, date), marker, default=str)
    shutil.rmtree(staging, ignore_errors=True)


def write_product_json(output: Path, info: dict) -> None:
    done = sorted(p.parent.name.split("=", 1)[1] for p in (output / "parquet").glob(f"date=*/{MARKER}"))
    write_json_atomic(output / "product.json", {**info, "dates": done}, default=str)
