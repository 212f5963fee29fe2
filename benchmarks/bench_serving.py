"""The served models' cost per cell against their accuracy: one training per variant, same folds.

Run by hand (not a test)::

    .venv/bin/python benchmarks/bench_serving.py [--variants before,after] [--dates 2] [--repeats 3]

For each variant (config overrides of ``train.*``, :data:`VARIANTS`) this trains on the demo's
matchups without the held-out stations (``demo.holdout_stations``: the ``make demo`` registry's
stations), in this process (``models.runner.train_models``, the same code as ``ssm-spark train``),
saves the registry under ``--work/<variant>/models`` and prints:

- science: the cross-validated ``framework`` R / ubRMSE (station-grouped, cross-fitted selection)
  and the held-out coverage of the served 5-95 % band after the conformal shift (``cv_metrics``,
  overall); the out-of-fold estimates against the simulated truth of the station cells; the
  registry served on the **held-out stations' own matchup rows** (never trained on) against their
  in-situ readings and against the truth, and the coverage of the served band there;
- cost: boosters and trees evaluated per cell on the served path (``Registry.predict`` as
  ``product.tiles.predict_rows`` calls it), and the speed of ``benchmarks/bench_produce.py``'s
  per-tile loop (``ref``: read, physics, predict, Parquet) and of bare ``inplace_predict`` of the
  same calls (``limit``), each in its own process, in pixels per CPU-second (medians of
  ``--repeats``; CPU seconds, not wall time, because the machine is shared).

The load average is printed before and after; accuracy does not depend on it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

#: variant -> config overrides (on top of conf/default.yaml)
VARIANTS: dict[str, list[str]] = {
    # the defaults before issue 15's model levers: 75 rounds x depth 6 quantile models, the pooled mix
    # untested, a conformal shift per unit
    "before": ["train.xgb.quantile_n_estimators=75", "train.xgb.quantile_max_depth=6",
               "train.xgb.quantile_multi_strategy=one_output_per_tree", "train.shrink_z=null",
               "train.conformal_scope=unit"],
    # one lever at a time
    "q40d4": ["train.shrink_z=null", "train.conformal_scope=unit"],     # smaller quantile models only
    "q30d4": ["train.xgb.quantile_n_estimators=30", "train.shrink_z=null", "train.conformal_scope=unit"],
    "q75_vector": ["train.xgb.quantile_n_estimators=75", "train.xgb.quantile_max_depth=6",
                   "train.xgb.quantile_multi_strategy=multi_output_tree", "train.shrink_z=null",
                   "train.conformal_scope=unit"],
    "after_unit": ["train.conformal_scope=unit"],   # smaller quantile models + the mix tested
    "after": [],   # the defaults: + one pooled conformal shift
}


def _load(cfg_overrides: list[str]):
    from ssm_spark.config import load_config

    return load_config([str(ROOT / "conf/default.yaml")], cfg_overrides)


def _matchups(cfg, path: Path, work: Path) -> pd.DataFrame:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_accuracy import matchups_for

    return matchups_for("demo", cfg, path, work)


def _truth(sim: Path, grid, cells: pd.DataFrame) -> pd.DataFrame:
    from ssm_spark.sources.simulate import truth_table

    t = truth_table(sim, grid, cells=set(zip(cells["row"], cells["col"])))
    return t.rename(columns={"ssm": "truth"})


def _m(est, obs) -> dict:
    from ssm_spark.validation import metrics

    m = metrics(np.asarray(est, float), np.asarray(obs, float))
    return {"R": round(float(m["R"]), 4), "ubRMSE": round(float(m["ubRMSE"]), 4), "n": int(m["n"])}


def _cover(lo, hi, y) -> float:
    lo, hi, y = (np.asarray(a, float) for a in (lo, hi, y))
    ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(y)
    return round(float(np.mean((y[ok] >= lo[ok]) & (y[ok] <= hi[ok]))), 4) if ok.any() else float("nan")


def science(name: str, a) -> dict:
    from ssm_spark.demo import holdout_stations
    from ssm_spark.models.registry import load_registry, save_registry
    from ssm_spark.models.runner import train_models

    cfg = _load(VARIANTS[name] + list(a.set or []))
    m = _matchups(cfg, a.matchups, a.work)
    held = set(holdout_stations(m["station_id"].unique(), cfg.demo.holdout_stations))
    train = m[~m["station_id"].astype(str).isin(held)].reset_index(drop=True)
    test = m[m["station_id"].astype(str).isin(held)].reset_index(drop=True)
    t0 = time.perf_counter()
    res = train_models(train, cfg, nthread=a.nthread)
    secs = time.perf_counter() - t0
    reg_dir = a.work / name / "models"
    save_registry(reg_dir, res, cfg)
    o = res.cv_metrics["overall"]
    out = {"variant": name, "overrides": VARIANTS[name], "train_seconds": round(secs, 1),
           "cv_framework": {k: o["framework"][k] for k in ("R", "ubRMSE", "n")},
           "cv_global": {k: o["candidates"]["global"][k] for k in ("R", "ubRMSE")},
           "cv_coverage": round(o["coverage_p05_p95"], 4), "cv_coverage_raw": round(o["coverage_p05_p95_raw"], 4),
           "shrinkage_weight": o.get("shrinkage_weight"), "registry": str(reg_dir)}
    grid = cfg.grid.build()
    key = m[["station_id", "date", "row", "col"]].assign(station_id=lambda d: d["station_id"].astype(str),
                                                          date=lambda d: pd.to_datetime(d["date"]).dt.strftime("%Y-%m-%d"))
    oof = res.oof.assign(station_id=res.oof["station_id"].astype(str),
                         date=pd.to_datetime(res.oof["date"]).dt.strftime("%Y-%m-%d"))
    oof = oof.drop(columns=[c for c in ("row", "col") if c in oof.columns]).merge(key, on=["station_id", "date"])
    cells = m[["row", "col"]].drop_duplicates()
    truth = _truth(a.sim, grid, cells)
    truth = truth.assign(date=pd.to_datetime(truth["date"]).dt.strftime("%Y-%m-%d"))
    ot = oof.merge(truth, on=["row", "col", "date"])
    out["cv_framework_vs_truth"] = _m(ot["framework"], ot["truth"])
    reg = load_registry(reg_dir, nthread=1)
    pred = reg.predict(test)
    ht = test.assign(date=pd.to_datetime(test["date"]).dt.strftime("%Y-%m-%d"),
                     est=pred["ssm"].to_numpy(), lo=pred["ssm_p05"].to_numpy(), hi=pred["ssm_p95"].to_numpy())
    out["held_out_vs_insitu"] = _m(ht["est"], ht["ssm"])
    out["held_out_coverage"] = _cover(ht["lo"], ht["hi"], ht["ssm"])
    htt = ht.merge(truth, on=["row", "col", "date"])
    out["held_out_vs_truth"] = _m(htt["est"], htt["truth"])
    out["held_out_stations"] = int(test["station_id"].nunique())
    out["serving"] = {u: (e["candidate"] + (f"+global (own w {e['blend']['weight']:.1f})" if e.get("blend") else ""))
                      for u, e in reg.serving.items()}
    return out


def speed(reg_dir: str, a) -> dict:
    """Bare evaluation and the per-tile loop of ``bench_produce.py`` on this registry: its served children
    (set up once), the repeats alternated between the two."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import bench_produce as bp

    ns = argparse.Namespace(models=str(reg_dir), stacks=str(a.stacks), dates=a.dates, repeats=a.repeats, clim_dir="",
                            clim="", set=[])
    kids = {}
    try:
        kids = {mode: bp.Served(ns, "--mode", mode) for mode in ("limit", "ref")}
        for r in range(a.repeats):
            for mode in (("limit", "ref") if r % 2 == 0 else ("ref", "limit")):
                kids[mode].run()
    finally:
        for k in kids.values():
            k.close()
    res = {}
    for mode, k in kids.items():
        res[mode] = {"px_per_cpu_s": round(statistics.median(k.rates("cpu_rate"))),
                     "runs_px_per_cpu_s": [round(x) for x in k.rates("cpu_rate")],
                     "px_per_s": round(statistics.median(k.rates()))}
        if mode == "limit":
            res["per_cell"] = {k2: k.info[k2] for k2 in ("calls", "rows_predicted", "pixels", "boosters_per_cell",
                                                         "trees_per_cell", "tree_outputs_per_cell") if k2 in k.info}
    res["loop_over_bare_cpu"] = round(res["limit"]["px_per_cpu_s"] / res["ref"]["px_per_cpu_s"], 2)
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--variants", default="before,after")
    p.add_argument("--matchups", type=Path, default=ROOT / "out/demo/matchups.parquet")
    p.add_argument("--sim", type=Path, default=ROOT / "out/demo/sim")
    p.add_argument("--stacks", type=Path, default=ROOT / "out/demo/sim/stacks")
    p.add_argument("--work", type=Path, default=ROOT / "out/bench_serving")
    p.add_argument("--dates", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--nthread", type=int, default=2)
    p.add_argument("--set", action="append", help="extra config override for every variant")
    p.add_argument("--no-speed", action="store_true", help="science only")
    p.add_argument("--speed-only", action="store_true", help="speed of the registries already in --work")
    p.add_argument("--json", type=Path)
    a = p.parse_args(argv)
    import logging

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    a.work.mkdir(parents=True, exist_ok=True)
    results = []
    for name in a.variants.split(","):
        l0 = os.getloadavg()[0]
        if a.speed_only:
            r = json.loads((a.work / name / "science.json").read_text())
        else:
            r = science(name, a)
            (a.work / name / "science.json").write_text(json.dumps(r, indent=1, default=float))
        if not a.no_speed:
            r["speed"] = speed(r["registry"], a)
        r["load"] = [round(l0, 1), round(os.getloadavg()[0], 1)]
        results.append(r)
        print(json.dumps(r, default=float), flush=True)
    print(f"\n{'variant':<12} {'CV R':>6} {'ubRMSE':>7} {'cover':>6} | {'truth R':>7} {'ubRMSE':>7} | "
          f"{'held R':>6} {'ubRMSE':>7} {'cover':>6} {'h-truth R':>9} | {'trees/cell':>10} {'bare px/CPU-s':>13} "
          f"{'loop px/CPU-s':>13} load")
    for r in results:
        s = r.get("speed", {})
        pc = s.get("per_cell", {})
        print(f"{r['variant']:<12} {r['cv_framework']['R']:>6.4f} {r['cv_framework']['ubRMSE']:>7.4f} "
              f"{r['cv_coverage']:>6.3f} | {r['cv_framework_vs_truth']['R']:>7.4f} "
              f"{r['cv_framework_vs_truth']['ubRMSE']:>7.4f} | {r['held_out_vs_insitu']['R']:>6.4f} "
              f"{r['held_out_vs_insitu']['ubRMSE']:>7.4f} {r['held_out_coverage']:>6.3f} "
              f"{r['held_out_vs_truth']['R']:>9.4f} | {pc.get('trees_per_cell', float('nan')):>10.1f} "
              f"{s.get('limit', {}).get('px_per_cpu_s', 0):>13,} {s.get('ref', {}).get('px_per_cpu_s', 0):>13,} "
              f"{r['load']}")
    if a.json:
        a.json.write_text(json.dumps(results, indent=1, default=float))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
