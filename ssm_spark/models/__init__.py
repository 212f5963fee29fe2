"""Models of ssm-spark: candidates, the model-selection module and the model registry.

Pure pandas/numpy/xgboost (no Spark import): the Spark layer wraps :func:`train_unit` with
``applyInPandas`` (one group per environment or land-cover group) and broadcasts the registry's raw
model bytes to the executors (:meth:`Registry.model_bytes`, :meth:`Registry.from_bytes`).

Modules
-------
candidates
    The five candidates (physics, xgb_raw, xgb_coupled, xgb_residual, global), their features, and
    native XGBoost fitting/prediction (point and multi-quantile models).
selection
    Station-grouped cross-validation, selection with fallback levels, final fits, ``cv_metrics``.
registry
    ``save_registry`` / ``load_registry``: manifest.json + UBJ models, and fast prediction.
"""

from __future__ import annotations

from ssm_spark.models.candidates import CANDIDATES, FEATURE_SCHEMA
from ssm_spark.models.registry import Registry, load_registry, save_registry
from ssm_spark.models.selection import (
    TrainingResult,
    UnitResult,
    fold_assignments,
    prepare_training,
    train_models,
    train_unit,
)

__all__ = [
    "CANDIDATES",
    "FEATURE_SCHEMA",
    "Registry",
    "TrainingResult",
    "UnitResult",
    "fold_assignments",
    "load_registry",
    "prepare_training",
    "save_registry",
    "train_models",
    "train_unit",
]
