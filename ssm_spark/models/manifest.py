"""The model registry on disk: the manifest (what was trained, on what, how it was selected, the
file of every model with its sha256), written with the model files as one folder, atomically; and
the manifest's checks when a registry is read back.

Layout and fields: docs/contracts.md, "Model registry". Loading and serving the models is
:mod:`ssm_spark.models.registry` (which re-exports :func:`save_registry` and :func:`build_manifest`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import xgboost as xgb

import ssm_spark
from ssm_spark.environments import CLIMATE_MAIN, GROUPS
from ssm_spark.errors import ModelRegistryError
from ssm_spark.io import atomic_dir, json_text
from ssm_spark.models.candidates import CANDIDATES, ENV_FEATURES, FEATURE_SCHEMA, QUANTILE_FEATURE_SCHEMA
from ssm_spark.physics.calibrate import GLOBAL_KEY
from ssm_spark.physics.features import MV_PLAUSIBLE
from ssm_spark.validation import to_jsonable

log = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "MANIFEST", "CV_METRICS", "build_manifest", "save_registry", "validate_manifest"]

#: Version of the manifest layout; bump on any incompatible change.
SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
CV_METRICS = "cv_metrics.json"


# ------------------------------------------------------------------------------------------- writing


def _git_revision() -> tuple[Optional[str], Optional[bool]]:
    root = Path(ssm_spark.__file__).resolve().parents[1]
    try:
        rev = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        if rev.returncode != 0:
            return None, None
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10)
        return rev.stdout.strip() or None, (bool(dirty.stdout.strip()) if dirty.returncode == 0 else None)
    except (OSError, subprocess.SubprocessError):
        return None, None


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), allow_nan=False)


def _safe_key(key: str) -> str:
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", key):
        raise ModelRegistryError(f"unit key {key!r} cannot name a model folder (letters, digits, '_', '.', '-')")
    return key


def _metrics_for_manifest(block: Mapping[str, Any]) -> dict[str, Any]:
    keep = ("framework", "candidates", "coverage_p05_p95", "coverage_p05_p95_raw", "framework_insample_selection")
    return {k: block[k] for k in keep if k in block}


def build_manifest(result: Any, cfg: Any, training_summary: Optional[Mapping[str, Any]] = None
                   ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and the model files (relative path -> UBJ bytes) of a training result.

    Parameters
    ----------
    result : TrainingResult
        From :func:`ssm_spark.models.runner.run_training` (``train_models``, ``train_on_spark``).
    cfg : Config or TrainConfig
        The configuration of the run (its ``hash()`` is recorded; a TrainConfig is hashed alone).
    training_summary : mapping, optional
        Rows, stations, date range, per-environment counts; default: the one computed in training.

    Returns
    -------
    (dict, dict)
        The manifest (strict-JSON-ready, with ``manifest_id``) and ``{relpath: bytes}``.
    """
    ctx = result.ctx
    t = ctx.cfg
    files: dict[str, bytes] = {}
    serving: dict[str, dict[str, Any]] = {}
    glob = result.units[GLOBAL_KEY]

    def paths(unit_key: str, cand: str) -> tuple[str, str]:
        base = f"models/{_safe_key(unit_key)}/{cand}"
        return f"{base}.ubj", f"{base}_quantiles.ubj"

    g_point, g_quant = paths(GLOBAL_KEY, "global")
    files[g_point] = glob.point_model
    files[g_quant] = glob.quantile_model
    for key, u in sorted(result.units.items()):
        entry: dict[str, Any] = {"level": u.level, "candidate": u.selected, "runner_up": u.runner_up,
                                 "interval_shift": list(u.interval_shift), "n": u.n, "stations": u.stations}
        if u.level == "global" or u.uses_global:
            entry.update(point_model=g_point, quantile_model=g_quant, features=list(glob.features),
                         quantile_features=list(glob.quantile_features), base_fallback=None)
        else:
            p_path, q_path = paths(key, u.selected)
            if u.point_model is not None:
                files[p_path] = u.point_model
            files[q_path] = u.quantile_model
            entry.update(point_model=p_path if u.point_model is not None else None, quantile_model=q_path,
                         features=list(u.features), quantile_features=list(u.quantile_features),
                         base_fallback=u.base_fallback)
        if u.level != "global" and not u.uses_global and u.blend_weight < 1.0:
            entry["blend"] = {"weight": float(u.blend_weight), "with": GLOBAL_KEY}
        entry["selection_evidence"] = dict(u.selection_evidence)
        entry["selected_by_fold"] = {str(k): v for k, v in u.selected_by_fold.items()}
        entry["ranking"] = u.ranking
        entry["feature_importance"] = u.feature_importance
        serving[key] = entry

    envs: dict[str, Any] = {}
    for env, plan in sorted(ctx.plan.items()):
        block = result.cv_metrics["environments"].get(env, {})
        unit = plan["unit"]
        envs[env] = {"level": plan["level"], "unit": unit, "selected": serving[unit]["candidate"],
                     "runner_up": serving[unit]["runner_up"], "fallback_chain": plan["fallback_chain"],
                     "n": plan["n"], "stations": plan["stations"], "cv": _metrics_for_manifest(block)}

    rev, dirty = _git_revision()
    config_hash = cfg.hash() if hasattr(cfg, "hash") else hashlib.sha256(
        _canonical_json(t.model_dump(mode="json")).encode()).hexdigest()[:16]
    manifest: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "package": {"name": "ssm_spark", "version": ssm_spark.__version__},
        "libraries": {"xgboost": xgb.__version__, "numpy": np.__version__, "pandas": pd.__version__,
                      "python": platform.python_version()},
        "git": {"revision": rev, "dirty": dirty},
        "config_hash": config_hash,
        "train_config": t.model_dump(mode="json"),
        "features": {
            "schema": {c: list(FEATURE_SCHEMA[c]) for c in CANDIDATES},
            "quantile_schema": {c: list(QUANTILE_FEATURE_SCHEMA[c]) for c in CANDIDATES},
            "candidates": {c: list(ctx.features[c]) for c in CANDIDATES if c in ctx.features},
            "quantiles": {c: list(ctx.quantile_features[c]) for c in CANDIDATES if c in ctx.quantile_features},
            "env_encoding": {"groups": list(GROUPS), "climates": list(CLIMATE_MAIN), "columns": list(ENV_FEATURES)},
        },
        "physics": {"wcm": ctx.wcm_params, "mv_plausible": list(MV_PLAUSIBLE),
                    "vegetation_descriptor": ctx.wcm_params.get("vegetation") or "ndvi",
                    "nominal_incidence_deg": t.nominal_incidence_deg},
        "quantiles": list(t.quantiles),
        "interval_calibration": t.interval_calibration,
        "cv": {"k_folds": ctx.k, "selection": result.cv_metrics["overall"].get("selection"),
               "overall": {k: result.cv_metrics["overall"][k] for k in ("framework", "candidates")}},
        "environments": envs,
        "serving": serving,
        "files": {p: {"sha256": _sha256(b), "bytes": len(b)} for p, b in sorted(files.items())},
        "training_data": dict(training_summary if training_summary is not None else ctx.summary),
    }
    manifest = to_jsonable(manifest)
    manifest["manifest_id"] = hashlib.sha256(_canonical_json(manifest).encode()).hexdigest()[:16]
    manifest["created_utc"] = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return manifest, files


