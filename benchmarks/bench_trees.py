"""Tree count, depth and learning rate against accuracy and prediction cost (what a cell pays).

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_trees.py [--matchups out/demo/matchups.parquet] [--seeds 42,43]
        [--point 150:6:0.1,100:6:0.15] [--quant 40:4,30:4] [--repeats 5] [--json PATH]

On the ``global`` candidate (the model served to every demo environment), trained as ``make demo``
trains it: the demo's matchups without the held-out stations (``demo.holdout_stations``), the folds,
per-fold WCM calibration and features of ``ssm-spark train``
(:func:`ssm_spark.models.training.prepare_training`). Two screens, each setting against the first
row of its screen (the reference), on the same folds:

- **point model** (rounds x depth x learning rate, ``--point``): station-grouped cross-validated R and
  ubRMSE against in situ and against the simulated truth of the station cells (``--sim``), and the
  model fitted on all training rows served on the held-out stations' own matchup rows (never trained
  on), against their in-situ readings;
- **quantile model** (rounds x depth, ``--quant``; the point model at the defaults, the quantile
  learning rate ``learning_rate x n_estimators / rounds`` as in training): the held-out 5-95 %
  coverage raw and after the cross-fitted conformal shift that training applies
  (:func:`ssm_spark.models.choice._served_intervals`), its mean width and interval score
  (width + 2/0.1 x the miss distance; Gneiting and Raftery 2007), and the coverage on the held-out
  stations with the shift measured under CV.

Noise: every CV fit is repeated for each XGBoost seed of ``--seeds`` (row and column subsampling;
the folds stay those of ``train.seed``). ``dR`` / ``dub`` are a setting minus the defaults, paired by
seed, averaged over seeds, with ``+-`` the standard error of the paired per-fold differences
(sd / sqrt(folds x seeds)); ``seed`` is the defaults' own spread between seeds (max - min).

Cost: node visits per cell (trees x depth: the most a cell goes through) and one-thread
``inplace_predict`` throughput on ``--rows`` rows (one demo date), in pixels per CPU-second (the
machine is shared), all models timed in turn within each repeat (alternated, ABAB...), median of
``--repeats``.
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
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

#: point model (rounds, depth, learning rate); the first is the reference the others are paired with (the
#: defaults until 2026-12-02; since then 100 x 5 x 0.15, docs/physics.md section 7)
POINT = [(150, 6, 0.10), (100, 6, 0.15), (75, 6, 0.20), (120, 5, 0.12), (150, 5, 0.10), (100, 5, 0.15),
         (300, 6, 0.05)]
#: quantile model (rounds, depth); the first is the default
QUANT = [(40, 4), (30, 4), (50, 3), (40, 3), (30, 3)]


def _parse(spec: str | None, default: list, types: tuple) -> list:
    if not spec:
        return default
    return [tuple(t(v) for t, v in zip(types, s.split(":"))) for s in spec.split(",")]


def _m(est, obs) -> tuple[float, float]:
    from ssm_spark.validation import metrics

    m = metrics(np.asarray(est, float), np.asarray(obs, float))
    return float(m["R"]), float(m["ubRMSE"])


def _cover(lo, hi, y) -> tuple[float, float]:
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    return float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))), float(np.mean(hi[ok] - lo[ok]))


def _paired(per_fold: list[float]) -> tuple[float, float]:
    a = np.asarray(per_fold, float)
    return float(a.mean()), float(a.std(ddof=1) / np.sqrt(a.size)) if a.size > 1 else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--matchups", type=Path, default=ROOT / "out" / "demo" / "matchups.parquet")
    ap.add_argument("--sim", type=Path, default=ROOT / "out" / "demo" / "sim")
    ap.add_argument("--point", help="rounds:depth:lr,... (default: POINT)")
    ap.add_argument("--quant", help="rounds:depth,... (default: QUANT)")
    ap.add_argument("--seeds", default="42,43,44")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rows", type=int, default=262_144)
    ap.add_argument("--nthread", type=int, default=1,
                    help="threads per fit (1: under load two threads on 2 shared cores were 4x slower)")
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    t_start = time.perf_counter()

    from bench_accuracy import matchups_for

    from ssm_spark.config import load_config
    from ssm_spark.demo import holdout_stations
    from ssm_spark.models import candidates
    from ssm_spark.models.choice import _served_intervals
    from ssm_spark.models.folds import clean_matchups
    from ssm_spark.models.training import prepare_training
    from ssm_spark.sources.simulate import truth_table

    points = _parse(a.point, POINT, (int, int, float))
    quants = _parse(a.quant, QUANT, (int, int))
    seeds = [int(s) for s in a.seeds.split(",")]
    cfg = load_config()
    m = matchups_for("demo", cfg, a.matchups, ROOT / "out" / "bench_accuracy")
    held = set(holdout_stations(m["station_id"].unique(), cfg.demo.holdout_stations))
    ctx, df = prepare_training(m[~m["station_id"].astype(str).isin(held)].reset_index(drop=True), cfg,
                               nthread=a.nthread)
    d = df.sort_values("_row", kind="stable").reset_index(drop=True)
    y = d["ssm"].to_numpy(float)
    fold = d["fold"].to_numpy()
    folds = sorted(np.unique(fold))
    nominal = ctx.cfg.nominal_incidence_deg
    fold_feats = {f: candidates.add_physics(d, ctx.fold_params[f], nominal_incidence_deg=nominal) for f in folds}
    feats_all = candidates.add_physics(d, ctx.wcm_params, nominal_incidence_deg=nominal)
    test, _ = clean_matchups(m[m["station_id"].astype(str).isin(held)].reset_index(drop=True))
    test_feats = candidates.add_physics(test, ctx.wcm_params, nominal_incidence_deg=nominal)
    y_test = test["ssm"].to_numpy(float)
    truth = truth_table(a.sim, cfg.grid.build(), cells=set(zip(d["row"], d["col"]))).rename(columns={"ssm": "truth"})
    key = pd.DataFrame({"row": d["row"].to_numpy(), "col": d["col"].to_numpy(),
                        "date": pd.to_datetime(d["date"]).dt.strftime("%Y-%m-%d")})
    truth["date"] = pd.to_datetime(truth["date"]).dt.strftime("%Y-%m-%d")
    y_truth = key.merge(truth, on=["row", "col", "date"], how="left")["truth"].to_numpy(float)
    big = feats_all.iloc[np.random.default_rng(0).integers(0, len(feats_all), a.rows)].reset_index(drop=True)
    qlo, qhi = ctx.cfg.quantiles
    alpha = qlo + (1 - qhi)
    load0 = os.getloadavg()[0]
    print(f"{len(d)} matchups, {d['station_id'].nunique()} training stations, {len(folds)} folds, "
          f"{test['station_id'].nunique()} held-out stations ({len(test)} rows), truth at "
          f"{np.isfinite(y_truth).sum()} rows; XGBoost seeds {seeds}; load {load0:.1f}")

    def cfg_for(upd: dict, seed: int):
        return ctx.cfg.model_copy(update={"xgb": ctx.cfg.xgb.model_copy(update=upd), "seed": seed})

    # ---- point screen
    point_rows, timed = [], []
    for rounds, depth, lr in points:
        upd = {"n_estimators": rounds, "max_depth": depth, "learning_rate": lr}
        per_seed = []
        for seed in seeds:
            t = cfg_for(upd, seed)
            pred = np.full(len(d), np.nan)
            for f in folds:
                tr = fold != f
                mdl = candidates.fit_candidate("global", fold_feats[f].loc[tr], ctx.features["global"], t,
                                               nthread=a.nthread)
                pred[~tr] = candidates.predict_candidate(mdl, fold_feats[f].loc[~tr])
            per_seed.append(pred)
        full = candidates.fit_candidate("global", feats_all, ctx.features["global"], cfg_for(upd, seeds[0]),
                                        nthread=a.nthread)
        r = {"rounds": rounds, "depth": depth, "lr": lr, "node_visits": rounds * depth, "preds": per_seed,
             "R": float(np.mean([_m(p, y)[0] for p in per_seed])),
             "ubRMSE": float(np.mean([_m(p, y)[1] for p in per_seed])),
             "R_truth": float(np.mean([_m(p, y_truth)[0] for p in per_seed])),
             "ubRMSE_truth": float(np.mean([_m(p, y_truth)[1] for p in per_seed])),
             "seed_spread_R": float(np.ptp([_m(p, y)[0] for p in per_seed])),
             "seed_spread_ubRMSE": float(np.ptp([_m(p, y)[1] for p in per_seed]))}
        r["held_R"], r["held_ubRMSE"] = _m(candidates.predict_candidate(full, test_feats), y_test)
        point_rows.append(r)
        timed.append(("point", r, full))
        print(f"  point {rounds}x{depth}x{lr:g} done ({time.perf_counter() - t_start:.0f} s)", flush=True)
    base = point_rows[0]
    for r in point_rows:
        dr = [_m(p[fold == f], y[fold == f])[0] - _m(b[fold == f], y[fold == f])[0]
              for p, b in zip(r["preds"], base["preds"]) for f in folds]
        du = [_m(p[fold == f], y[fold == f])[1] - _m(b[fold == f], y[fold == f])[1]
              for p, b in zip(r["preds"], base["preds"]) for f in folds]
        (r["dR"], r["dR_se"]), (r["dub"], r["dub_se"]) = _paired(dr), _paired(du)
        r["dR"], r["dub"] = r["R"] - base["R"], r["ubRMSE"] - base["ubRMSE"]  # pooled, not per-fold means

    # ---- quantile screen (point model at the defaults: its learning rate x rounds fixes the quantile step)
    quant_rows = []
    for rounds, depth in quants:
        upd = {"quantile_n_estimators": rounds, "quantile_max_depth": depth}
        per_seed = []
        for seed in seeds:
            t = cfg_for(upd, seed)
            lo, hi = np.full(len(d), np.nan), np.full(len(d), np.nan)
            for f in folds:
                tr = fold != f
                mdl = candidates.fit_quantiles("global", fold_feats[f].loc[tr], ctx.quantile_features["global"], t,
                                               nthread=a.nthread)
                lo[~tr], hi[~tr] = candidates.predict_quantiles(mdl, fold_feats[f].loc[~tr])
            slo, shi, shift = _served_intervals(d, lo, hi, y, t)
            ok = np.isfinite(slo) & np.isfinite(shi)
            wis = float(np.mean((shi[ok] - slo[ok]) + 2 / alpha * (np.maximum(slo[ok] - y[ok], 0)
                                                                   + np.maximum(y[ok] - shi[ok], 0))))
            per_seed.append({"raw": _cover(lo, hi, y)[0], "conf": _cover(slo, shi, y)[0],
                             "width": _cover(slo, shi, y)[1], "wis": wis, "shift": shift})
        t0 = cfg_for(upd, seeds[0])
        full = candidates.fit_quantiles("global", feats_all, ctx.quantile_features["global"], t0, nthread=a.nthread)
        hlo, hhi = candidates.predict_quantiles(full, test_feats)
        s_lo, s_hi = per_seed[0]["shift"]
        hc, hw = _cover(hlo - s_lo, hhi + s_hi, y_test)
        r = {"rounds": rounds, "depth": depth, "trees": 2 * rounds, "node_visits": 2 * rounds * depth,
             **{k: float(np.mean([s[k] for s in per_seed])) for k in ("raw", "conf", "width", "wis")},
             "width_seeds": [s["width"] for s in per_seed], "conf_seeds": [s["conf"] for s in per_seed],
             "held_cover": hc, "held_width": hw}
        quant_rows.append(r)
        timed.append(("quant", r, full))
        print(f"  quantiles {rounds}x{depth} done ({time.perf_counter() - t_start:.0f} s)", flush=True)

    # ---- prediction cost: every model in turn within each repeat, one thread, CPU seconds
    mats = []
    for kind, r, mdl in timed:
        mdl.booster.set_param({"nthread": 1})
        mats.append((r, mdl, candidates.feature_matrix(big, mdl.features)))
    rates: dict[int, list[float]] = {i: [] for i in range(len(mats))}
    for rep in range(a.repeats):
        order = range(len(mats)) if rep % 2 == 0 else reversed(range(len(mats)))
        for i in order:
            _, mdl, x = mats[i]
            c0 = time.process_time()
            mdl.booster.inplace_predict(x)
            rates[i].append(a.rows / (time.process_time() - c0))
    for i, (r, _, _) in enumerate(mats):
        r["px_per_cpu_s"] = statistics.median(rates[i])
    load1 = os.getloadavg()[0]

    print(f"\npoint model (global), CV over {len(folds)} folds x {len(seeds)} seeds; load {load0:.1f} -> {load1:.1f}")
    print(f"{'setting':>12} | {'R':>6} {'ubRMSE':>7} | {'dR':>7} {'+-':>6} {'dub':>8} {'+-':>7} | "
          f"{'R truth':>7} {'ub tr':>6} | {'held R':>6} {'ub':>6} | {'visits':>6} {'px/CPU-s':>10}")
    for r in point_rows:
        print(f"{r['rounds']:>5}x{r['depth']}x{r['lr']:<4g} | {r['R']:>6.4f} {r['ubRMSE']:>7.5f} | "
              f"{r['dR']:>+7.4f} {r['dR_se']:>6.4f} {r['dub']:>+8.5f} {r['dub_se']:>7.5f} | "
              f"{r['R_truth']:>7.4f} {r['ubRMSE_truth']:>6.4f} | {r['held_R']:>6.4f} {r['held_ubRMSE']:>6.4f} | "
              f"{r['node_visits']:>6} {r['px_per_cpu_s']:>10,.0f}")
    print(f"  the defaults' seed spread: R {base['seed_spread_R']:.4f}, ubRMSE {base['seed_spread_ubRMSE']:.5f}")
    print(f"\nquantile model (global, 5-95 %), CV over {len(folds)} folds x {len(seeds)} seeds")
    print(f"{'setting':>8} | {'raw':>6} {'conf':>6} {'width':>6} {'wis':>6} | {'held cov':>8} {'width':>6} | "
          f"{'trees':>5} {'visits':>6} {'px/CPU-s':>10}")
    for r in quant_rows:
        print(f"{r['rounds']:>5}x{r['depth']} | {r['raw']:>6.3f} {r['conf']:>6.3f} {r['width']:>6.4f} "
              f"{r['wis']:>6.4f} | {r['held_cover']:>8.3f} {r['held_width']:>6.4f} | {r['trees']:>5} "
              f"{r['node_visits']:>6} {r['px_per_cpu_s']:>10,.0f}")
    qb = quant_rows[0]
    print(f"  the defaults' seed spread: width {np.ptp(qb['width_seeds']):.4f}, coverage {np.ptp(qb['conf_seeds']):.3f}")
    print(f"\n{time.perf_counter() - t_start:.0f} s in all")
    if a.json:
        for r in point_rows:
            r.pop("preds")
        a.json.write_text(json.dumps({"point": point_rows, "quantiles": quant_rows, "seeds": seeds,
                                      "load": [load0, load1], "seconds": time.perf_counter() - t_start},
                                     indent=1, default=float))


if __name__ == "__main__":
    main()
