"""Models of ssm-spark: candidates, the training run (folds, units, selection) and the model registry.

Pure pandas/numpy/xgboost (no Spark import outside :mod:`~ssm_spark.models.spark_train`): the
training runner takes a *unit map*, and on Spark each unit (environment or land-cover group) is one
task of an RDD map over :func:`train_unit`; the registry's raw model bytes are broadcast to the
executors for prediction (:meth:`Registry.model_bytes`, :meth:`Registry.from_bytes`).

Modules
-------
candidates
    The six candidates (physics, change_detection, xgb_raw, xgb_coupled, xgb_residual, global), their features, and
    native XGBoost fitting/prediction (point and multi-quantile models).
folds, calibration_folds
    Clean rows, station-grouped folds, leakage checks and levels; the WCM calibrated per fold.
training
    The training context and one unit's cross-validation, selection and final fits.
choice
    Ranking, the selection rules (paired test, blend, pooled shrinkage) and interval calibration.
metrics_report
    The assembled :class:`TrainingResult` and ``cv_metrics``.
runner, spark_train
    The one training runner (:func:`run_training`) with its unit map: in process
    (:func:`train_models`) or on Spark (:func:`~ssm_spark.models.spark_train.train_on_spark`).
selection
    The names above under their old module name.
registry
    ``save_registry`` / ``load_registry``: manifest.json + UBJ models, and fast prediction.
"""

from __future__ import annotations

from ssm_spark.models.candidates import CANDIDATES, FEATURE_SCHEMA
from ssm_spark.models.folds import fold_assignments
from ssm_spark.models.metrics_report import TrainingResult
from ssm_spark.models.registry import Registry, load_registry, save_registry
from ssm_spark.models.runner import local_map, run_training, train_models
from ssm_spark.models.training import UnitResult, prepare_training, train_unit

__all__ = [
    "CANDIDATES",
    "FEATURE_SCHEMA",
    "Registry",
    "TrainingResult",
    "UnitResult",
    "fold_assignments",
    "load_registry",
    "local_map",
    "prepare_training",
    "run_training",
    "save_registry",
    "train_models",
    "train_unit",
]
