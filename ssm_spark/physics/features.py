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
        theta = np.full(n, float(nominal_incidence_deg))
    if is_frame:
        envs = data[env_col].to_numpy(dtype=object) if env_col in data.columns else None
    else:
        envs = np.asarray(data[env_col], dtype=object) if env_col in data else None

    qc = np.zeros(n, dtype=QC_DTYPE)
    present_inputs = [x for x in (vv, vh, v, theta) if x is not None]
    any_missing = np.zeros(n, dtype=bool)
    for x in present_inputs:
        any_missing |= ~np.isfinite(x)
    qc |= flag_where(any_missing, QC.MISSING_INPUT)

    out: dict[str, np.ndarray] = {}
    mv_by_pol: dict[str, np.ndarray] = {}
    soil_by_pol: dict[str, np.ndarray] = {}
    for pol, obs, soil_col, tau_col in (
        ("vv", vv, soil_vv_col, tau2_vv_col),
        ("vh", vh, soil_vh_col, tau2_vh_col),
    ):
        if obs is None:
            continue
        p = param_arrays(params, envs, pol, n=n)
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
    result_map: dict[str, np.ndarray] = {k: np.asarray(val) for k, val in data.items()}
    for c in order:
        if c in out:
            result_map[c] = out[c]
    return result_map
