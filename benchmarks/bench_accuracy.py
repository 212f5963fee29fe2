"""Accuracy side by side: the framework, every candidate and a plain XGBoost, on every table we have.

For each table (the demo's matchups, the real SCAN Hawaii table, the real Polish fields table) this
builds the matchup table the way ``ssm-spark matchups`` does (user tables through
``pipeline.table_matchups_run``: column mapping, units, per-station change-detection climatology),
trains with the same code as ``ssm-spark train`` (``models.runner.run_training``, here with the
in-process unit map: ``train_models``, which a test holds equal to the Spark path), with
station-grouped CV (for Poland grouped by field), and beside it, **in the same run on the same
folds**, a plain XGBoost on the table's raw columns (no physics, no environments, default-ish
parameters: what a user would fit first). It prints, per table and variant: framework, each candidate and the plain XGBoost (R, ubRMSE, bias, median per-station R), the
selected model per environment, and the held-out 5-95 % coverage.

Variants switch one mechanism at a time (``--variants``): ``after`` (the defaults), ``before`` (no
angle normalisation, no change detection, unbounded physics, plain best-candidate selection: the
project before issue 10), and the ablations ``no_angle``, ``no_cd``, ``best_selection``,
``no_static`` (static inputs that identify stations left out of the trees), ``no_static_terrain``
(elevation and slope only), ``regularised`` (larger leaves, stronger L2, fewer columns per tree).

    .venv/bin/python benchmarks/bench_accuracy.py --demo out/demo/matchups.parquet
    .venv/bin/python benchmarks/bench_accuracy.py --tables hawaii,poland --variants after,before

Figures go to stdout and, with ``--json PATH``, to a JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xgboost as xgb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ssm_spark.config import load_config  # noqa: E402
from ssm_spark.models.candidates import RAW_FEATURES, feature_matrix  # noqa: E402
from ssm_spark.models.choice import score  # noqa: E402
from ssm_spark.models.folds import clean_matchups  # noqa: E402
from ssm_spark.models.metrics_report import _station_median  # noqa: E402
from ssm_spark.models.runner import train_models  # noqa: E402

DATA = ROOT / "tests" / "data"   # copies of ../shared/data (see each SOURCE.md)
TABLES = {
    "demo": {"configs": [], "path": None},
    "hawaii": {"configs": ["conf/scan_hawaii.yaml"], "path": DATA / "scan_hawaii" / "results.csv"},
    "poland": {"configs": ["conf/poland_fields.yaml"], "path": DATA / "poland_fields" / "input_data.csv"},
}
STATIC = ["clay_pct", "sand_pct", "bulk_density", "elevation_m", "slope_deg"]
VARIANTS = {
    "after": [],
    "before": ["physics.angle_slope=none", "physics.change_detection.enabled=false",
               "physics.bound_to_porosity=false", "train.selection=best",
               "train.candidates=[physics, xgb_raw, xgb_coupled, xgb_residual, global]"],
    "no_angle": ["physics.angle_slope=none"],
    "cell_angle": ["physics.angle_slope=cell"],
    "no_cd": ["physics.change_detection.enabled=false",
              "train.candidates=[physics, xgb_raw, xgb_coupled, xgb_residual, global]"],
    "best_selection": ["train.selection=best"],
    "paired_selection": ["train.selection=paired"],
    "blend_selection": ["train.selection=blend"],
    "no_static": [f"train.exclude_features=[{', '.join(STATIC)}]"],
    "no_static_terrain": ["train.exclude_features=[elevation_m, slope_deg]"],
    "regularised": ["train.xgb.min_child_weight=30", "train.xgb.reg_lambda=10", "train.xgb.colsample_bytree=0.5"],
    # cheaper served trees (issue 15, benchmarks/bench_trees.py): fewer, shallower point trees at the
    # same total step (rounds x learning rate = 15); and also shallower quantile trees. trees_p100d5 is
    # the defaults since 2026-12-02 (= after); trees_p150d6_q40d4 the defaults before
    "trees_p150d5": ["train.xgb.max_depth=5"],
    "trees_p150d5_q40d3": ["train.xgb.max_depth=5", "train.xgb.quantile_max_depth=3"],
    "trees_p100d5": ["train.xgb.n_estimators=100", "train.xgb.max_depth=5", "train.xgb.learning_rate=0.15"],
    "trees_p100d5_q40d3": ["train.xgb.n_estimators=100", "train.xgb.max_depth=5", "train.xgb.learning_rate=0.15",
                           "train.xgb.quantile_max_depth=3"],
    # the defaults before the cheaper trees (150 x depth 6 x 0.1 point, 40 x depth 4 quantile models)
    "trees_p150d6_q40d4": ["train.xgb.n_estimators=150", "train.xgb.max_depth=6", "train.xgb.learning_rate=0.1",
                           "train.xgb.quantile_n_estimators=40", "train.xgb.quantile_max_depth=4"],
}


def plain_xgboost(df: pd.DataFrame, folds: dict, seed: int = 42, nthread: int = 2) -> np.ndarray:
    """Out-of-fold predictions of a plain XGBoost on the raw columns, on the framework's own folds."""
    feats = [f for f in RAW_FEATURES if f in df.columns and df[f].notna().any()]
    fold = df["station_id"].astype(str).map(folds).to_numpy()
    x = feature_matrix(df, feats)
    y = df["ssm"].to_numpy(float)
    pred = np.full(len(df), np.nan)
    params = {"objective": "reg:squarederror", "tree_method": "hist", "max_depth": 6, "eta": 0.1,
              "subsample": 0.8, "colsample_bytree": 0.8, "seed": seed, "nthread": nthread, "verbosity": 0}
    for f in np.unique(fold):
        tr, te = fold != f, fold == f
        b = xgb.train(params, xgb.DMatrix(x[tr], label=y[tr], feature_names=feats), num_boost_round=150)
        pred[te] = b.inplace_predict(x[te])
    return pred


