"""Candidate models of the model-selection module, as pure pandas/numpy/xgboost functions.

Six candidates (docs/physics.md, section 5, and docs/pipeline.md, section 4):

================  ==================================================================================
candidate         prediction
================  ==================================================================================
``physics``       ``mv_wcm`` of the calibrated Water Cloud Model alone (no tree). Predicted as is:
                  never clipped, so out-of-range values count fully in the metrics. NaN where the
                  vegetation correction fails in both polarisations (vegetation-dominated); those
                  rows count as *missing*, reported as the candidate's prediction coverage.
``change_detection`` ``mv_cd``: the relative wetness of change detection (Wagner et al. 1999) mapped
                  to m3/m3 by a robust per-environment line fitted on the training fold
                  (:mod:`ssm_spark.physics.change_detection`); bounded to [0, porosity].
``xgb_raw``       XGBoost on the raw inputs only (:data:`RAW_FEATURES` present in the table).
``xgb_coupled``   XGBoost on the raw inputs plus the physics features (:data:`PHYSICS_FEATURES`).
``xgb_residual``  ``base + f(x)``: XGBoost on the coupled features learns ``ssm - base`` with
                  ``base = clip(mv_wcm, MV_PLAUSIBLE)``. Where ``mv_wcm`` is NaN the base is the
                  training mean of ``ssm`` (stored with the model as ``base_fallback``); ``mv_wcm`` is
                  itself a feature, so the trees see (through XGBoost's missing-value branch) which rows
                  had no physics base. The clip only bounds the *offset* the trees correct (a WCM
                  inversion can return +-1e60 when a calibrated sensitivity D is near 0); the output
                  itself is never clipped.
``global``        one coupled XGBoost trained on every environment, with the land-cover group and the
                  Koppen-Geiger main class one-hot encoded (:data:`ENV_FEATURES`).
================  ==================================================================================

Uncertainty: one multi-quantile XGBoost model (``objective="reg:quantileerror"``,
``quantile_alpha=[q_lo, q_hi]``) per served model, on the same features and the same offset as the
point model (target ``ssm - offset``, interval ``offset + q(x)``); for ``physics`` the offset is
``mv_wcm`` itself (unclipped) and the features are the coupled ones, i.e. a quantile model of the
physics residual. Crossing quantiles are ordered (low = min, high = max). The quantile model has its
own rounds and depth (``train.xgb.quantile_n_estimators``, ``quantile_max_depth``: 40 x depth 4 by
default, a third of the point model's cost per cell; docs/physics.md, section 7).

The physics features always come from WCM parameters passed in by the caller: in cross-validation
those fitted on the training fold only (see :mod:`ssm_spark.models.calibration_folds`), for the final models
those fitted on all data. Stale physics columns in the input (e.g. the default-parameter features of
a matchup table) are dropped and recomputed by :func:`add_physics`.

Every function here is deterministic for a given seed and thread count and touches no Spark.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
import pandas as pd
import xgboost as xgb

from ssm_spark.environments import CLIMATE_MAIN, GROUPS, MASK_BITS
from ssm_spark.errors import InputError
from ssm_spark.physics.calibrate import group_of
from ssm_spark.physics.features import FEATURE_COLUMNS, MV_PLAUSIBLE, RETRIEVAL_COLUMNS, retrieval_features
from ssm_spark.physics.qc import QC_DTYPE

log = logging.getLogger(__name__)

__all__ = [
    "CANDIDATES",
    "RAW_FEATURES",
    "PHYSICS_FEATURES",
    "ENV_FEATURES",
    "FEATURE_SCHEMA",
    "QUANTILE_FEATURE_SCHEMA",
    "FittedModel",
    "add_physics",
    "env_encoding",
    "resolve_features",
    "resolve_quantile_features",
    "offset",
    "feature_matrix",
    "xgb_params",
    "fit_candidate",
    "predict_candidate",
    "predict_point_matrix",
    "fit_quantiles",
    "predict_quantiles",
    "predict_quantile_matrix",
    "resolve_nthread",
    "booster_from_bytes",
    "blend",
    "PHYSICAL_CANDIDATES",
]

CANDIDATES: tuple[str, ...] = ("physics", "change_detection", "xgb_raw", "xgb_coupled", "xgb_residual", "global")
#: Candidates without trees: a physical retrieval served as is (their quantile models are trees).
PHYSICAL_CANDIDATES: tuple[str, ...] = ("physics", "change_detection")

#: Raw inputs a tree may use, in this order (those present and not all-NaN in the training table).
RAW_FEATURES: tuple[str, ...] = (
    "vv_db",
    "vh_db",
    "incidence_deg",
    "ndvi",
    "lst_k",
    "precip_mm",
    "clay_pct",
    "sand_pct",
    "bulk_density",
    "elevation_m",
    "slope_deg",
)
#: Physics features of :func:`ssm_spark.physics.features.coupled_features` (its QC column excluded).
PHYSICS_FEATURES: tuple[str, ...] = tuple(c for c in FEATURE_COLUMNS if c != "qc") + (
    "vv_ref_db", "vh_ref_db", "rvi", "rw_vv", "anom_vv_db", "rw_vh", "anom_vh_db", "mv_cd")
#: One-hot environment encoding of the global model: land-cover group, then Koppen-Geiger main class.
ENV_FEATURES: tuple[str, ...] = tuple(f"lc_{g}" for g in GROUPS) + tuple(f"climate_{c}" for c in CLIMATE_MAIN)

#: Every feature each candidate may use, in order; the features of a trained model are the ordered
#: subset present in its training table. The model registry refuses models whose features are not.
FEATURE_SCHEMA: dict[str, tuple[str, ...]] = {
    "physics": (),
    "change_detection": (),
    "xgb_raw": RAW_FEATURES,
    "xgb_coupled": RAW_FEATURES + PHYSICS_FEATURES,
    "xgb_residual": RAW_FEATURES + PHYSICS_FEATURES,
    "global": RAW_FEATURES + PHYSICS_FEATURES + ENV_FEATURES,
}
#: Features of the quantile (uncertainty) model of each candidate: physics uses the coupled ones.
QUANTILE_FEATURE_SCHEMA: dict[str, tuple[str, ...]] = {
    **FEATURE_SCHEMA,
    "physics": FEATURE_SCHEMA["xgb_coupled"],
    "change_detection": FEATURE_SCHEMA["xgb_coupled"],
}

_F32_MAX = float(np.finfo(np.float32).max)


def resolve_nthread(cfg_nthread: int = 0, nthread: Optional[int] = None) -> int:
    """Threads for XGBoost: an explicit ``nthread`` (the caller's cores), else the configured value,
    else every core of this machine (``os.cpu_count()``)."""
    if nthread is not None and nthread > 0:
        return int(nthread)
    if cfg_nthread and cfg_nthread > 0:
        return int(cfg_nthread)
    return max(1, os.cpu_count() or 1)


# ----------------------------------------------------------------------------------- features


def env_encoding(envs: Sequence[Any] | np.ndarray) -> dict[str, np.ndarray]:
    """One-hot land-cover group and climate main class of environment keys (:data:`ENV_FEATURES`).

    ``"cropland_C"`` -> ``lc_cropland = 1, climate_C = 1``; a key without climate (``"cropland"``)
    sets no climate column; None/unknown keys set nothing (all zeros).
    """
    envs = np.asarray(envs, dtype=object)
    codes, uniq = pd.factorize(pd.Series(envs, dtype=object), use_na_sentinel=True)
    n_u = len(uniq)
    table = np.zeros((n_u + 1, len(ENV_FEATURES)), dtype=np.float32)  # last row: missing env
    for i, e in enumerate(uniq):
        g = group_of(e)
        if g in GROUPS:
            table[i, GROUPS.index(g)] = 1.0
        parts = str(e).split("_", 1)
        if len(parts) == 2 and parts[1] in CLIMATE_MAIN:
            table[i, len(GROUPS) + CLIMATE_MAIN.index(parts[1])] = 1.0
    codes = np.where(codes < 0, n_u, codes)
    return {name: table[codes, j] for j, name in enumerate(ENV_FEATURES)}


def add_physics(
    df: pd.DataFrame,
    wcm_params: Any,
    *,
    env_col: str = "env",
    nominal_incidence_deg: Optional[float] = None,
) -> pd.DataFrame:
    """Recompute the coupled physics features with ``wcm_params`` and add the environment encoding.

    Stale physics columns of the input (for example features computed with default WCM parameters)
    are dropped first. Of an input ``qc`` column only the mask bits
    (:data:`ssm_spark.environments.MASK_BITS`: water, built-up, snow/ice, frozen, steep slope) are
    kept and ORed into the new QC; the physics bits are recomputed.

    Parameters
    ----------
    df : pandas.DataFrame
        Rows with ``vv_db`` and/or ``vh_db``, ``incidence_deg`` (or ``nominal_incidence_deg``),
        ``ndvi`` and, optionally, ``env``.
    wcm_params : DataFrame, dict or None
        As for :func:`ssm_spark.physics.features.coupled_features`.
    env_col : str, default 'env'
        Environment column (absent: global WCM parameters, no environment encoding set).
    nominal_incidence_deg : float, optional
        Angle used when ``incidence_deg`` is absent.

    Returns
    -------
    pandas.DataFrame
        A copy with :data:`PHYSICS_FEATURES` (those computable), ``qc`` and :data:`ENV_FEATURES`.

    Raises
    ------
    InputError
        From :func:`coupled_features` when required inputs are missing.
    """
    stale = [c for c in (*FEATURE_COLUMNS, *RETRIEVAL_COLUMNS) if c in df.columns]
    base = df.drop(columns=stale)
    if "qc" in df.columns:
        prior = df["qc"].to_numpy()
        prior = np.where(pd.isna(prior), 0, prior).astype(np.int64) & MASK_BITS
        base["qc"] = prior.astype(QC_DTYPE)
    out = retrieval_features(base, wcm_params, env_col=env_col, nominal_incidence_deg=nominal_incidence_deg)
    envs = df[env_col].to_numpy(dtype=object) if env_col in df.columns else np.full(len(df), None, dtype=object)
    enc = env_encoding(envs)
    return out.assign(**enc)


def resolve_features(df: pd.DataFrame, candidates: Sequence[str] = CANDIDATES) -> dict[str, list[str]]:
    """Features of each candidate for a training table with physics features (see :func:`add_physics`).

    The ordered subset of :data:`FEATURE_SCHEMA` present in ``df`` and not entirely NaN; the
    environment encoding is always kept for ``global``.

    Returns
    -------
    dict
        ``{candidate: [feature, ...]}`` for point models; quantile models use
        :data:`QUANTILE_FEATURE_SCHEMA` resolved the same way (see :func:`resolve_quantile_features`).
    """
    usable = {c for c in df.columns if c in ENV_FEATURES or df[c].notna().any()}
    return {name: [f for f in FEATURE_SCHEMA[name] if f in usable] for name in candidates}


def resolve_quantile_features(point_features: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """Features of each candidate's quantile model given the resolved point-model features."""
    out = {name: list(fs) for name, fs in point_features.items()}
    for name in PHYSICAL_CANDIDATES:
        if name not in out:
            continue
        coupled = set(point_features.get("xgb_coupled") or point_features.get("xgb_residual") or [])
        if not coupled:
            coupled = set(point_features.get("global", [])) - set(ENV_FEATURES)
        out[name] = [f for f in QUANTILE_FEATURE_SCHEMA[name] if f in coupled]
    return out


def feature_matrix(df: pd.DataFrame, features: Sequence[str], rows: Optional[np.ndarray] = None) -> np.ndarray:
    """C-contiguous float32 matrix of ``features`` (absent columns are all-missing, NaN), of the
    rows at the positions ``rows`` (default: every row).

    Values beyond the float32 range (a WCM inversion with a near-zero sensitivity can return 1e60)
    are clipped to it, ``+-inf`` included, so XGBoost sees an ordered, finite split value; NaN stays
    missing.
    """
    n = len(df) if rows is None else len(rows)
    x = np.empty((n, len(features)), dtype=np.float32)
    with np.errstate(over="ignore"):   # beyond the float32 range: inf, clipped below
        for j, f in enumerate(features):
            if f in df.columns:
                col = df[f].to_numpy(dtype=np.float64, na_value=np.nan)
                x[:, j] = col if rows is None else col[rows]
            else:
                x[:, j] = np.nan
    return np.clip(x, -_F32_MAX, _F32_MAX, out=x)   # the same values as clipping in float64 first


def offset(name: str, df: "pd.DataFrame | Mapping[str, Any]", base_fallback: Optional[float] = None) -> np.ndarray:
    """The physics offset a candidate's trees correct (zero for the direct candidates).

    ``physics``: ``mv_wcm`` (NaN where missing); ``xgb_residual``: ``clip(mv_wcm, MV_PLAUSIBLE)``,
    ``base_fallback`` where ``mv_wcm`` is NaN; others: 0. ``df``: a DataFrame, or a non-empty
    mapping of column arrays of one length (the product's column path: no frame built).
    """
    frame = isinstance(df, pd.DataFrame)
    names = df.columns if frame else df
    n = len(df) if frame else len(next(iter(df.values())))

    def col(c: str) -> np.ndarray:
        return df[c].to_numpy(dtype=float) if frame else np.asarray(df[c], dtype=float)

    if name == "change_detection":
        if "mv_change_detection" not in names:
            return np.full(n, np.nan)
        return col("mv_change_detection")
    if name not in ("physics", "xgb_residual"):
        return np.zeros(n)
    if name == "physics" and "mv_physics" in names:
        return col("mv_physics")
    if "mv_wcm" not in names:
        raise InputError(f"candidate {name!r} needs the physics feature 'mv_wcm' (run add_physics first)")
    mv = col("mv_wcm")
    if name == "physics":
        return mv
    fill = np.nan if base_fallback is None else float(base_fallback)
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(mv), np.clip(mv, *MV_PLAUSIBLE), fill)


