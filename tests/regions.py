"""The small trained region many test modules start from: simulated inputs, matchups, a registry.

``trained_region(spark, cfg, root)`` writes ``root/sim`` (the simulator's stacks, static layers,
in-situ files and truth), ``root/matchups.parquet`` and ``root/models`` (the registry), through the
pipeline's own entry points, and returns the training summary. Each module keeps its own config
(region size, candidates, change-detection window) and its own module-scoped fixture around it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def trained_region(spark: Any, cfg: Any, root: Path) -> dict:
    """Simulate ``cfg``'s region into ``root/sim``, build its matchups and train a registry on them."""
    from ssm_spark.pipeline import matchups_run, train_run
    from ssm_spark.sources.simulate import simulate

    simulate(cfg, root / "sim")
    matchups_run(spark, cfg, root / "sim" / "stacks", root / "sim" / "insitu", root / "matchups.parquet")
    return train_run(spark, cfg, root / "matchups.parquet", root / "models")
