"""Coupled physics features: one DataFrame-in, DataFrame-out transform for the models.

:func:`coupled_features` runs, per row, the Water Cloud Model vegetation correction of VV and VH
(:mod:`~ssm_spark.physics.wcm`, parameters per environment from :mod:`~ssm_spark.physics.calibrate`,
or :data:`DEFAULT_WCM_PARAMS`), the calibrated soil-term inversion ``mv_wcm = (sigma0_soil[dB] - C)
/ D``, and the Oh (2002) inversion (:mod:`~ssm_spark.physics.oh`) of the *vegetation-corrected* VV
and VH, and ORs every QC bit into one ``uint16`` column. It is pure numpy/pandas with no Spark
import, so the Spark layer can hand it straight to ``mapInPandas`` and the point-retrieval path can
call it on a one-row frame.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from ssm_spark.errors import InputError
from ssm_spark.physics import oh, wcm
from ssm_spark.physics.calibrate import param_arrays
from ssm_spark.physics.qc import QC, QC_DTYPE, flag_where
from ssm_spark.physics.wcm import DEFAULT_WCM_PARAMS
from ssm_spark.physics.wcm_params import EnvKeys, _normalise

__all__ = ["DEFAULT_WCM_PARAMS", "MV_PLAUSIBLE", "coupled_features", "FEATURE_COLUMNS"]

#: Range of ``mv_wcm`` (m3/m3) outside which :attr:`QC.WCM_MV_OUT_OF_RANGE` is set: from oven-dry to
#: about the porosity of mineral soils.
MV_PLAUSIBLE: tuple[float, float] = (0.0, 0.6)

#: Default output column names, in output order.
FEATURE_COLUMNS: tuple[str, ...] = (
    "sigma0_soil_vv_db",
    "sigma0_soil_vh_db",
    "tau2_vv",
    "tau2_vh",
    "mv_wcm",
    "mv_oh",
    "ks_oh",
    "cross_pol_ratio_db",
    "qc",
)


def _column(data: Any, name: str | None) -> np.ndarray | None:
    if name is None:
        return None
    if isinstance(data, pd.DataFrame):
        return data[name].to_numpy(dtype=float) if name in data.columns else None
    return np.asarray(data[name], dtype=float) if name in data else None


def coupled_features(
    data: pd.DataFrame | Mapping[str, Any],
    params: Any = None,
    *,
    vv_col: str = "vv_db",
    vh_col: str = "vh_db",
    incidence_col: str = "incidence_deg",
    veg_col: str = "ndvi",
    env_col: str = "env",
    nominal_incidence_deg: float | None = None,
    mv_plausible: tuple[float, float] = MV_PLAUSIBLE,
    soil_vv_col: str = "sigma0_soil_vv_db",
    soil_vh_col: str = "sigma0_soil_vh_db",
    tau2_vv_col: str = "tau2_vv",
    tau2_vh_col: str = "tau2_vh",
    mv_wcm_col: str = "mv_wcm",
    mv_oh_col: str = "mv_oh",
    ks_oh_col: str = "ks_oh",
    ratio_col: str = "cross_pol_ratio_db",
    qc_col: str = "qc",
) -> pd.DataFrame | dict[str, np.ndarray]:
    """Vegetation-corrected backscatter, WCM and Oh soil moisture, roughness and QC, per row.

    Per polarisation p in {VV, VH}, with the WCM parameters of the row's environment
    (:func:`ssm_spark.physics.calibrate.lookup` fallback: environment -> land-cover group ->
    global):

    * ``sigma0_soil_p_db``, ``tau2_p``: :func:`ssm_spark.physics.wcm.inverse`,
      ``sigma0_soil = (sigma0 - A V cos(theta) (1 - tau2)) / tau2``, ``tau2 = exp(-2 B V / cos(theta))``;
    * ``mv_wcm = (sigma0_soil_vv_db - C_vv) / D_vv``, from VH where the VV value is unavailable
      (VV column absent, NaN, or vegetation-dominated);
    * ``mv_oh``, ``ks_oh``: :func:`ssm_spark.physics.oh.inverse` on the vegetation-corrected VV and VH
      (Oh 2002: ks from ``q = sigma0_soil_vh / sigma0_soil_vv``, then mv from ``sigma0_soil_vh``);
    * ``cross_pol_ratio_db = vh_db - vv_db`` (observed, not corrected);
    * ``qc``: OR of the QC bits of every step (:class:`~ssm_spark.physics.qc.QC`), plus
      ``MISSING_INPUT`` where any input column present is NaN and ``WCM_MV_OUT_OF_RANGE`` where
      ``mv_wcm`` is outside ``mv_plausible``. If the input already has a ``qc_col`` (e.g. land-cover
      masks), its bits are kept and ORed in.

    Missing optional inputs drop what needs them: without a VH column there are no
    ``sigma0_soil_vh_db``, ``tau2_vh``, ``mv_oh``, ``ks_oh`` or ``cross_pol_ratio_db`` columns (and
    the same for VV with its columns); values are never invented.

    Parameters
    ----------
    data : pandas.DataFrame or mapping of str to array_like
        Rows with backscatter (dB), incidence angle (deg), vegetation descriptor and, optionally, the
        environment key.
    params : DataFrame, dict or None, default None
        WCM parameters: a :func:`~ssm_spark.physics.calibrate.calibrate_wcm` table, its
        :func:`~ssm_spark.physics.calibrate.to_dict` form, a ``{'vv': {A, B, C, D}, 'vh': {...}}``
        mapping, or None for :data:`DEFAULT_WCM_PARAMS`. The vegetation descriptor in ``veg_col``
        must be the one the parameters were calibrated with.
    vv_col, vh_col, incidence_col, veg_col, env_col : str
        Input column names. ``vv_col`` and ``vh_col`` are each optional (not both); ``env_col`` is
        optional (absent: global parameters).
    nominal_incidence_deg : float, optional
        Angle used when ``incidence_col`` is absent.
    mv_plausible : (float, float), default (0.0, 0.6)
        Plausible range of ``mv_wcm`` (m3/m3) for the QC flag; values are never clipped.
    soil_vv_col, soil_vh_col, tau2_vv_col, tau2_vh_col, mv_wcm_col, mv_oh_col, ks_oh_col, \
