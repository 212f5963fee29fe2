"""The model registry: a folder with ``manifest.json``, ``cv_metrics.json`` and XGBoost UBJ models.

Layout (docs/contracts.md, "Model registry")::

    REGISTRY/
      manifest.json                       versions, git revision, config hash, features, WCM parameters,
                                          environments (level, selected, CV metrics, fallback chain),
                                          served models, file checksums, training data summary
      cv_metrics.json                     the cross-validation figures (docs/contracts.md, "cv_metrics.json")
      models/<unit>/<candidate>.ubj            point model (none for ``physics``: it is the WCM)
      models/<unit>/<candidate>_quantiles.ubj  multi-quantile model (q_lo, q_hi)

``<unit>`` is an environment (``cropland_C``), a land-cover group (``cropland``) or ``global``. An
environment served by the global candidate points at ``models/global/``. Models are XGBoost's own
UBJ (``Booster.save_raw("ubj")``), never pickled.

:func:`save_registry` (in :mod:`ssm_spark.models.manifest`, with the manifest and its checks;
re-exported here) writes into a temporary sibling folder and renames it into place, so a reader
never sees a half-written registry. :func:`load_registry` refuses (:class:`ModelRegistryError`) a
registry whose schema version, package major.minor version, feature lists or files do not match
this code. The returned :class:`Registry` predicts for rows of any environment (unseen ones fall
back to their land-cover group, then to global); Boosters are built once, on first use, and kept.
For Spark: broadcast ``(registry.manifest, registry.model_bytes())`` and rebuild on the executors
with :meth:`Registry.from_bytes` (or :func:`cached_registry`, which keeps one per Python worker).

Two entry points, one serving core (:meth:`Registry._serve`: routing, one ``inplace_predict`` per
booster, blends, interval shifts, bounds): :meth:`Registry.predict` takes and returns pandas frames
(``ssm-spark point``, validation, tests); :meth:`Registry.predict_columns` takes column arrays and
returns arrays (the product's per-tile path, :func:`ssm_spark.product.tiles.predict_tile`), with the
physics run on a dict of arrays (no frame copied or consolidated) and the environment keys
factorized once (:class:`~ssm_spark.physics.wcm_params.EnvKeys`). Both compute the same float64
values in the same order: the estimates are the same bits (tests/test_produce.py). The feature
matrix is filled feature by feature into a (features, rows) float32 block and transposed once
(:func:`feature_matrix`), each feature once even where the point and quantile models list it both.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np
import pandas as pd
import xgboost as xgb

import ssm_spark.models.candidates as candidates
from ssm_spark.environments import MASK_BITS
from ssm_spark.errors import ModelRegistryError
from ssm_spark.models.candidates import FittedModel, blend
from ssm_spark.models.manifest import (MANIFEST, SCHEMA_VERSION, _canonical_json, _sha256, build_manifest,
                                      save_registry, validate_manifest)
from ssm_spark.physics.calibrate import GLOBAL_KEY, group_of
from ssm_spark.physics.qc import QC
from ssm_spark.physics.wcm_params import EnvKeys

log = logging.getLogger(__name__)

__all__ = [
    "SCHEMA_VERSION",
    "Registry",
    "build_manifest",
    "save_registry",
    "load_registry",
    "cached_registry",
    "validate_manifest",
]

OUTPUT_COLUMNS = ("ssm", "ssm_p05", "ssm_p95", "env", "model_id")
#: Estimates outside [0, porosity] by more than this (m3/m3) are not soil moisture: masked with
#: QC.PREDICTION_OUT_OF_RANGE (porosity ``1 - bulk_density / 2.65``, else 0.6).
PREDICTION_TOLERANCE = 0.05
DEFAULT_POROSITY = 0.6
#: Backscatter inputs: a registry trained without one cannot take it (its physics has no parameters).
POLARISATION_INPUTS = ("vv_db", "vh_db")


def physical_upper_bound(df: pd.DataFrame) -> np.ndarray:
    """Porosity ``1 - bulk_density / 2.65`` per row (m3/m3), 0.6 where bulk density is unknown."""
    n = len(df)
    if "bulk_density" not in df.columns:
        return np.full(n, DEFAULT_POROSITY)
    return _upper_bound(pd.to_numeric(df["bulk_density"], errors="coerce").to_numpy("f8"))


def _upper_bound(bulk_density: np.ndarray) -> np.ndarray:
    """:func:`physical_upper_bound` of a float64 array of bulk densities."""
    p = 1.0 - bulk_density / 2.65
    return np.where(np.isfinite(p) & (p > 0.2) & (p < 0.9), p, DEFAULT_POROSITY)


# ------------------------------------------------------------------------------------------- loading


def load_registry(path: str | os.PathLike, *, nthread: Optional[int] = None) -> "Registry":
    """Open a model registry folder written by :func:`save_registry`.

    Parameters
    ----------
    path : path-like
        The registry folder.
    nthread : int, optional
        XGBoost threads for prediction (default 1: one row or one Spark partition per thread).

    Returns
    -------
    Registry

    Raises
    ------
    ModelRegistryError
        No manifest, incompatible schema/package version or feature lists, a missing model file, or a
        file whose checksum differs from the manifest's.
    """
    path = Path(path)
    mf = path / MANIFEST
    if not mf.is_file():
        raise ModelRegistryError(f"{mf} not found: is {path} a model registry written by 'ssm-spark train'?")
    try:
        manifest = json.loads(mf.read_text())
    except (OSError, ValueError) as exc:
        raise ModelRegistryError(f"{mf}: cannot read the manifest ({exc})") from exc
    validate_manifest(manifest)
    blobs: dict[str, bytes] = {}
    for rel, info in manifest["files"].items():
        f = path / rel
        if not f.is_file():
            raise ModelRegistryError(f"{f} listed in the manifest is missing (incomplete copy of the registry?)")
        b = f.read_bytes()
        if _sha256(b) != info.get("sha256"):
            raise ModelRegistryError(f"{f}: checksum differs from the manifest's (file changed or corrupt)")
        blobs[rel] = b
    return Registry(manifest, blobs, nthread=nthread, source=str(path), validated=True)


# ------------------------------------------------------------------------------------------ predicting


class Registry:
    """Prediction with a model registry (any environment; unseen ones fall back to group, global).

    Build with :func:`load_registry`, or :meth:`from_bytes` from a manifest and the raw model bytes
    (the Spark broadcast). Boosters are built on first use and kept; the object is safe to share
    between threads.
    """

    def __init__(self, manifest: Mapping[str, Any], model_bytes: Mapping[str, bytes], *,
                 nthread: Optional[int] = None, source: Optional[str] = None, validated: bool = False) -> None:
        if not validated:
            validate_manifest(manifest)
        missing = [p for p in manifest["files"] if p not in model_bytes]
        if missing:
            raise ModelRegistryError(f"model bytes missing for {missing}")
        self.manifest = dict(manifest)
        self._bytes = dict(model_bytes)
        self.nthread = int(nthread) if nthread else 1
        self.source = source
        self._boosters: dict[str, xgb.Booster] = {}
        self._lock = threading.Lock()
        self.manifest_id: str = self.manifest.get("manifest_id", "")
        self.serving: dict[str, dict[str, Any]] = self.manifest["serving"]
        self.environments: dict[str, dict[str, Any]] = self.manifest.get("environments", {})
        self.wcm_params = self.manifest["physics"]["wcm"]
        self.nominal_incidence_deg = self.manifest["physics"].get("nominal_incidence_deg")
        self._route_cache: dict[Any, str] = {}
        self._enc_cache: dict[tuple, dict[str, np.ndarray]] = {}
        self._warned_missing: set[tuple[str, ...]] = set()
        self._checked: set[tuple[str, ...]] = set()

    @classmethod
    def from_bytes(cls, manifest: Mapping[str, Any], model_bytes: Mapping[str, bytes], *,
                   nthread: Optional[int] = None) -> "Registry":
        """A registry from a manifest and ``{relpath: UBJ bytes}`` (e.g. a Spark broadcast value);
        validated like :func:`load_registry`."""
        return cls(manifest, model_bytes, nthread=nthread)

    def model_bytes(self) -> dict[str, bytes]:
        """``{relative path: UBJ bytes}`` of every model file (what to broadcast)."""
        return dict(self._bytes)

    def __repr__(self) -> str:
        return (f"Registry({self.source or 'in memory'}, manifest {self.manifest_id}, "
                f"{len(self.serving)} units, {len(self._bytes)} models)")

    # -- internals
    def _booster(self, rel: str, features: list[str]) -> xgb.Booster:
        b = self._boosters.get(rel)
        if b is None:
            with self._lock:
                b = self._boosters.get(rel)
                if b is None:
                    b = candidates.booster_from_bytes(self._bytes[rel], self.nthread)
                    self._boosters[rel] = b
        names = b.feature_names or []
        if list(names) != list(features):
            raise ModelRegistryError(f"{rel}: the model's features {list(names)} differ from the manifest's "
                                     f"{list(features)}")
        return b

    def route(self, env: Any) -> str:
        """The unit serving an environment: its own entry, its land-cover group's, else global."""
        key = None if env is None or (isinstance(env, float) and np.isnan(env)) else str(env)
        hit = self._route_cache.get(key)
        if hit is not None:
            return hit
        unit = GLOBAL_KEY
        if key is not None:
            if key in self.environments and self.environments[key]["unit"] in self.serving:
                unit = self.environments[key]["unit"]
            elif key in self.serving:
                unit = key
            elif group_of(key) in self.serving:
                unit = group_of(key)
        self._route_cache[key] = unit
        return unit

    def _model_key(self, unit: str) -> tuple:
        """What makes a unit's predictions: its model files, candidate (offset) and base fallback; units
        with the same key (e.g. every environment served by the global model) predict alike."""
        e = self.serving[unit]
        return (e.get("point_model"), e["quantile_model"], e["candidate"], e.get("base_fallback"),
                tuple(e.get("features", [])), tuple(e["quantile_features"]))

    def _fitted(self, unit: str) -> tuple[FittedModel, FittedModel]:
        e = self.serving[unit]
        c = e["candidate"]
        point_rel = e.get("point_model")
        point = FittedModel(c, "point", tuple(e.get("features", [])),
                            self._booster(point_rel, e["features"]) if point_rel else None, e.get("base_fallback"))
        quant = FittedModel(c, "quantiles", tuple(e["quantile_features"]),
                            self._booster(e["quantile_model"], e["quantile_features"]), e.get("base_fallback"),
                            tuple(self.manifest["quantiles"]))
        return point, quant

    def warm(self) -> "Registry":
        """Build every Booster now (instead of on first use)."""
        for unit in self.serving:
            self._fitted(unit)
        return self

    def inputs(self) -> list[str]:
        """The raw input columns the served models were trained on (in the code's order)."""
        used = {f for e in self.serving.values() for f in (*e.get("features", []), *e.get("quantile_features", []))}
        return [f for f in candidates.RAW_FEATURES if f in used]

    def check_inputs(self, available, where: str, *, refuse_missing: bool = True) -> None:
        """Refuse inputs this registry was not trained for, before any work.

        Parameters
        ----------
        available : iterable of str
            The input columns (bands) there are, e.g. every band of a run's stack files.
        where : str
            What they come from (for the message).
        refuse_missing : bool, default True
            Also refuse when a trained input is absent (else only the extra backscatter is refused).

        Raises
        ------
        ModelRegistryError
            Naming the trained inputs that are missing and the backscatter inputs that the registry
            has no physics for (a registry trained on VH only cannot take VV).
        """
        have = set(available)
        trained = self.inputs()
        missing = [f for f in trained if f not in have] if refuse_missing else []
        extra = [f for f in POLARISATION_INPUTS if f in have and f not in trained]
        if missing or extra:
            parts = ([f"missing {missing}"] if missing else []) + (
                [f"extra {extra} (the registry has no physics or model for them)"] if extra else [])
            raise ModelRegistryError(
                f"registry {self.source or self.manifest_id} was trained on the inputs {trained}, but {where} "
                f"{'; '.join(parts)}: a registry trained on another feature set (e.g. VH only); train one on "
                "matchups of these inputs, or give inputs of the registry's")

    def _matrix(self, feats: Mapping[str, Any], rows: np.ndarray, units: list[str]) -> tuple[np.ndarray, dict[str, int]]:
        """One float32 matrix (:func:`feature_matrix`) of ``rows`` and every feature the units'
        models take, and the column of each feature: each model's matrix is a slice of it."""
        # each feature once (the point and quantile models of a unit mostly take the same list: one
        # column each, and a model whose features are the whole list takes the matrix without a copy)
        names = list(dict.fromkeys(f for u in units for f in (*self.serving[u].get("features", []),
                                                               *self.serving[u]["quantile_features"])))
        return feature_matrix(feats, names, rows), {f: j for j, f in enumerate(names)}

    def _predict_unit(self, unit: str, offsets: "pd.DataFrame | Mapping[str, Any]", x_all: np.ndarray, col: dict[str, int],
                      idx: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Point estimate and (low, high) quantiles of one unit's own models for the rows ``idx``
        (rows ``pos[idx]`` of ``x_all``): one contiguous ``inplace_predict`` per model."""
        point, quant = self._fitted(unit)
        r = pos[idx]
        mats: dict[tuple[str, ...], np.ndarray] = {}

        def x_of(m: FittedModel) -> Optional[np.ndarray]:  # C-contiguous (a fancy-indexed copy, one per feature list)
            if m.booster is None:
                return None
            x = mats.get(m.features)
            if x is None:
                cols = [col[f] for f in m.features]
                whole = len(r) == len(x_all) and cols == list(range(x_all.shape[1]))  # r is then every row
                x = mats[m.features] = x_all if whole else x_all[np.ix_(r, cols)]
            return x

        def off_of(m: FittedModel) -> np.ndarray:
            return candidates.offset(m.name, offsets, m.base_fallback)[idx]

        est = candidates.predict_point_matrix(point, x_of(point), off_of(point))
        q_lo, q_hi = candidates.predict_quantile_matrix(quant, x_of(quant), off_of(quant))
        return est, q_lo, q_hi

    def _env_encoding(self, env: EnvKeys) -> dict[str, np.ndarray]:
        """:func:`candidates.env_encoding` of the rows, computed once per distinct key."""
        key = tuple(env.uniques)   # a file's few distinct keys: the same on every date of a tile
        table = self._enc_cache.get(key)
        if table is None:
            table = candidates.env_encoding(np.array([*env.uniques, None], dtype=object))
            with self._lock:
                if len(self._enc_cache) >= 256:   # bounded: memory does not grow with the region
                    self._enc_cache.pop(next(iter(self._enc_cache)))
                self._enc_cache[key] = table
        idx = env.dense()
        return {name: v[idx] for name, v in table.items()}

    def _physics_columns(self, cols: Mapping[str, Any], env_col: str) -> dict[str, Any]:
        """:func:`candidates.add_physics` on column arrays: the same steps (stale physics columns
        dropped, only the input's mask bits kept, :func:`retrieval_features`, the environment
        encoding) on the same float64 arrays, without building or copying a frame."""
        from ssm_spark.physics.features import FEATURE_COLUMNS, RETRIEVAL_COLUMNS, retrieval_features
        from ssm_spark.physics.qc import QC_DTYPE

        stale = {*FEATURE_COLUMNS, *RETRIEVAL_COLUMNS}
        base = {k: v for k, v in cols.items() if k not in stale}
        if "qc" in cols:
            prior = np.asarray(cols["qc"])
            if prior.dtype.kind not in "iu":
                prior = np.where(pd.isna(prior), 0, prior)
            base["qc"] = (prior.astype(np.int64) & MASK_BITS).astype(QC_DTYPE)
        out = retrieval_features(base, self.wcm_params, env_col=env_col,
                                 nominal_incidence_deg=self.nominal_incidence_deg)
        env = cols.get(env_col)
        out.update(self._env_encoding(env if isinstance(env, EnvKeys) else EnvKeys(np.full(_rows(cols), -1), [])))
        return out

    def _serve(self, feats: Mapping[str, Any], offsets: "pd.DataFrame | Mapping[str, Any]", env: EnvKeys,
               upper: np.ndarray
               ) -> dict[str, Any]:
        """Route, evaluate and bound (the part of :meth:`predict` after the physics).

        ``feats``: the physics features and ``qc`` as arrays; ``offsets``: a frame (or a mapping of
        arrays) with the columns :func:`candidates.offset` reads. Returns ``ssm, ssm_p05, ssm_p95`` (float64), ``qc`` (the
        physics' QC with the out-of-range bit), ``unit`` (per row, an index into ``model_ids``).
        """
        n = len(env)
        uniq = env.uniques
        unit_of_code = [self.route(u) for u in uniq] + [self.route(None)]
        env_code = env.dense()
        order = list(dict.fromkeys(unit_of_code[c] for c in pd.unique(env_code)))  # units, first seen first
        ucode = np.array([order.index(u) if u in order else -1 for u in unit_of_code], dtype=np.int64)[env_code]
        ssm = np.full(n, np.nan)
        lo = np.full(n, np.nan)
        hi = np.full(n, np.nan)
        qc = np.asarray(feats["qc"])
        masked = (qc.astype(np.int64) & MASK_BITS) != 0
        live = ~masked  # masked cells (water, built-up, snow, frozen, steep) get no prediction at all
        mixes = {u: self.serving[u].get("blend") if u != GLOBAL_KEY else None for u in order}
        # each distinct model (files, candidate, offset) is evaluated once, in one call per booster, on every
        # live row that takes it: the rows of the units it serves (units sharing the global model's files
        # included) and, for the global model, the rows of every unit blended with it
        keys = {u: self._model_key(u) for u in (*order, GLOBAL_KEY)}
        rows_of: dict[tuple, list[np.ndarray]] = {}
        rep: dict[tuple, str] = {}
        live_of: dict[str, np.ndarray] = {}
        for i, unit in enumerate(order):
            idx = live_of[unit] = np.flatnonzero((ucode == i) & live)
            if len(idx) == 0:
                continue
            for k, u in ((keys[unit], unit),) + (((keys[GLOBAL_KEY], GLOBAL_KEY),) if mixes[unit] is not None else ()):
                rows_of.setdefault(k, []).append(idx)
                rep.setdefault(k, u)
        x_all, col = self._matrix(feats, np.flatnonzero(live), list(rep.values()))
        pos = np.cumsum(live) - 1  # row of the matrix of each live row
        evaluated: dict[tuple, tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]] = {}
        for k, parts in rows_of.items():
            if len(parts) == 1:
                rows = parts[0]
            else:  # the union, sorted (as np.unique of the parts, in linear time)
                sel = np.zeros(n, dtype=bool)
                for part in parts:
                    sel[part] = True
                rows = np.flatnonzero(sel)
            at = np.full(n, -1, dtype=np.int64)
            at[rows] = np.arange(len(rows))
            evaluated[k] = (at, self._predict_unit(rep[k], offsets, x_all, col, rows, pos))

        def values(k: tuple, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            at, vals = evaluated[k]
            return tuple(v[at[idx]] for v in vals)

        labels = []
        for i, unit in enumerate(order):
            e = self.serving[unit]
            mix = mixes[unit]
            labels.append(f"{self.manifest_id}/{unit}/{e['candidate']}" + (
                f"+global@{1 - float(mix['weight']):.1f}" if mix is not None else ""))
            idx = live_of[unit]
            if len(idx) == 0:
                continue
            est, q_lo, q_hi = values(keys[unit], idx)
            if mix is not None:   # w own + (1 - w) global, global where own is NaN
                w = float(mix["weight"])
                g_est, g_lo, g_hi = values(keys[GLOBAL_KEY], idx)
                est = blend(est, g_est, w)
                q_lo, q_hi = blend(q_lo, g_lo, w), blend(q_hi, g_hi, w)
            ssm[idx] = est
            s_lo, s_hi = e.get("interval_shift", (0.0, 0.0))
            a, b = q_lo - s_lo, q_hi + s_hi
            lo[idx], hi[idx] = np.minimum(a, b), np.maximum(a, b)
        # an estimate outside the physical range is no soil moisture (a broken or misapplied model):
        # masked and flagged, never written as a value
        upper = upper + PREDICTION_TOLERANCE
        with np.errstate(invalid="ignore"):
            wild = np.isfinite(ssm) & ((ssm < -PREDICTION_TOLERANCE) | (ssm > upper))
            wild |= ~np.isfinite(ssm) & ~np.isnan(ssm)
        if wild.any():
            ssm[wild] = lo[wild] = hi[wild] = np.nan
            qc = (qc.astype(np.int64) | np.where(wild, int(QC.PREDICTION_OUT_OF_RANGE), 0)).astype(
                qc.dtype if qc.dtype.kind in "iu" and qc.dtype.itemsize >= 2 else np.int64)
            log.debug("predict: %d of %d estimates outside [%.2f, porosity + %.2f] masked", int(wild.sum()), n,
                      -PREDICTION_TOLERANCE, PREDICTION_TOLERANCE)
        return {"ssm": ssm, "ssm_p05": lo, "ssm_p95": hi, "qc": qc, "unit": ucode, "model_ids": labels}

    def _check_columns(self, names) -> None:
        used = {f for e in self.serving.values() for f in (*e.get("features", []), *e.get("quantile_features", []))}
        missing = tuple(sorted(f for f in used & set(candidates.RAW_FEATURES) if f not in names))
        if missing and missing not in self._warned_missing:
            self._warned_missing.add(missing)
            log.warning("predict: input column(s) %s absent; the models see them as missing values "
                        "(estimates may degrade)", list(missing))
        key = tuple(c for c in names if c in POLARISATION_INPUTS)
        if key not in self._checked:
            self.check_inputs(names, "the rows to predict have", refuse_missing=False)
            self._checked.add(key)

    # -- public
    def predict(self, df: pd.DataFrame, *, env_col: str = "env", with_features: bool = False) -> pd.DataFrame:
        """Soil moisture with its 5th/95th percentiles for rows of any environment.

        Parameters
        ----------
        df : pandas.DataFrame
            Rows with the raw inputs (``vv_db``, ``vh_db``, ``incidence_deg``, ``ndvi``, ... as in
            training; absent optional inputs are missing values) and ``env``. A missing or null
            ``env`` is served by the global model. Rows whose ``qc`` carries a mask bit (water,
            built-up, snow/ice, frozen, steep slope) get NaN.
        env_col : str, default 'env'
        with_features : bool, default False
            Also return the physics features and ``qc`` (the product's QC bits).

        Returns
        -------
        pandas.DataFrame
            Same index as ``df``: ``ssm, ssm_p05, ssm_p95`` (m3/m3, float64), ``env`` (as given),
            ``model_id`` (``"<manifest_id>/<unit>/<candidate>"``), then the features if asked.
            Predictions are not clipped; an estimate outside [0, porosity] by more than
            :data:`PREDICTION_TOLERANCE` (porosity from ``bulk_density``, else 0.6) is NaN with
            ``QC.PREDICTION_OUT_OF_RANGE`` in ``qc`` (not soil moisture: a broken model); NaN where
            the served candidate cannot predict.

        Raises
        ------
        ModelRegistryError
            If ``df`` has a backscatter column the registry was not trained on (:meth:`check_inputs`).
        """
        n = len(df)
        self._check_columns(df.columns)
        feats = candidates.add_physics(df, self.wcm_params, env_col=env_col,
                                       nominal_incidence_deg=self.nominal_incidence_deg)
        envs = df[env_col].to_numpy(dtype=object) if env_col in df.columns else np.full(n, None, dtype=object)
        cols = {c: feats[c].to_numpy() for c in feats.columns if c not in (env_col,)}
        res = self._serve(cols, feats, EnvKeys.of(envs), physical_upper_bound(df))
        model_id = np.array(res["model_ids"] or [None], dtype=object)[np.maximum(res["unit"], 0)]
        out = pd.DataFrame({"ssm": res["ssm"], "ssm_p05": res["ssm_p05"], "ssm_p95": res["ssm_p95"], "env": envs,
                            "model_id": model_id}, index=df.index)
        if with_features:
            extra = [c for c in candidates.PHYSICS_FEATURES if c in feats.columns]
            out = pd.concat([out, feats[extra].set_axis(df.index).assign(qc=res["qc"])], axis=1)
        return out

    def predict_columns(self, cols: Mapping[str, Any], *, env_col: str = "env") -> dict[str, Any]:
        """:meth:`predict` on column arrays (the product's per-tile path): no frame is built.

        Parameters
        ----------
        cols : mapping of str to numpy.ndarray
            The pixel rows' columns, as :meth:`predict` takes them; ``env_col`` may be an
            :class:`~ssm_spark.physics.wcm_params.EnvKeys` (keys factorized once).
        env_col : str, default 'env'

        Returns
        -------
        dict
            ``ssm, ssm_p05, ssm_p95`` (float64 arrays, the same values as :meth:`predict`), ``qc``
            (the product's QC bits), ``unit`` (per row, an index into ``model_ids``, the model id
            of each unit served), ``env`` (:class:`EnvKeys`) and ``features`` (the physics features
            as arrays).

        Raises
        ------
        ModelRegistryError
            As :meth:`predict`.
        """
        self._check_columns(list(cols))
        n = _rows(cols)
        env = EnvKeys.of(cols[env_col]) if env_col in cols else EnvKeys(np.full(n, -1), [])
        feats = self._physics_columns({**cols, env_col: env} if env_col in cols else cols, env_col)
        used = [c for c in ("mv_wcm", "mv_physics", "mv_change_detection") if c in feats]
        # the offsets' columns as arrays (candidates.offset takes a mapping), a frame only without any
        offsets = {c: feats[c] for c in used} if used else pd.DataFrame(index=pd.RangeIndex(n))
        bd = cols.get("bulk_density")
        if bd is None:
            upper = np.full(n, DEFAULT_POROSITY)
        elif np.asarray(bd).dtype.kind in "fiub":   # numeric: what pd.to_numeric would return, as float64
            upper = _upper_bound(np.asarray(bd, dtype="f8"))
        else:
            upper = physical_upper_bound(pd.DataFrame({"bulk_density": bd}))
        res = self._serve(feats, offsets, env, upper)
        res["env"] = env
        res["features"] = feats
        return res


_F32_MAX = float(np.finfo(np.float32).max)


def feature_matrix(cols: Mapping[str, Any], features: list[str], rows: np.ndarray) -> np.ndarray:
    """:func:`candidates.feature_matrix` of column arrays: C-contiguous float32, the rows at the
    positions ``rows``, absent features all-missing (NaN), values beyond the float32 range clipped
    to it (the same values: each column is cast from float64 as there). Filled feature by feature
    into a (features, rows) block, then transposed once: about half the time of writing each
    feature down a column of the C-order matrix."""
    xt = np.empty((len(features), len(rows)), dtype=np.float32)
    with np.errstate(over="ignore"):   # beyond the float32 range: inf, clipped below
        for j, f in enumerate(features):
            c = cols.get(f)
            if c is None:
                xt[j] = np.nan
                continue
            c = np.asarray(c)
            # float32 columns (the environment encoding) gathered as they are: float32 -> float64 ->
            # float32 is exact, so the values are those of casting to float64 first
            xt[j] = (c if c.dtype in (np.float64, np.float32) else c.astype(np.float64))[rows]
    x = np.ascontiguousarray(xt.T)
    return np.clip(x, -_F32_MAX, _F32_MAX, out=x)


def _rows(cols: Mapping[str, Any]) -> int:
    for v in cols.values():
        return len(v)
    return 0


_CACHE: dict[str, Registry] = {}
_CACHE_LOCK = threading.Lock()


def cached_registry(manifest: Mapping[str, Any], model_bytes: Mapping[str, bytes], *,
                    nthread: Optional[int] = None) -> Registry:
    """One :class:`Registry` per manifest id per Python process (for Spark executors: call it inside
    ``mapInPandas`` with the broadcast value; Boosters are then built once per worker)."""
    # the files' checksums are part of the key: a registry rewritten in place under the same manifest id
    # (models replaced, checksums updated) must not be served from a worker's cache of the old one
    files = hashlib.sha256(_canonical_json(manifest.get("files", {})).encode()).hexdigest()[:16]
    key = f"{manifest.get('manifest_id')}:{files}:{nthread}"
    with _CACHE_LOCK:
        reg = _CACHE.get(key)
        if reg is None:
            reg = Registry.from_bytes(manifest, model_bytes, nthread=nthread)
            _CACHE[key] = reg
    return reg
