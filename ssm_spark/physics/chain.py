"""Calibration of the whole physics chain on training rows: angle slopes, WCM, change detection.

:func:`calibrate_physics` is what one cross-validation fold (or the final model) calibrates on its
training stations only, in this order, each step on the output of the one before:

1. the angle slopes per environment (:func:`ssm_spark.physics.angle.fit_slopes`);
2. the Water Cloud Model per environment and polarisation on the backscatter normalised to the
   reference angle (:func:`ssm_spark.physics.calibrate.calibrate_wcm`), with the vegetation
   descriptor chosen by :func:`ssm_spark.physics.features.vegetation_column`;
3. the change-detection map ``mv = a + b m_s`` per environment
   (:func:`ssm_spark.physics.change_detection.calibrate_cd`), where the rows carry their cell's
   climatology.

The result is the WCM parameter dict (:func:`ssm_spark.physics.calibrate.to_dict`) with the keys
``angle``, ``vegetation``, ``bound_to_porosity`` and ``cd`` beside ``entries``: the one object that
:func:`ssm_spark.physics.features.retrieval_features` needs, stored in the model registry as is.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ssm_spark.physics import calibrate as cal
from ssm_spark.physics.angle import fit_slopes, reference_backscatter
from ssm_spark.physics.change_detection import calibrate_cd
from ssm_spark.physics.features import radar_vegetation_index, retrieval_features, vegetation_column

__all__ = ["calibrate_physics", "default_physics_config"]

_THETA = "__theta_ref"


def default_physics_config() -> Any:
    """The default :class:`~ssm_spark.config.PhysicsConfig` (for callers holding a TrainConfig only)."""
    from ssm_spark.config import PhysicsConfig

    return PhysicsConfig()


def calibrate_physics(train: pd.DataFrame, physics: Any = None, *, min_samples: int = 30, min_stations: int = 3,
                      nominal_incidence_deg: float | None = None) -> dict[str, Any]:
    """Calibrate the physics chain on ``train`` (matchups with ``ssm``, ``station_id``, ``env``).

    Parameters
    ----------
    train : pandas.DataFrame
        Training matchups; ``clim_*`` columns (their cells' climatology) enable change detection.
    physics : PhysicsConfig, optional
        Reference angle, slope mode, vegetation descriptor, bounds, change detection.
    min_samples, min_stations : int
        Per-environment minimum for every fit (else the group's, then the global one).
    nominal_incidence_deg : float, optional
        Angle of a table without ``incidence_deg``.

    Returns
    -------
    dict
        ``calibrate.to_dict`` form plus ``angle``, ``vegetation``, ``bound_to_porosity``, ``cd``.
    """
    ph = physics or default_physics_config()
    d = train.copy()
    pols = [p for p in ("vv", "vh") if f"{p}_db" in d.columns]
    has_angle = "incidence_deg" in d.columns
    if not has_angle and nominal_incidence_deg is not None:
        d["incidence_deg"] = float(nominal_incidence_deg)
    if ph.angle_slope == "none":
        angle: dict[str, Any] = {"mode": "none"}
    else:
        angle = {"mode": ph.angle_slope, "theta_ref": float(ph.reference_angle_deg),
                 "nominal_angle": not has_angle,
                 **fit_slopes(d, pols=pols, min_samples=min_samples, min_stations=min_stations)}
    veg = vegetation_column(d, ph.vegetation)
    if veg == "rvi":
        d["rvi"] = radar_vegetation_index(d["vv_db"].to_numpy(float), d["vh_db"].to_numpy(float))
    kw: dict[str, Any] = {"veg_col": veg, "min_samples": min_samples, "min_stations": min_stations,
                          "nominal_incidence_deg": nominal_incidence_deg}
    if angle["mode"] != "none" and "incidence_deg" in d.columns:
        for col, values in reference_backscatter(d, angle, d["incidence_deg"].to_numpy(float), pols).items():
            d[col] = values
        d[_THETA] = angle["theta_ref"]
        kw.update(backscatter_cols={p: f"{p}_ref_db" for p in pols}, incidence_col=_THETA)
    table = cal.calibrate_wcm(d, pols=tuple(pols), **kw)
    params = cal.to_dict(table)
    params.update(angle=angle, vegetation=veg, bound_to_porosity=bool(ph.bound_to_porosity), cd=None)
    cdc = ph.change_detection
    if cdc.enabled and any(c.startswith("clim_") for c in train.columns):
        probe = retrieval_features(train, {**params, "cd": {"entries": {}}},
                                   nominal_incidence_deg=nominal_incidence_deg)
        rw = probe["rw_vv"] if "rw_vv" in probe.columns else None
        if "rw_vh" in probe.columns:
            rw = probe["rw_vh"] if rw is None else rw.where(np.isfinite(rw), probe["rw_vh"])
        if rw is not None:
            params["cd"] = calibrate_cd(probe.assign(rw=rw.to_numpy(float)), min_samples=min_samples,
                                        min_stations=min_stations)
    return params
