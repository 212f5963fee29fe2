"""The physics chain calibrated once per fold, on that fold's training stations only.

:func:`calibrate_folds` gives ``{0: ..., 1: ..., "all": ...}``: for fold k the WCM (with the angle
slopes and the change-detection calibration) fitted on the stations *outside* fold k, so that the
physics features of fold k's test rows never saw them; ``"all"`` is fitted on every station and
serves the final models.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
from typing import Any

import pandas as pd

from ssm_spark.models.folds import _train_cfg

__all__ = ["calibrate_fold", "calibrate_folds"]


def calibrate_fold(df: pd.DataFrame, cfg: Any, fold: Any, *, fold_col: str = "fold", physics: Any = None
                   ) -> dict[str, Any]:
    """Calibrate the physics chain on the stations *outside* ``fold`` (``fold="all"``: on everything).

    Parameters
    ----------
    df : pandas.DataFrame
        Clean matchups with a ``fold`` column.
    cfg : TrainConfig
        ``calib_min_samples``, ``calib_min_stations``, ``nominal_incidence_deg``.
    fold : int or "all"
    physics : PhysicsConfig, optional
        Angle normalisation, vegetation descriptor, bounds and change detection (default settings).

    Returns
    -------
    dict
        :func:`ssm_spark.physics.chain.calibrate_physics`: the WCM parameters
        (:func:`ssm_spark.physics.calibrate.to_dict` form, whose ``settings`` record
        ``calibration_fold`` and ``calibration_stations``) with the angle slopes and the
        change-detection calibration beside them.
    """
    from ssm_spark.physics.chain import calibrate_physics

    t = _train_cfg(cfg)
    train = df if fold == "all" else df.loc[df[fold_col] != fold]
    params = calibrate_physics(train, physics, min_samples=t.calib_min_samples, min_stations=t.calib_min_stations,
                               nominal_incidence_deg=t.nominal_incidence_deg)
    params.setdefault("settings", {})
    params["settings"]["calibration_fold"] = fold
    params["settings"]["calibration_stations"] = int(train["station_id"].nunique())
    return params


def _calibrate_job(args: tuple[pd.DataFrame, Any, Any, Any]) -> dict[str, Any]:
    df, cfg, fold, physics = args
    return calibrate_fold(df, cfg, fold, physics=physics)


def calibrate_folds(df: pd.DataFrame, cfg: Any, *, fold_col: str = "fold", max_workers: int = 1,
                    physics: Any = None) -> dict[Any, dict[str, Any]]:
    """:func:`calibrate_fold` for every fold and for all data: ``{0: ..., 1: ..., "all": ...}``.

    ``max_workers > 1`` runs them in spawned processes (the results do not depend on it).
    """
    keys: list[Any] = [*sorted(int(x) for x in df[fold_col].unique()), "all"]
    cols = [c for c in df.columns if not c.startswith("pred_")]
    jobs = [(df[cols], cfg, k, physics) for k in keys]
    if max_workers > 1:
        with cf.ProcessPoolExecutor(max_workers=max_workers, mp_context=multiprocessing.get_context("spawn")) as ex:
            tables = list(ex.map(_calibrate_job, jobs))
    else:
        tables = [_calibrate_job(j) for j in jobs]
    return dict(zip(keys, tables))
