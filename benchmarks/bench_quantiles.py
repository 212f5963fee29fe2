"""The 5-95 % quantile model's size against its held-out coverage, width and prediction cost.

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_quantiles.py [--matchups out/demo/matchups.parquet] [--repeats 3]

A screen of the quantile model alone, on the ``global`` candidate (the model every demo environment
is served by, alone or in its blend), with the folds, per-fold WCM calibration and features of
``ssm-spark train`` (:func:`ssm_spark.models.training.prepare_training`; demo held-out stations left
out as in ``make demo``). For each setting (rounds x depth x tree layout) it prints:

- ``raw``: held-out coverage of the raw XGBoost quantiles (station-grouped CV);
- ``conf``: held-out coverage after the cross-fitted split-conformal shift that training applies
  (:func:`ssm_spark.models.choice._served_intervals`: fold k shifted by the other folds' scores), the
  figure the goal 0.88-0.92 is about; ``width``: its mean width (m3/m3); ``wis``: the interval score
  (width + 2/0.1 x the miss distance, lower is better; Gneiting and Raftery 2007);
- ``trees``: trees per cell, and ``px/CPU-s``: one-thread ``inplace_predict`` of the quantile model
  alone on 262,144 rows (one demo date), median of ``--repeats``, in CPU seconds.

The full effect on a trained registry (point models, selection, conformal shift per unit, the
served path) is ``benchmarks/bench_serving.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: (rounds, depth, multi_strategy)
SETTINGS = [
    (75, 6, "one_output_per_tree"),   # the defaults before issue 15
    (75, 6, "multi_output_tree"),
    (50, 6, "one_output_per_tree"),
    (30, 6, "one_output_per_tree"),
    (50, 4, "one_output_per_tree"),
    (30, 4, "one_output_per_tree"),
    (20, 4, "one_output_per_tree"),
    (30, 4, "multi_output_tree"),
    (30, 3, "one_output_per_tree"),
    (15, 4, "one_output_per_tree"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matchups", type=Path, default=ROOT / "out" / "demo" / "matchups.parquet")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=262_144)
    ap.add_argument("--nthread", type=int, default=2)
    ap.add_argument("--settings", help="rounds:depth:strategy,... (default: SETTINGS)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from bench_accuracy import matchups_for

    from ssm_spark.config import load_config
    from ssm_spark.demo import holdout_stations
    from ssm_spark.models import candidates
    from ssm_spark.models.choice import _served_intervals
    from ssm_spark.models.training import TrainingContext, _cv_quantiles, prepare_training

    cfg = load_config()
    m = matchups_for("demo", cfg, a.matchups, ROOT / "out" / "bench_accuracy")
    held = set(holdout_stations(m["station_id"].unique(), cfg.demo.holdout_stations))
    m = m[~m["station_id"].astype(str).isin(held)].reset_index(drop=True)
    ctx, df = prepare_training(m, cfg, nthread=a.nthread)
    d = df.sort_values("_row", kind="stable").reset_index(drop=True)
    y = d["ssm"].to_numpy(float)
    feats_all = candidates.add_physics(d, ctx.wcm_params, nominal_incidence_deg=ctx.cfg.nominal_incidence_deg)
    big = feats_all.iloc[np.random.default_rng(0).integers(0, len(feats_all), a.rows)].reset_index(drop=True)
    qlo, qhi = ctx.cfg.quantiles
    settings = SETTINGS if not a.settings else [
        (int(r), int(dd), s) for r, dd, s in (x.split(":") for x in a.settings.split(","))]
    load = os.getloadavg()
    print(f"{len(d)} matchups, {d['station_id'].nunique()} stations, {ctx.k} folds; global quantile model; "
          f"load {load[0]:.1f}")
    print(f"{'rounds':>6} {'depth':>5} {'layout':>20} | {'raw':>6} {'conf':>6} {'width':>6} {'wis':>6} | "
          f"{'trees':>5} {'px/CPU-s':>10}")
    out = []
    for rounds, depth, strategy in settings:
        xgb_cfg = ctx.cfg.xgb.model_copy(update={"quantile_n_estimators": rounds, "quantile_max_depth": depth,
                                                 "quantile_multi_strategy": strategy})
        t_cfg = ctx.cfg.model_copy(update={"xgb": xgb_cfg})
        c = TrainingContext(**{**ctx.__dict__, "cfg": t_cfg})
        lo_raw, hi_raw = _cv_quantiles(d, c, "global")
        ok = np.isfinite(lo_raw) & np.isfinite(hi_raw)
        raw = float(np.mean((y[ok] >= lo_raw[ok]) & (y[ok] <= hi_raw[ok])))
        lo, hi, _ = _served_intervals(d, lo_raw, hi_raw, y, t_cfg)
        ok = np.isfinite(lo) & np.isfinite(hi)
        conf = float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok])))
        width = float(np.mean(hi[ok] - lo[ok]))
        alpha = qlo + (1 - qhi)
        wis = float(np.mean((hi[ok] - lo[ok]) + 2 / alpha * (np.maximum(lo[ok] - y[ok], 0) + np.maximum(y[ok] - hi[ok], 0))))
        quant = candidates.fit_quantiles("global", feats_all, ctx.quantile_features["global"], t_cfg, nthread=a.nthread)
        quant.booster.set_param({"nthread": 1})
        model = json.loads(bytes(quant.booster.save_raw("json")))
        trees = int(model["learner"]["gradient_booster"]["model"]["gbtree_model_param"]["num_trees"])
        x = candidates.feature_matrix(big, quant.features)
        rates = []
        for _ in range(a.repeats):
            c0 = time.process_time()
            quant.booster.inplace_predict(x)
            rates.append(a.rows / (time.process_time() - c0))
        r = {"rounds": rounds, "depth": depth, "layout": strategy, "raw": raw, "conformal": conf, "width": width,
             "wis": wis, "trees": trees, "px_per_cpu_s": statistics.median(rates), "load": os.getloadavg()[0]}
        out.append(r)
        print(f"{rounds:>6} {depth:>5} {strategy:>20} | {raw:>6.3f} {conf:>6.3f} {width:>6.3f} {wis:>6.3f} | "
              f"{trees:>5} {r['px_per_cpu_s']:>10,.0f}", flush=True)
    if a.json:
        a.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