def save_registry(path: str | os.PathLike, result: Any, cfg: Any,
                  training_summary: Optional[Mapping[str, Any]] = None, *, overwrite: bool = True) -> dict[str, Any]:
    """Write a model registry folder atomically.

    Everything is written into a temporary sibling folder, then renamed to ``path``
    (:func:`ssm_spark.io.atomic_dir`). An existing registry at ``path`` is first renamed aside and
    removed after the new one is in place (POSIX cannot rename a folder onto a non-empty one, so there
    is an instant with no folder at ``path``; never one with a mixture of old and new files).

    Parameters
    ----------
    path : path-like
        The registry folder.
    result : TrainingResult
    cfg : Config or TrainConfig
    training_summary : mapping, optional
        Training data summary (default: the one of ``result``).
    overwrite : bool, default True
        Replace an existing registry; False raises if ``path`` exists.

    Returns
    -------
    dict
        The manifest written.

    Raises
    ------
    ModelRegistryError
        If ``path`` exists and ``overwrite`` is False, or it exists and is not a folder.
    """
    path = Path(path)
    if path.exists() and (not overwrite or not path.is_dir()):
        raise ModelRegistryError(f"{path} exists" + ("" if path.is_dir() else " and is not a folder")
                                 + "; remove it or pass overwrite=True")
    manifest, files = build_manifest(result, cfg, training_summary)
    with atomic_dir(path) as tmp:
        tmp.mkdir()
        for rel, blob in files.items():
            f = tmp / rel
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(blob)
        (tmp / CV_METRICS).write_text(json_text(to_jsonable(result.cv_metrics)))
        (tmp / MANIFEST).write_text(json_text(manifest))
    log.info("model registry %s written (manifest %s, %d model files)", path, manifest["manifest_id"], len(files))
    return manifest