ratio_col, qc_col : str
        Output column names.

    Returns
    -------
    pandas.DataFrame or dict of numpy.ndarray
        For a DataFrame: a new DataFrame, the input columns followed by the feature columns (float64;
        ``qc`` uint16), same index. For a mapping: a dict with the inputs (as arrays) and the features.

    Raises
    ------
    InputError
        If ``veg_col`` is absent, both backscatter columns are absent, the incidence column is absent
        without ``nominal_incidence_deg``, or the parameters lack a needed polarisation.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"vv_db": [-11.0], "vh_db": [-18.0], "incidence_deg": [38.0],
    ...                    "ndvi": [0.4], "env": ["cropland_C"]})
    >>> out = coupled_features(df)
    >>> sorted(set(out.columns) - set(df.columns))[:3]
    ['cross_pol_ratio_db', 'ks_oh', 'mv_oh']
    """
    is_frame = isinstance(data, pd.DataFrame)
    if not is_frame and not isinstance(data, Mapping):
        raise InputError(
            f"coupled_features: 'data' must be a pandas DataFrame or a mapping of arrays, got "
            f"{type(data).__name__}"
        )
    vv = _column(data, vv_col)
    vh = _column(data, vh_col)
    v = _column(data, veg_col)
    theta = _column(data, incidence_col)
    if v is None:
        raise InputError(
            f"coupled_features: vegetation column {veg_col!r} is missing (required by the WCM)"
        )
    if vv is None and vh is None:
        raise InputError(
            f"coupled_features: neither {vv_col!r} nor {vh_col!r} is present; at least one "
            "backscatter column is required"
        )
    n = len(v)
    if theta is None:
        if nominal_incidence_deg is None:
            raise InputError(
                f"coupled_features: incidence column {incidence_col!r} is missing; pass "
                "nominal_incidence_deg to use a nominal angle"
            )
        # one value, broadcast against the rows by the kernels: their angle terms (cosines, the Oh
        # angular factor) are then computed once, not once per row (the same values)
        theta = np.full(1, float(nominal_incidence_deg))
    if is_frame:
        envs = data[env_col].to_numpy(dtype=object) if env_col in data.columns else None
    elif env_col in data:  # keys already factorized (EnvKeys) are used as they are
        envs = data[env_col] if isinstance(data[env_col], EnvKeys) else np.asarray(data[env_col], dtype=object)
    else:
        envs = None

    qc = np.zeros(n, dtype=QC_DTYPE)
    present_inputs = [x for x in (vv, vh, v, theta) if x is not None]
    any_missing = np.zeros(n, dtype=bool)
    for x in present_inputs:
        any_missing |= ~np.isfinite(x)
    qc |= flag_where(any_missing, QC.MISSING_INPUT)

    out: dict[str, np.ndarray] = {}
    mv_by_pol: dict[str, np.ndarray] = {}
    soil_by_pol: dict[str, np.ndarray] = {}
    params = _normalise(params)   # once for both polarisations
    for pol, obs, soil_col, tau_col in (
        ("vv", vv, soil_vv_col, tau2_vv_col),
        ("vh", vh, soil_vh_col, tau2_vh_col),
    ):
        if obs is None:
            continue
        p = param_arrays(params, envs, pol, n=n, meta=False)
        soil_db, t2, flags = wcm.inverse(obs, v, theta, p["A"], p["B"])
        soil_db = np.broadcast_to(np.asarray(soil_db, dtype=float), (n,)).copy()
        qc |= np.broadcast_to(flags, (n,)).astype(QC_DTYPE)
        out[soil_col] = soil_db
        out[tau_col] = np.broadcast_to(np.asarray(t2, dtype=float), (n,)).copy()
        soil_by_pol[pol] = soil_db
        mv_by_pol[pol] = np.asarray(wcm.mv_from_soil_db(soil_db, p["C"], p["D"]), dtype=float)

    if "vv" in mv_by_pol and "vh" in mv_by_pol:
        mv_wcm = np.where(np.isfinite(mv_by_pol["vv"]), mv_by_pol["vv"], mv_by_pol["vh"])
    else:
        mv_wcm = next(iter(mv_by_pol.values()))
    lo, hi = mv_plausible
    qc |= flag_where(np.isfinite(mv_wcm) & ((mv_wcm < lo) | (mv_wcm > hi)), QC.WCM_MV_OUT_OF_RANGE)
    out[mv_wcm_col] = mv_wcm

    if vv is not None and vh is not None:
        # Oh needs finite soil terms; rows without them carry VEGETATION_DOMINATED/MISSING_INPUT
        # already, so Oh's own MISSING_INPUT bit would only repeat them.
        mv_oh, ks_oh, oh_flags = oh.inverse(soil_by_pol["vv"], soil_by_pol["vh"], theta)
        both = np.isfinite(soil_by_pol["vv"]) & np.isfinite(soil_by_pol["vh"])
        oh_flags = np.where(both, oh_flags, oh_flags & ~QC_DTYPE(QC.MISSING_INPUT)).astype(QC_DTYPE)
        qc |= oh_flags
        out[mv_oh_col] = np.asarray(mv_oh, dtype=float)
        out[ks_oh_col] = np.asarray(ks_oh, dtype=float)
        out[ratio_col] = vh - vv

    if is_frame and qc_col in data.columns:
        prior = data[qc_col].to_numpy()
        prior = np.where(pd.isna(prior), 0, prior).astype(QC_DTYPE)
        qc |= prior
    elif not is_frame and qc_col in data:
        qc |= np.asarray(data[qc_col]).astype(QC_DTYPE)
    out[qc_col] = qc

    order = [
        soil_vv_col,
        soil_vh_col,
        tau2_vv_col,
        tau2_vh_col,
        mv_wcm_col,
        mv_oh_col,
        ks_oh_col,
        ratio_col,
        qc_col,
    ]
    if is_frame:
        result = data.copy()
        for c in order:
            if c in out:
                result[c] = out[c]
        return result
    result_map: dict[str, np.ndarray] = {k: val if isinstance(val, EnvKeys) else np.asarray(val)
                                         for k, val in data.items()}
    for c in order:
        if c in out:
            result_map[c] = out[c]
    return result_map


# ------------------------------------------------------------------------------ the retrieval chain

#: Features added by :func:`retrieval_features` beyond :data:`FEATURE_COLUMNS`, in output order.
RETRIEVAL_COLUMNS: tuple[str, ...] = (
    "vv_ref_db", "vh_ref_db", "rvi", "rw_vv", "anom_vv_db", "rw_vh", "anom_vh_db", "mv_cd",
    "mv_physics", "mv_change_detection", "porosity",
)
_INTERNAL_THETA = "__theta_ref"


def _settings(params: Any) -> dict[str, Any]:
    """The physics settings stored beside the WCM parameters (absent in registries from before the
    angle normalisation: then no normalisation, NDVI, the old 0-0.6 plausible range)."""
    if isinstance(params, Mapping):
        return {"angle": params.get("angle"), "cd": params.get("cd"), "vegetation": params.get("vegetation"),
                "bound": params.get("bound_to_porosity")}
    return {"angle": None, "cd": None, "vegetation": None, "bound": None}


def radar_vegetation_index(vv_db: np.ndarray, vh_db: np.ndarray) -> np.ndarray:
    """Dual-polarisation radar vegetation index ``4 vh / (vv + vh)`` (linear powers; Trudel et al.
    2012, the dual-pol form of Kim and van Zyl's RVI): about 0.2-0.4 over bare soil, 0.6-1 under
    dense canopies. Used as the WCM's vegetation descriptor where no optical index is given."""
    vv = 10.0 ** (np.asarray(vv_db, float) / 10.0)
    vh = 10.0 ** (np.asarray(vh_db, float) / 10.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return 4.0 * vh / (vv + vh)


def vegetation_column(data: "pd.DataFrame | Mapping[str, Any]", choice: str | None) -> str:
    """The vegetation descriptor a table gets: ``ndvi`` or ``rvi`` (see :class:`PhysicsConfig`);
    ``data``: a DataFrame or a mapping of column arrays."""
    names = set(data.columns if isinstance(data, pd.DataFrame) else data)
    has_ndvi = "ndvi" in names and bool(np.any(~pd.isna(np.asarray(data["ndvi"]))))
    if choice == "radar" or (choice in (None, "auto") and not has_ndvi and {"vv_db", "vh_db"} <= names):
        return "rvi"
    return "ndvi"


def retrieval_features(data: "pd.DataFrame | Mapping[str, Any]", params: Any = None, *, env_col: str = "env",
                       nominal_incidence_deg: float | None = None) -> "pd.DataFrame | dict[str, np.ndarray]":
    """The whole physics chain of a row: angle normalisation, WCM + Oh, change detection, bounds.

    1. **Angle** (:mod:`ssm_spark.physics.angle`): ``<pol>_ref_db = <pol>_db - beta (theta -
       theta_ref)`` with the environment's fitted slope, or the cell's own (``clim_slope_<pol>``)
       where the settings say ``cell`` and it has one.
    2. **WCM and Oh** (:func:`coupled_features`) on the normalised backscatter at ``theta_ref``, with
       NDVI or the radar vegetation index ``rvi`` as the vegetation descriptor.
    3. **Change detection** (:mod:`ssm_spark.physics.change_detection`) where the row carries its
       cell's climatology (``clim_*`` columns): ``rw_<pol>``, ``anom_<pol>_db`` and ``mv_cd = a + b
       rw`` with the environment's calibration; ``CHANGE_DETECTION_MISSING`` where it cannot.
    4. **Bounds**: ``mv_physics`` and ``mv_change_detection`` are ``mv_wcm`` and ``mv_cd`` bounded to
       ``[0, porosity]`` (``porosity = 1 - bulk_density / 2.65``, 0.6 without bulk density); the
       unbounded values stay as features and the rows bounded are flagged
       (``WCM_MV_OUT_OF_RANGE``, ``CHANGE_DETECTION_OUT_OF_RANGE``).

    ``params`` is the WCM parameter dict of a registry or fold (:func:`calibrate.to_dict` form) with
    the keys ``angle``, ``cd``, ``vegetation`` and ``bound_to_porosity`` beside it; without them
    (older registries, or bare WCM parameters) steps 1, 3 and 4 reduce to what they were: no
    normalisation, no change detection, the 0-0.6 range flag and unbounded estimates.

    ``data`` is a DataFrame, or a mapping of column arrays (the product's column path: no frame is
    copied; its ``env_col`` may be an :class:`~ssm_spark.physics.wcm_params.EnvKeys`). The same
    numpy operations run on the same float64 arrays either way, so the values are the same bits.

    Returns
    -------
    pandas.DataFrame or dict of numpy.ndarray
        A copy of ``data`` (a new dict of the same arrays for a mapping) with
        :data:`FEATURE_COLUMNS` and the :data:`RETRIEVAL_COLUMNS` computable.
    """
    from ssm_spark.physics.angle import reference_backscatter
    from ssm_spark.physics.change_detection import cd_arrays, cd_features, porosity

    st = _settings(params)
    frame = isinstance(data, pd.DataFrame)
    base = data.copy() if frame else dict(data)
    names = base.columns if frame else base  # (a dict's keys follow the columns added below)

    def column(name: str) -> np.ndarray:
        return base[name].to_numpy(float) if frame else np.asarray(base[name], dtype=float)

    n = len(data) if frame else _length(data)
    envs = None
    if env_col in names:
        envs = base[env_col].to_numpy(dtype=object) if frame else base[env_col]
    pols = [p for p in ("vv", "vh") if f"{p}_db" in names]
    if "incidence_deg" in names:
        theta = column("incidence_deg")
    elif nominal_incidence_deg is not None:
        theta = np.full(n, float(nominal_incidence_deg))
    else:
        theta = None
    angle = st["angle"] or {}
    mode = angle.get("mode", "none")
    veg = st["vegetation"] if st["vegetation"] in ("ndvi", "rvi") else vegetation_column(base, st["vegetation"])
    if veg == "rvi" and {"vv_db", "vh_db"} <= set(names):
        base["rvi"] = radar_vegetation_index(column("vv_db"), column("vh_db"))
    kw: dict[str, Any] = {"env_col": env_col, "veg_col": veg, "nominal_incidence_deg": nominal_incidence_deg}
    if mode != "none" and theta is not None and pols:
        theta_ref = float(angle["theta_ref"])
        for col, values in reference_backscatter(base, angle, theta, pols, env_col=env_col).items():
            base[col] = values
        kw.update(vv_col="vv_ref_db", vh_col="vh_ref_db", incidence_col=_INTERNAL_THETA,
                  nominal_incidence_deg=theta_ref)
    bounded = bool(st["bound"])
    if bounded:
        kw["mv_plausible"] = (-np.inf, np.inf)   # flagged below against the row's own porosity
    out = coupled_features(base, params, **kw)
    qc = np.asarray(out["qc"]).astype(QC_DTYPE)
    if theta is not None and mode != "none":
        qc |= flag_where(~np.isfinite(theta), QC.MISSING_INPUT)
        from ssm_spark.physics.qc import INCIDENCE_VALID_DEG
        lo_t, hi_t = INCIDENCE_VALID_DEG
        qc |= flag_where(np.isfinite(theta) & ((theta < lo_t) | (theta > hi_t)), QC.INCIDENCE_OUT_OF_RANGE)

    por = porosity(column("bulk_density") if "bulk_density" in names else None, n)
    mv = np.asarray(out["mv_wcm"], dtype=float)
    if bounded:
        out["porosity"] = por
        with np.errstate(invalid="ignore"):
            outside = np.isfinite(mv) & ((mv < 0) | (mv > por))
        qc |= flag_where(outside, QC.WCM_MV_OUT_OF_RANGE)
        out["mv_physics"] = np.where(np.isfinite(mv), np.clip(mv, 0.0, por), np.nan)
    if st["cd"] is not None and theta is not None:
        feats, missing = cd_features(base, theta, pols)
        for c, v in feats.items():
            out[c] = v
        qc |= flag_where(missing, QC.CHANGE_DETECTION_MISSING)
        rw = feats.get("rw_vv")
        if rw is None or "rw_vh" in feats:
            rw = feats.get("rw_vh") if rw is None else np.where(np.isfinite(rw), rw, feats["rw_vh"])
        if rw is not None:
            a, b = cd_arrays(st["cd"], envs, n)
            mv_cd = a + b * rw
            out["mv_cd"] = mv_cd
            with np.errstate(invalid="ignore"):
                outside = np.isfinite(mv_cd) & ((mv_cd < 0) | (mv_cd > por))
            qc |= flag_where(outside, QC.CHANGE_DETECTION_OUT_OF_RANGE)
            out["mv_change_detection"] = np.where(np.isfinite(mv_cd), np.clip(mv_cd, 0.0, por), np.nan)
    out["qc"] = qc
    if not frame:
        out.pop(_INTERNAL_THETA, None)
        return out
    return out.drop(columns=[c for c in (_INTERNAL_THETA,) if c in out.columns])


def _length(data: Mapping[str, Any]) -> int:
    """Rows of a mapping of column arrays (its first column's length)."""
    for v in data.values():
        return len(v)
    return 0
