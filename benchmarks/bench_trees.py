"""Tree count and depth against accuracy and prediction speed (what the product pays per pixel).

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_trees.py [--matchups out/demo/matchups.parquet] [--repeats 3]

For each XGBoost setting (rounds x depth x learning rate) of the ``global`` candidate (the model
served to most environments of the demo) this prints:

- the station-grouped cross-validated R and ubRMSE of the point model (the folds, the per-fold WCM
  calibration and the features of ``ssm-spark train``: :func:`ssm_spark.models.selection.prepare_training`);
- the held-out 5-95 % coverage and mean width of the raw multi-quantile model (before the conformal
  shift that training adds);
- prediction throughput on one thread (point + quantile model, ``inplace_predict`` as in
  :meth:`Registry.predict`), median of ``--repeats`` over 262,144 rows (one demo date), the
  product's per-pixel model cost.

The quantile model has its own rounds (``train.xgb.quantile_n_estimators``, at a learning rate
scaled to the same total step); the ``q_rounds`` column shows them.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]

#: (point rounds, depth, learning rate, quantile rounds or None = same as point)
SETTINGS = [
    (300, 6, 0.05, None),  # the defaults before 2026-11-24
    (300, 6, 0.05, 100),
    (150, 6, 0.10, None),
    (150, 6, 0.10, 75),  # the defaults from 2026-11-24 (since issue 15 the quantile models are
                         # 40 rounds x depth 4: benchmarks/bench_quantiles.py; here at the point depth)
    (100, 6, 0.15, 50),
    (200, 4, 0.10, 100),
    (100, 8, 0.10, 50),
    (600, 6, 0.025, None),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matchups", default=str(ROOT / "out" / "demo" / "matchups.parquet"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--rows", type=int, default=262_144)
    a = ap.parse_args()

    from ssm_spark.config import load_config
    from ssm_spark.models import candidates
    from ssm_spark.models import selection as S

    cfg = load_config()
    table = pd.read_parquet(a.matchups)
    ctx, df = S.prepare_training(table, cfg, nthread=2)
    y = df["ssm"].to_numpy(float)
    st = df["station_id"].to_numpy()
    feats_all = candidates.add_physics(df, ctx.wcm_params, nominal_incidence_deg=ctx.cfg.nominal_incidence_deg)
    rng = np.random.default_rng(0)
    big = feats_all.iloc[rng.integers(0, len(feats_all), a.rows)].reset_index(drop=True)
    print(f"{len(df)} matchups, {df['station_id'].nunique()} stations, {ctx.k} folds; prediction on {a.rows} rows, "
          f"1 thread, median of {a.repeats}")
    print(f"{'rounds':>6} {'depth':>5} {'lr':>6} {'q_rounds':>8} | {'R':>6} {'ubRMSE':>7} | {'cover':>6} {'width':>6} | "
          f"{'px/s':>9} {'trees/px':>8}")
    for rounds, depth, lr, q_rounds in SETTINGS:
        xgb = ctx.cfg.xgb.model_copy(update={"n_estimators": rounds, "max_depth": depth, "learning_rate": lr,
                                             "quantile_n_estimators": q_rounds or rounds,
                                             "quantile_max_depth": depth})
        t_cfg = q_cfg = ctx.cfg.model_copy(update={"xgb": xgb})
        c = S.TrainingContext(**{**ctx.__dict__, "cfg": t_cfg})
        pred = S._cv_point(df, c, ["global"], [])["global"]
        m = S.score(pred, y, st)
        cq = S.TrainingContext(**{**ctx.__dict__, "cfg": q_cfg})
        lo, hi = S._cv_quantiles(df, cq, "global")
        ok = np.isfinite(lo) & np.isfinite(hi)
        cover = float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok])))
        width = float(np.mean(hi[ok] - lo[ok]))
        point = candidates.fit_candidate("global", feats_all, ctx.features["global"], t_cfg, nthread=2)
        quant = candidates.fit_quantiles("global", feats_all, ctx.quantile_features["global"], q_cfg, nthread=2)
        for mdl in (point, quant):
            mdl.booster.set_param({"nthread": 1})
        rates = []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            candidates.predict_candidate(point, big)
            candidates.predict_quantiles(quant, big)
            rates.append(a.rows / (time.perf_counter() - t0))
        trees = rounds + 2 * (q_rounds or rounds)
        print(f"{rounds:>6} {depth:>5} {lr:>6.3f} {q_rounds or rounds:>8} | {m['R']:>6.3f} {m['ubRMSE']:>7.4f} | "
              f"{cover:>6.3f} {width:>6.3f} | {statistics.median(rates):>9,.0f} {trees:>8}", flush=True)


if __name__ == "__main__":
    main()