# ----------------------------------------------------------------------------------- boosters


def xgb_params(cfg: Any, nthread: int, *, quantiles: Optional[Sequence[float]] = None) -> dict[str, Any]:
    """Native ``xgboost.train`` parameters from a :class:`~ssm_spark.config.TrainConfig`.

    ``tree_method="hist"``, seed ``cfg.seed``; squared error, or the multi-quantile pinball loss
    (``reg:quantileerror`` with ``quantile_alpha``) when ``quantiles`` is given, with the quantile
    models' own rounds (:func:`quantile_rounds`, learning rate scaled to the same total step), depth
    (``xgb.quantile_max_depth``) and tree layout (``xgb.quantile_multi_strategy``).
    """
    x = cfg.xgb
    params: dict[str, Any] = {
        "objective": "reg:squarederror",
        "tree_method": "hist",
        "max_depth": x.max_depth,
        "eta": x.learning_rate,
        "subsample": x.subsample,
        "colsample_bytree": x.colsample_bytree,
        "min_child_weight": x.min_child_weight,
        "lambda": x.reg_lambda,
        "max_bin": x.max_bin,
        "seed": int(cfg.seed),
        "nthread": int(nthread),
        "verbosity": 0,
    }
    if quantiles is not None:
        params["objective"] = "reg:quantileerror"
        params["quantile_alpha"] = np.asarray(quantiles, dtype=float)
        params["eta"] = min(1.0, x.learning_rate * x.n_estimators / quantile_rounds(cfg))
        depth = getattr(x, "quantile_max_depth", None)
        if depth:
            params["max_depth"] = int(depth)
        strategy = getattr(x, "quantile_multi_strategy", "one_output_per_tree")
        if strategy != "one_output_per_tree":   # the default is not written: the same bytes as before
            params["multi_strategy"] = strategy
    return params


