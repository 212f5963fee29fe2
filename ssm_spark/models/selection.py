"""Model selection, by its old name: the training run's public names, from the modules that hold them.

The run is split along its roles; this module only re-exports them for importers of
``ssm_spark.models.selection``:

:mod:`~ssm_spark.models.folds`
    clean rows, station folds, leakage checks, levels (``clean_matchups``, ``assign_folds``,
    ``fold_assignments``, ``leakage_report``, ``plan_levels``).
:mod:`~ssm_spark.models.calibration_folds`
    the WCM calibrated per fold (``calibrate_fold``, ``calibrate_folds``).
:mod:`~ssm_spark.models.training`
    the context and one unit's cross-validation, selection and final fits (``TrainingContext``,
    ``prepare_training``, ``UnitResult``, ``train_global``, ``attach_global_oof``, ``unit_frames``,
    ``train_unit``).
:mod:`~ssm_spark.models.choice`
    ranking, the selection rules and the interval calibration (``rank_candidates``, ``choose_model``,
    ``conformal_shift``, ``score``).
:mod:`~ssm_spark.models.metrics_report`
    the assembled result and ``cv_metrics.json`` (``TrainingResult``, ``cv_metrics``,
    ``finalize_training``).
:mod:`~ssm_spark.models.runner`
    the one runner (``run_training``, ``local_map``, ``train_models``); on Spark,
    :mod:`ssm_spark.models.spark_train`.
"""

from __future__ import annotations

from ssm_spark.models.calibration_folds import calibrate_fold, calibrate_folds
from ssm_spark.models.choice import choose_model, conformal_shift, rank_candidates, score
from ssm_spark.models.folds import LEVELS, assign_folds, clean_matchups, fold_assignments, leakage_report, plan_levels
from ssm_spark.models.metrics_report import (CONTRACT_ENV_KEYS, CONTRACT_METRIC_KEYS, MIN_STATION_SAMPLES,
                                             TrainingResult, cv_metrics, finalize_training)
from ssm_spark.models.runner import local_map, run_training, train_models
from ssm_spark.models.training import (TrainingContext, UnitResult, attach_global_oof, prepare_training, train_global,
                                       train_unit, training_summary, unit_frames)

# private helpers that tests and benchmarks reach through this module
from ssm_spark.models.choice import _served_intervals  # noqa: F401
from ssm_spark.models.metrics_report import _station_median  # noqa: F401
from ssm_spark.models.training import _cv_point, _cv_quantiles  # noqa: F401

__all__ = [
    "CONTRACT_METRIC_KEYS",
    "CONTRACT_ENV_KEYS",
    "LEVELS",
    "MIN_STATION_SAMPLES",
    "TrainingContext",
    "UnitResult",
    "TrainingResult",
    "clean_matchups",
    "assign_folds",
    "fold_assignments",
    "leakage_report",
    "calibrate_fold",
    "calibrate_folds",
    "plan_levels",
    "training_summary",
    "prepare_training",
    "train_global",
    "attach_global_oof",
    "unit_frames",
    "train_unit",
    "finalize_training",
    "local_map",
    "run_training",
    "train_models",
    "choose_model",
    "rank_candidates",
    "conformal_shift",
    "cv_metrics",
    "score",
]