# ------------------------------------------------------------------------------------ checks on reading


def _major_minor(v: str) -> tuple[str, ...]:
    return tuple(str(v).split(".")[:2])


def _check_subsequence(used: list[str], schema: tuple[str, ...], what: str) -> None:
    unknown = [f for f in used if f not in schema]
    if unknown:
        raise ModelRegistryError(
            f"{what}: feature(s) {unknown} are not features this code computes ({list(schema)}); the registry "
            "was trained by a different version of ssm_spark: retrain, or use the matching version")
    if used != [f for f in schema if f in used]:
        raise ModelRegistryError(
            f"{what}: features {used} are not in this code's order {[f for f in schema if f in used]}; retrain")


def validate_manifest(manifest: Mapping[str, Any]) -> None:
    """Check a manifest against this code: schema version, package major.minor, feature lists.

    Raises
    ------
    ModelRegistryError
        Naming the mismatch (versions found and expected, the offending features).
    """
    if not isinstance(manifest, Mapping) or "schema_version" not in manifest:
        raise ModelRegistryError("manifest has no schema_version: not a registry written by ssm-spark train")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ModelRegistryError(f"manifest schema version {manifest['schema_version']} but this code reads "
                                 f"version {SCHEMA_VERSION}; retrain with this version")
    pkg = manifest.get("package", {}).get("version", "?")
    if _major_minor(pkg) != _major_minor(ssm_spark.__version__):
        raise ModelRegistryError(f"registry written by ssm_spark {pkg}, this is {ssm_spark.__version__} "
                                 "(major.minor must match); retrain or install the matching version")
    feats = manifest.get("features", {})
    enc = feats.get("env_encoding", {})
    if list(enc.get("columns", [])) != list(ENV_FEATURES):
        raise ModelRegistryError(f"environment encoding {enc.get('columns')} differs from this code's "
                                 f"{list(ENV_FEATURES)}")
    for c, used in feats.get("candidates", {}).items():
        if c not in FEATURE_SCHEMA:
            raise ModelRegistryError(f"unknown candidate {c!r} in the manifest (this code knows {list(CANDIDATES)})")
        _check_subsequence(list(used), FEATURE_SCHEMA[c], f"candidate {c!r}")
    for c, used in feats.get("quantiles", {}).items():
        if c not in QUANTILE_FEATURE_SCHEMA:
            raise ModelRegistryError(f"unknown candidate {c!r} in the manifest (this code knows {list(CANDIDATES)})")
        _check_subsequence(list(used), QUANTILE_FEATURE_SCHEMA[c], f"quantile model of {c!r}")
    serving = manifest.get("serving")
    if not serving or GLOBAL_KEY not in serving:
        raise ModelRegistryError("manifest has no served global model")
    for key, e in serving.items():
        c = e.get("candidate")
        if c not in CANDIDATES:
            raise ModelRegistryError(f"unit {key!r}: unknown candidate {c!r}")
        _check_subsequence(list(e.get("features", [])), FEATURE_SCHEMA[c], f"unit {key!r} ({c})")
        _check_subsequence(list(e.get("quantile_features", [])), QUANTILE_FEATURE_SCHEMA[c],
                           f"unit {key!r} ({c} quantiles)")
        for f in (e.get("point_model"), e.get("quantile_model")):
            if f is not None and f not in manifest.get("files", {}):
                raise ModelRegistryError(f"unit {key!r}: model file {f} is not listed in the manifest")
    if "wcm" not in manifest.get("physics", {}):
        raise ModelRegistryError("manifest has no WCM parameters (physics.wcm)")