def quantile_rounds(cfg: Any) -> int:
    """Boosting rounds of the quantile models: ``xgb.quantile_n_estimators``, else half of
    ``n_estimators`` rounded up (the 5/95 % bounds need less detail than the estimate: the demo's
    held-out coverage and width do not change, see benchmarks/bench_trees.py)."""
    q = getattr(cfg.xgb, "quantile_n_estimators", None)
    return int(q) if q else (int(cfg.xgb.n_estimators) + 1) // 2


def _train_booster(x: np.ndarray, y: np.ndarray, features: Sequence[str], params: dict, rounds: int) -> xgb.Booster:
    dtrain = xgb.QuantileDMatrix(x, label=y, feature_names=list(features), max_bin=params["max_bin"],
                                 nthread=params["nthread"])
    return xgb.train(params, dtrain, num_boost_round=int(rounds))


@dataclass
class FittedModel:
    """A fitted candidate (point or quantile model): its booster (None for ``physics`` point) and
    what is needed to predict with it."""

    name: str
    kind: str  # "point" or "quantiles"
    features: tuple[str, ...]
    booster: Optional[xgb.Booster] = None
    base_fallback: Optional[float] = None
    quantiles: Optional[tuple[float, float]] = None
    n_train: int = 0

    def to_bytes(self) -> Optional[bytes]:
        """The booster in XGBoost's UBJ format (None without a booster)."""
        return None if self.booster is None else bytes(self.booster.save_raw("ubj"))


