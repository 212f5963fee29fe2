"""validate: a product against ISMN in situ, end to end on a small simulated region (truth as the product)."""

from __future__ import annotations

import json

import pytest

from ssm_spark.config import load_config
from ssm_spark.pipeline import validate_run
from ssm_spark.sources.simulate import simulate, truth_table

SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=12", "simulate.end=2024-05-01",
         "simulate.min_stations_per_env=3"]


@pytest.mark.spark
@pytest.mark.slow
def test_truth_as_product_scores_like_the_stations_error(spark, tmp_path):
    cfg = load_config(overrides=SMALL)
    simulate(cfg, tmp_path / "sim")
    grid = cfg.grid.build()
    truth = truth_table(tmp_path / "sim", grid)
    (tmp_path / "product").mkdir()
    truth.to_parquet(tmp_path / "product" / "part-0.parquet")
    res = validate_run(spark, cfg, tmp_path / "product", tmp_path / "sim" / "insitu", tmp_path / "val")
    pooled = res["overall"]["pooled"]
    # stations = truth + per-station offset/scale + noise (the simulator's representativeness error):
    # strongly but not perfectly correlated with their cells' truth
    assert pooled["stations"] == 12 and pooled["n"] > 50
    assert 0.7 < pooled["R"] < 0.999 and 0.005 < pooled["ubRMSE"] < 0.06
    saved = json.loads((tmp_path / "val" / "metrics.json").read_text())
    assert saved["overall"]["pooled"]["n"] == pooled["n"]
    assert (tmp_path / "val" / "report.html").stat().st_size > 10_000 and (tmp_path / "val" / "pairs.parquet").exists()