def matchups_for(name: str, cfg, demo_path: Path | None, work: Path) -> pd.DataFrame:
    from ssm_spark.pipeline import table_matchups_run
    from ssm_spark.physics.change_detection import CLIM_COLUMNS, climatology_frame
    from ssm_spark.transforms import cd_kwargs, cd_window

    if name == "demo":
        m = pd.read_parquet(demo_path)
        if cfg.physics.change_detection.enabled and not any(c.startswith("clim_") for c in m.columns):
            # an older matchup table: the station cells' climatology from their own stack dates
            cdc = cfg.physics.change_detection
            m = m.merge(climatology_frame(m, ["station_id"], window=cd_window(cdc), **cd_kwargs(cdc)),
                        on="station_id", how="left")
        if not cfg.physics.change_detection.enabled:
            m = m.drop(columns=[c for c in CLIM_COLUMNS if c in m.columns])
        return m
    out = work / f"{name}_matchups.parquet"
    table_matchups_run(cfg, TABLES[name]["path"], out)
    return pd.read_parquet(out)


def fmt(m: dict) -> str:
    return (f"R {m['R']:6.3f}  ubRMSE {m['ubRMSE']:.4f}  bias {m['bias']:+.4f}  "
            f"med-station R {m.get('R_station_median', float('nan')):6.3f}  n {m['n']}")


def run(name: str, variant: str, args) -> dict:
    cfg = load_config([str(ROOT / "conf/default.yaml"), *[str(ROOT / c) for c in TABLES[name]["configs"]]],
                      VARIANTS[variant] + list(args.set or []))
    m = matchups_for(name, cfg, args.demo, args.work)
    t0 = time.perf_counter()
    res = train_models(m, cfg, nthread=args.nthread)
    secs = time.perf_counter() - t0
    cv = res.cv_metrics
    o = cv["overall"]
    oof = res.oof
    y, st = oof["ssm"].to_numpy(float), oof["station_id"].to_numpy()
    clean, _ = clean_matchups(m)
    clean = clean.set_index("_row").loc[oof["_row"]].reset_index()
    base = plain_xgboost(clean, res.ctx.folds, nthread=args.nthread)
    rows = {"framework": {**o["framework"], "R_station_median": o["framework_station_median"]["R"]}}
    for c, b in o["candidates"].items():
        rows[c] = {**b, "R_station_median": o["candidates_station_median"][c]["R"]}
    rows["plain_xgboost"] = {**score(base, y, st), "R_station_median": _station_median(base, y, st)["R"]}
    sel = {e: (v["selected"] + (f" (w {v['blend_weight']:.1f})" if v.get("blend_weight", 1.0) < 1 else ""))
           for e, v in cv["environments"].items()}
    print(f"\n== {name} / {variant}: {len(oof)} matchups, {len(np.unique(st))} stations, "
          f"{res.ctx.k} folds by {cfg.train.cv_group}, trained in {secs:.0f} s")
    for k, v in rows.items():
        print(f"  {k:17s} {fmt(v)}")
    width = float(np.nanmean(oof["hi"].to_numpy(float) - oof["lo"].to_numpy(float)))
    print(f"  coverage 5-95 %: {o['coverage_p05_p95']:.3f} (raw quantiles {o['coverage_p05_p95_raw']:.3f}), "
          f"mean width {width:.4f}")
    print(f"  selected: {sel}")
    return {"table": name, "variant": variant, "rows": rows, "selected": sel, "seconds": secs,
            "coverage_p05_p95": o["coverage_p05_p95"], "width_p05_p95": width, "n": int(len(oof)),
            "overrides": VARIANTS[variant] + list(args.set or [])}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--demo", type=Path, default=ROOT / "out/demo/matchups.parquet")
    p.add_argument("--tables", default="demo,hawaii,poland")
    p.add_argument("--variants", default="after,before")
    p.add_argument("--set", action="append", help="extra config override for every run")
    p.add_argument("--nthread", type=int, default=2)
    p.add_argument("--work", type=Path, default=ROOT / "out/bench_accuracy")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in args.tables.split(","):
        for variant in args.variants.split(","):
            try:
                results.append(run(name, variant, args))
            except Exception as exc:  # a variant that cannot run on a table says why; the rest go on
                print(f"\n== {name} / {variant}: FAILED: {type(exc).__name__}: {exc}")
                results.append({"table": name, "variant": variant, "error": f"{type(exc).__name__}: {exc}"})
    if args.json:
        args.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