def _target(name: str, df: pd.DataFrame, base_fallback: Optional[float], ssm_col: str) -> tuple[np.ndarray, np.ndarray]:
    off = offset(name, df, base_fallback)
    y = df[ssm_col].to_numpy(dtype=float) - off
    return y, off


def fit_candidate(
    name: str,
    train: pd.DataFrame,
    features: Sequence[str],
    cfg: Any,
    *,
    nthread: int = 1,
    ssm_col: str = "ssm",
) -> FittedModel:
    """Fit one candidate's point model on a training table that already has physics features.

    Parameters
    ----------
    name : str
        One of :data:`CANDIDATES`.
    train : pandas.DataFrame
        Training rows (after :func:`add_physics` with the training fold's WCM parameters) with ``ssm``.
    features : sequence of str
        The candidate's features (ignored for ``physics``).
    cfg : TrainConfig
        Seed and XGBoost settings.
    nthread : int, default 1
        XGBoost threads.

    Returns
    -------
    FittedModel

    Raises
    ------
    InputError
        If the candidate is unknown or no training row has a finite target.
    """
    if name not in CANDIDATES:
        raise InputError(f"unknown candidate {name!r}; known: {list(CANDIDATES)}")
    base_fallback = float(np.nanmean(train[ssm_col].to_numpy(dtype=float))) if name == "xgb_residual" else None
    if name in PHYSICAL_CANDIDATES:
        return FittedModel(name, "point", (), None, None, None, n_train=len(train))
    y, _ = _target(name, train, base_fallback, ssm_col)
    ok = np.isfinite(y)
    if not ok.any():
        raise InputError(f"candidate {name!r}: no training row with a finite target")
    x = feature_matrix(train.loc[ok], features)
    booster = _train_booster(x, y[ok], features, xgb_params(cfg, nthread), cfg.xgb.n_estimators)
    return FittedModel(name, "point", tuple(features), booster, base_fallback, None, n_train=int(ok.sum()))


