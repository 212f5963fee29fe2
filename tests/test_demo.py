"""The README's main command end to end (``run_demo``) on a small simulated region: training without
the held-out stations, the product of every date, its validation three ways."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import rasterio

from ssm_spark.config import load_config

SMALL = ["region.size_km=[64, 64]", "grid.tile_size=32", "simulate.n_stations=16", "simulate.end=2024-05-07",
         "simulate.min_stations_per_env=3", "train.xgb.n_estimators=20", "train.k_folds=3",
         "demo.holdout_stations=0.25", "produce.quicklook_max_px=128", "physics.change_detection.min_dates=5"]


@pytest.mark.spark
@pytest.mark.slow
def test_demo_end_to_end_small(spark, tmp_path: Path):
    from ssm_spark.demo import run_demo

    cfg = load_config(overrides=SMALL)
    out = tmp_path / "demo"
    summary = run_demo(cfg, out)
    assert json.loads((out / "demo_summary.json").read_text())["config_hash"] == cfg.hash()

    # stations: held out of training, validated apart
    val = summary["validation"]
    held = val["held_out"]["stations"]
    assert held >= 1 and summary["train"]["held_out_stations"] == held
    oof = pd.read_parquet(out / "models" / "oof_predictions.parquet")
    pairs_held = pd.read_parquet(out / "validation" / "held_out" / "pairs.parquet")
    pairs_train = pd.read_parquet(out / "validation" / "training" / "pairs.parquet")
    assert set(pairs_held["station_id"]).isdisjoint(set(oof["station_id"]))
    assert set(pairs_train["station_id"]) <= set(oof["station_id"])
    assert val["held_out"]["pooled"]["n"] > 0 and val["training"]["pooled"]["n"] > 0

    # the physics chain: the station cells' climatology from their own stack dates, in the registry
    m = pd.read_parquet(out / "matchups.parquet")
    assert m["clim_n"].min() >= 5 and m["clim_dry_vv"].notna().all()
    assert summary["matchups"]["change_detection"]["rows_without_climatology"] == 0
    wcm = json.loads((out / "models" / "manifest.json").read_text())["physics"]["wcm"]
    assert wcm["angle"]["mode"] == "environment" and wcm["angle"]["theta_ref"] == 40.0
    assert "global" in wcm["cd"]["entries"]
    feats = json.loads((out / "models" / "manifest.json").read_text())["features"]["candidates"]["global"]
    assert {"vv_ref_db", "rw_vv", "anom_vv_db", "mv_cd"} <= set(feats)   # the coupled physics reaches the trees
    if "pred_physics" in oof:   # (the small region may train the global model alone)
        assert oof["pred_physics"].dropna().between(0, 0.6).all()   # bounded to [0, porosity]

    # the product: every simulated date, every output kind
    dates = sorted(p.name for p in (out / "sim" / "stacks").iterdir() if p.is_dir())
    prod = summary["produce"]
    assert prod["produced"] == len(dates) and not prod["failed_files"]
    for d in dates:
        assert (out / "product" / "parquet" / f"date={d}" / "_SUCCESS.json").is_file()
        assert (out / "product" / "vrt" / f"{d}.vrt").is_file()
        assert (out / "product" / "quicklook" / f"{d}.png").is_file()
        with rasterio.open(out / "product" / "vrt" / f"{d}.vrt") as src:
            assert src.crs.to_epsg() == 6933
    # against the truth of every land cell: the estimates follow it (loose, a 20-tree model on 16 stations)
    t = val["truth"]
    assert t["dates"] == len(dates)
    assert t["coverage"]["fraction_estimated"] > 0.8
    assert t["pooled"]["R"] > 0.5 and t["pooled"]["ubRMSE"] < 0.1
    assert json.loads((out / "validation" / "truth.json").read_text())["pooled"] == t["pooled"]