def predict_candidate(model: FittedModel, df: pd.DataFrame) -> np.ndarray:
    """Point predictions (m3/m3, float64) of a fitted candidate on rows with physics features."""
    off = offset(model.name, df, model.base_fallback)
    if model.booster is None:
        return off.astype(float)
    return predict_point_matrix(model, feature_matrix(df, model.features), off)


def predict_point_matrix(model: FittedModel, x: Optional[np.ndarray], off: np.ndarray) -> np.ndarray:
    """Point predictions (float64) of a fitted candidate from its feature matrix ``x`` (float32,
    C-contiguous, the columns of ``model.features``; :func:`feature_matrix`; unused without a
    booster) and its :func:`offset` ``off``: one ``inplace_predict`` call."""
    if model.booster is None:
        return np.asarray(off, dtype=float)
    if len(x) == 0:
        return np.empty(0)
    pred = model.booster.inplace_predict(x)
    return off + np.asarray(pred, dtype=np.float64).reshape(-1)


def fit_quantiles(
    name: str,
    train: pd.DataFrame,
    features: Sequence[str],
    cfg: Any,
    *,
    base_fallback: Optional[float] = None,
    nthread: int = 1,
    ssm_col: str = "ssm",
) -> FittedModel:
    """Fit the multi-quantile model (``cfg.quantiles``) of a candidate on the same offset as its point
    model; ``base_fallback`` must be the point model's (``xgb_residual``)."""
    if name == "xgb_residual" and base_fallback is None:
        base_fallback = float(np.nanmean(train[ssm_col].to_numpy(dtype=float)))
    y, _ = _target(name, train, base_fallback, ssm_col)
    ok = np.isfinite(y)
    if not ok.any():
        raise InputError(f"quantile model of {name!r}: no training row with a finite target")
    q = tuple(float(a) for a in cfg.quantiles)
    x = feature_matrix(train.loc[ok], features)
    booster = _train_booster(x, y[ok], features, xgb_params(cfg, nthread, quantiles=q), quantile_rounds(cfg))
    return FittedModel(name, "quantiles", tuple(features), booster, base_fallback, q, n_train=int(ok.sum()))


def predict_quantiles(model: FittedModel, df: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(low, high) quantile predictions, ordered so that low <= high (float64; NaN where the offset is)."""
    off = offset(model.name, df, model.base_fallback)
    if len(df) == 0:
        return np.empty(0), np.empty(0)
    return predict_quantile_matrix(model, feature_matrix(df, model.features), off)


def predict_quantile_matrix(model: FittedModel, x: np.ndarray, off: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`predict_quantiles` from the model's feature matrix ``x`` and its offset ``off``
    (as :func:`predict_point_matrix`): one ``inplace_predict`` call."""
    if len(x) == 0:
        return np.empty(0), np.empty(0)
    q = np.asarray(model.booster.inplace_predict(x), dtype=np.float64).reshape(len(x), -1)
    # the row-wise min and max as element-wise minimum/maximum of the columns, left to right: what
    # np.min/np.max(q, axis=1) return (the same NaN and signed-zero results), without their
    # reduction along a 2-element axis (~2.7 ms each for a 256 x 256 tile, against ~0.05)
    lo, hi = q[:, 0].copy(), q[:, 0].copy()
    for j in range(1, q.shape[1]):
        np.minimum(lo, q[:, j], out=lo)
        np.maximum(hi, q[:, j], out=hi)
    return off + lo, off + hi


def blend(own: np.ndarray, glob: np.ndarray, weight: float) -> np.ndarray:
    """``weight * own + (1 - weight) * global``, the global model alone where ``own`` is NaN."""
    own = np.asarray(own, dtype=float)
    glob = np.asarray(glob, dtype=float)
    if weight >= 1.0:
        return own.copy()
    mixed = weight * own + (1.0 - weight) * glob
    return np.where(np.isfinite(own), mixed, glob)


def booster_from_bytes(raw: bytes, nthread: int = 1) -> xgb.Booster:
    """A Booster from UBJ (or JSON) bytes, with ``nthread`` threads for prediction."""
    booster = xgb.Booster()
    booster.load_model(bytearray(raw))
    booster.set_param({"nthread": int(nthread)})
    return booster
