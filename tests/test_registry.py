"""The model registry: save/load round trip (in a fresh process, bit for bit), refusals, layout."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import ssm_spark
from ssm_spark.config import PhysicsConfig, TrainConfig, XGBConfig, load_config
from ssm_spark.errors import ModelRegistryError
from ssm_spark.models import registry, selection
from ssm_spark.models.candidates import add_physics
from ssm_spark.physics import calibrate as cal
from ssm_spark.physics import wcm

ROOT = Path(__file__).resolve().parents[1]
TRUTH = {"vv": (0.12, 0.45, -14.0, 24.0), "vh": (0.03, 0.30, -24.0, 20.0)}


def make_env(env: str, n_stations: int, n_dates: int, kind: str, seed: int) -> pd.DataFrame:
    """Synthetic matchups: 'wcm' backscatter follows a known WCM (the physics candidate wins there),
    'precip' soil moisture follows precipitation and clay with backscatter as noise."""
    rng = np.random.default_rng(seed)
    n = n_stations * n_dates
    clay = np.repeat(rng.uniform(5, 40, n_stations), n_dates)
    ndvi, theta, precip = rng.uniform(0.05, 0.5, n), rng.uniform(30, 46, n), rng.gamma(0.8, 10.0, n)
    if kind == "wcm":
        mv = rng.uniform(0.05, 0.45, n)
        vv, vh = (wcm.forward(C + D * mv, ndvi, theta, A, B) + rng.normal(0, 0.1, n) for A, B, C, D in TRUTH.values())
    else:
        mv = 0.06 + 0.25 * (1 - np.exp(-precip / 15.0)) + 0.003 * clay + rng.normal(0, 0.01, n)
        vv = rng.normal(-11, 2, n)
        vh = vv - 8 + rng.normal(0, 1, n)
    return pd.DataFrame({
        "station_id": np.repeat([f"{env}.S{i:03d}" for i in range(n_stations)], n_dates), "network": "SYN",
        "date": np.tile(pd.date_range("2024-04-01", periods=n_dates, freq="6D").date, n_stations),
        "vv_db": vv, "vh_db": vh, "incidence_deg": theta, "ndvi": ndvi, "lst_k": rng.uniform(280, 305, n),
        "precip_mm": precip, "clay_pct": clay, "sand_pct": 40.0, "bulk_density": 1.35,
        "elevation_m": np.repeat(rng.uniform(0, 800, n_stations), n_dates), "slope_deg": 1.0, "qc": 0,
        "ssm": mv, "env": env,
    })


@pytest.fixture(scope="module")
def trained():
    df = pd.concat([
        make_env("cropland_C", 8, 12, "precip", 1),
        make_env("bare_B", 8, 12, "wcm", 2),
        make_env("cropland_D", 3, 12, "precip", 3),  # falls back to the cropland group
        make_env("forest_C", 3, 12, "precip", 4),    # falls back to global
    ], ignore_index=True)
    cfg = load_config(paths=[], overrides=[])
    # plain best-candidate selection and no angle normalisation: bare_B's synthetic soil term has no
    # angle dependence (the WCM holds exactly), so physics must win there and be served alone
    cfg.train = TrainConfig(k_folds=4, seed=3, min_stations=6, min_samples=60, selection="best",
                            xgb=XGBConfig(n_estimators=12, max_depth=3, learning_rate=0.3, nthread=1))
    cfg.physics = PhysicsConfig(angle_slope="none")
    res = selection.train_models(df, cfg)
    return df, cfg, res


@pytest.fixture(scope="module")
def saved(trained, tmp_path_factory):
    df, cfg, res = trained
    path = tmp_path_factory.mktemp("registry") / "models"
    manifest = registry.save_registry(path, res, cfg)
    return path, manifest


def queries(df: pd.DataFrame) -> pd.DataFrame:
    """Training rows plus rows of unseen environments, no environment, and a frozen (masked) row."""
    q = df.drop(columns=["ssm"]).copy()
    extra = q.iloc[:4].copy()
    extra["env"] = ["cropland_A", None, "mars_Z", "bare_B"]
    extra["qc"] = [0, 0, 0, 64]
    return pd.concat([q, extra], ignore_index=True)


# ------------------------------------------------------------------------------------- round trip


def test_round_trip_in_a_fresh_process_is_bit_for_bit(trained, saved, tmp_path):
    df, _, res = trained
    path, manifest = saved
    q = queries(df)
    q.to_parquet(tmp_path / "q.parquet")
    here = registry.load_registry(path).predict(q)
    code = (
        "import sys, pandas as pd\n"
        "from ssm_spark.models.registry import load_registry\n"
        "q = pd.read_parquet(sys.argv[2])\n"
        "load_registry(sys.argv[1]).predict(q).to_parquet(sys.argv[3])\n"
    )
    subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "q.parquet"), str(tmp_path / "p.parquet")],
                   cwd=ROOT, check=True, timeout=120)
    there = pd.read_parquet(tmp_path / "p.parquet")
    pd.testing.assert_frame_equal(here, there, check_exact=True)
    # the in-memory registry of the training result and the Spark path (bytes) agree bit for bit too
    man, files = registry.build_manifest(res, trained[1])
    pd.testing.assert_frame_equal(registry.Registry(man, files).predict(q), here, check_exact=True)
    reg = registry.load_registry(path)
    again = registry.Registry.from_bytes(reg.manifest, reg.model_bytes(), nthread=2)
    pd.testing.assert_frame_equal(again.predict(q), here, check_exact=True)
    assert list(here.columns) == ["ssm", "ssm_p05", "ssm_p95", "env", "model_id"]
    assert here.index.equals(q.index)


def test_a_blended_unit_mixes_its_model_with_the_global_one(trained, saved):
    df, _, _ = trained
    path, manifest = saved
    reg = registry.load_registry(path)
    q = queries(df).iloc[:-4]
    q = q[q["env"] == "cropland_C"]
    own = reg.predict(q)
    m2 = json.loads(json.dumps(manifest))
    m2["serving"]["cropland_C"]["blend"] = {"weight": 0.3, "with": "global"}
    m2["serving"]["cropland_C"]["interval_shift"] = [0.0, 0.0]
    m3 = json.loads(json.dumps(manifest))
    m3["serving"]["cropland_C"] = dict(m3["serving"]["global"])   # the global model on the same rows
    glob = registry.Registry(m3, reg.model_bytes()).predict(q)
    mixed = registry.Registry(m2, reg.model_bytes()).predict(q)
    np.testing.assert_allclose(mixed["ssm"], 0.3 * own["ssm"] + 0.7 * glob["ssm"], atol=1e-9)
    assert mixed["model_id"].str.endswith("+global@0.7").all()


def test_predict_routes_every_environment(trained, saved):
    df, _, res = trained
    path, manifest = saved
    reg = registry.load_registry(path)
    out = reg.predict(queries(df))
    mid = manifest["manifest_id"]
    unit = out["model_id"].str.split("/").str[1]
    env = queries(df)["env"]
    assert (unit[env == "cropland_C"] == "cropland_C").all()
    assert (unit[env == "cropland_D"] == "cropland").all()           # group level
    assert (unit[env == "forest_C"] == "global").all()               # global level
    assert unit.iloc[-4:].tolist()[:3] == ["cropland", "global", "global"]  # unseen group env, none, unseen
    assert out["model_id"].str.startswith(mid + "/").all()
    # the masked (frozen) row has no retrieval; every other row has one, inside its interval's order
    assert out.iloc[-1][["ssm", "ssm_p05", "ssm_p95"]].isna().all()
    body = out.iloc[:-1]
    assert body["ssm"].notna().mean() > 0.99
    assert (body["ssm_p05"] <= body["ssm_p95"]).all()
    # where physics is served the estimate is the all-data WCM inversion itself, unclipped
    sel = manifest["serving"]["bare_B"]["candidate"]
    assert sel == "physics" and manifest["serving"]["bare_B"]["point_model"] is None
    rows = (env == "bare_B").to_numpy() & (queries(df)["qc"] == 0).to_numpy()
    phys = add_physics(queries(df).loc[rows], res.ctx.wcm_params)["mv_wcm"].to_numpy()
    np.testing.assert_array_equal(out.loc[rows, "ssm"].to_numpy(), phys)
    # with_features returns the physics columns and qc beside the contract columns
    wf = reg.predict(df.iloc[:3], with_features=True)
    assert {"mv_wcm", "qc", "tau2_vv"} <= set(wf.columns)


def test_predict_is_fast_for_one_row_and_many(trained, saved):
    df, _, _ = trained
    reg = registry.load_registry(saved[0]).warm()
    one = df.drop(columns=["ssm"]).iloc[[0]]
    reg.predict(one)
    t0 = time.perf_counter()
    for _ in range(5):
        reg.predict(one)
    per_row = (time.perf_counter() - t0) / 5
    many = pd.concat([df.drop(columns=["ssm"])] * 50, ignore_index=True)  # 18k rows
    t0 = time.perf_counter()
    reg.predict(many)
    bulk = time.perf_counter() - t0
    # generous bounds for a loaded CI machine; typical: ~20 ms for one row, ~0.2 s for 18k rows
    assert per_row < 0.5 and bulk < 5.0


# ---------------------------------------------------------------------------------------- refusals


def _write(path: Path, manifest: dict) -> None:
    (path / "manifest.json").write_text(json.dumps(manifest))


@pytest.fixture
def copy_of(saved, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(saved[0], dst)
    return dst, json.loads((dst / "manifest.json").read_text())


def test_refuses_a_feature_list_this_code_does_not_compute(copy_of):
    path, man = copy_of
    bad = copy.deepcopy(man)
    bad["features"]["candidates"]["xgb_raw"].append("soil_temperature_k")
    _write(path, bad)
    with pytest.raises(ModelRegistryError, match="soil_temperature_k"):
        registry.load_registry(path)
    bad = copy.deepcopy(man)
    bad["features"]["candidates"]["xgb_coupled"] = bad["features"]["candidates"]["xgb_coupled"][::-1]
    _write(path, bad)
    with pytest.raises(ModelRegistryError, match="order"):
        registry.load_registry(path)


def test_refuses_a_model_whose_features_differ_from_the_manifest(copy_of):
    path, man = copy_of
    bad = copy.deepcopy(man)
    # physics is served in bare_B: its quantile model uses the coupled features; drop the last one
    # (still a valid ordered subset of the code's list, so only the model itself can tell)
    bad["serving"]["bare_B"]["quantile_features"] = bad["serving"]["bare_B"]["quantile_features"][:-1]
    _write(path, bad)
    reg = registry.load_registry(path)
    with pytest.raises(ModelRegistryError, match="differ from the manifest"):
        reg.warm()


@pytest.mark.parametrize("field, value, message", [
    ("package", {"name": "ssm_spark", "version": "0.2.0"}, "0.2.0"),
    ("schema_version", 99, "schema version 99"),
])
def test_refuses_other_versions(copy_of, field, value, message):
    path, man = copy_of
    man[field] = value
    _write(path, man)
    with pytest.raises(ModelRegistryError, match=message):
        registry.load_registry(path)


def test_accepts_a_patch_release_of_the_package(copy_of, monkeypatch):
    path, man = copy_of
    major, minor, *_ = ssm_spark.__version__.split(".")
    man["package"]["version"] = f"{major}.{minor}.99"
    _write(path, man)
    assert registry.load_registry(path).manifest["package"]["version"].endswith(".99")


def test_refuses_missing_or_changed_files(copy_of, tmp_path):
    path, man = copy_of
    f = path / next(iter(man["files"]))
    f.write_bytes(f.read_bytes()[:-1] + b"\x00")
    with pytest.raises(ModelRegistryError, match="checksum"):
        registry.load_registry(path)
    f.unlink()
    with pytest.raises(ModelRegistryError, match="missing"):
        registry.load_registry(path)
    with pytest.raises(ModelRegistryError, match="manifest.json not found"):
        registry.load_registry(tmp_path / "nowhere")


# ------------------------------------------------------------------------------------------ layout


def test_layout_manifest_and_atomic_overwrite(trained, saved, tmp_path):
    df, cfg, res = trained
    path, man = saved
    assert (path / "manifest.json").is_file() and (path / "cv_metrics.json").is_file()
    for rel in man["files"]:
        assert rel.startswith("models/") and rel.endswith(".ubj") and (path / rel).is_file()
    assert "models/global/global.ubj" in man["files"] and "models/global/global_quantiles.ubj" in man["files"]
    assert not list(path.rglob("*.pkl")) and not list(path.rglob("*.pickle"))
    assert man["package"]["version"] == ssm_spark.__version__
    assert set(man["libraries"]) >= {"xgboost", "numpy", "pandas"}
    assert "revision" in man["git"]
    assert man["config_hash"] == cfg.hash()
    assert man["training_data"]["rows"] == len(df) and man["training_data"]["stations"] == 22
    assert man["training_data"]["environments"]["cropland_D"] == {"n": 36, "stations": 3}
    assert man["environments"]["cropland_D"]["level"] == "group"
    assert man["environments"]["forest_C"]["fallback_chain"] == ["forest_C", "forest", "global"]
    assert man["environments"]["cropland_C"]["cv"]["framework"]["n"] == 96
    table = cal.from_dict(man["physics"]["wcm"])
    assert set(table["env"]) >= {"global", "cropland_C", "bare_B"}
    np.testing.assert_array_equal(table["A"].to_numpy(), cal.from_dict(res.ctx.wcm_params)["A"].to_numpy())
    # the id hashes the content, not the time: the same result saved again has the same id
    m2 = registry.save_registry(path.parent / "again", res, cfg)
    assert m2["manifest_id"] == man["manifest_id"]
    # overwrite replaces atomically and leaves no temporary folder; overwrite=False refuses
    registry.save_registry(path.parent / "again", res, cfg)
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]
    with pytest.raises(ModelRegistryError, match="exists"):
        registry.save_registry(path.parent / "again", res, cfg, overwrite=False)


def test_cv_metrics_json_has_the_contract_keys(saved):
    path, _ = saved
    cv = json.loads((path / "cv_metrics.json").read_text())  # strict JSON: NaN were written as null
    assert set(cv) == {"overall", "environments"}
    keys = {"R", "ubRMSE", "bias", "RMSE", "n", "stations"}
    assert keys <= set(cv["overall"]["framework"])
    assert set(cv["overall"]["candidates"]) == {"physics", "change_detection", "xgb_raw", "xgb_coupled",
                                                "xgb_residual", "global"}
    assert all(keys <= set(m) for m in cv["overall"]["candidates"].values())
    env_keys = {"framework", "candidates", "selected", "runner_up", "level", "n", "stations", "coverage_p05_p95"}
    for blk in cv["environments"].values():
        assert env_keys <= set(blk)
        assert keys <= set(blk["framework"]) and all(keys <= set(m) for m in blk["candidates"].values())
        assert blk["level"] in ("environment", "group", "global")


# ------------------------------------------------------------------------- inputs and wild values


def test_a_registry_of_another_feature_set_is_refused_by_name(trained, saved, tmp_path):
    df, cfg, _ = trained
    reg = registry.load_registry(saved[0])
    assert {"vv_db", "vh_db", "ndvi"} <= set(reg.inputs())
    reg.check_inputs(df.columns, "the table has")  # its own inputs: fine
    with pytest.raises(ModelRegistryError, match=r"but the stacks have missing \['vh_db'\]"):
        reg.check_inputs([c for c in df.columns if c != "vh_db"], "the stacks have")
    vh = df[df["env"].isin(["cropland_C", "bare_B"])].drop(columns=["vv_db"])
    vh_reg = registry.Registry(*registry.build_manifest(selection.train_models(vh, cfg), cfg))
    assert "vv_db" not in vh_reg.inputs() and "vh_db" in vh_reg.inputs()
    with pytest.raises(ModelRegistryError, match=r"extra \['vv_db'\] \(the registry has no physics or model for them\)"):
        vh_reg.check_inputs(df.columns, "the stacks have")
    with pytest.raises(ModelRegistryError, match=r"extra \['vv_db'\]"):  # not a raw error deep in the physics
        vh_reg.predict(df.head(5))
    assert vh_reg.predict(vh.head(5))["ssm"].notna().all()


def test_estimates_outside_the_physical_range_are_masked_and_flagged(trained, saved, monkeypatch):
    from ssm_spark.physics.qc import QC

    df, _, _ = trained
    reg = registry.load_registry(saved[0])
    q = df[df["env"] == "cropland_C"].drop(columns=["ssm"]).head(6).copy()
    q["bulk_density"] = [1.325, 1.325, 1.325, 1.325, np.nan, 1.325]  # porosity 0.5, else 0.6
    wild = np.array([0.30, -0.2, 0.54, 0.56, 0.66, np.inf])  # tolerance 0.05 above porosity, below 0
    real = registry.candidates.predict_point_matrix
    monkeypatch.setattr(registry.candidates, "predict_point_matrix", lambda m, x, off: wild[: len(off)] + 0 * real(m, x, off))
    out = reg.predict(q, with_features=True)
    bad = (out["qc"].to_numpy().astype(int) & int(QC.PREDICTION_OUT_OF_RANGE)) != 0
    assert bad.tolist() == [False, True, False, True, True, True]
    assert out["ssm"].isna().tolist() == bad.tolist() and out.loc[bad, ["ssm_p05", "ssm_p95"]].isna().all().all()
    assert out["ssm"].iloc[2] == 0.54


def test_shrink_selection_pools_one_weight_and_serves_it(tmp_path):
    df = pd.concat([make_env("cropland_C", 8, 12, "precip", 11), make_env("bare_B", 8, 12, "wcm", 12),
                    make_env("forest_C", 8, 12, "precip", 13)], ignore_index=True)
    cfg = load_config(paths=[], overrides=[])
    # shrink_z null: the pooled mix with the lowest squared error is served untested (the test is below)
    cfg.train = TrainConfig(k_folds=4, seed=3, min_stations=6, min_samples=60, selection="shrink",
                            candidates=["xgb_raw", "global"], shrink_z=None,
                            xgb=XGBConfig(n_estimators=12, max_depth=3, learning_rate=0.3, nthread=1))
    res = selection.train_models(df, cfg)
    w = res.cv_metrics["overall"]["shrinkage_weight"]
    assert 0.0 <= w <= 1.0 and set(res.cv_metrics["overall"]["shrinkage_weight_by_fold"]) == {"0", "1", "2", "3"}
    oof = res.oof
    # the cross-fitted framework is the mix with each fold's own pooled weight
    by_fold = res.cv_metrics["overall"]["shrinkage_weight_by_fold"]
    wf = oof["fold"].astype(str).map(by_fold).to_numpy(float)
    own = oof["pred_xgb_raw"].to_numpy()
    np.testing.assert_allclose(oof["framework"], wf * own + (1 - wf) * oof["pred_global"].to_numpy(), atol=1e-12)
    path = tmp_path / "models"
    manifest = registry.save_registry(path, res, cfg)
    reg = registry.load_registry(path)
    q = df[df["env"] == "cropland_C"].drop(columns=["ssm"])
    got = reg.predict(q)["ssm"].to_numpy()
    assert 0 < w < 1   # the global model underfits the two kinds of environment: the own models weigh in
    if 0 < w < 1:
        assert manifest["serving"]["cropland_C"]["blend"]["weight"] == w
        m_own = json.loads(json.dumps(manifest))
        m_own["serving"]["cropland_C"].pop("blend")
        m_glob = json.loads(json.dumps(manifest))
        m_glob["serving"]["cropland_C"] = dict(m_glob["serving"]["global"])
        a = registry.Registry(m_own, reg.model_bytes()).predict(q)["ssm"].to_numpy()
        b = registry.Registry(m_glob, reg.model_bytes()).predict(q)["ssm"].to_numpy()
        np.testing.assert_allclose(got, w * a + (1 - w) * b, atol=1e-9)
    assert np.isfinite(got).all()
    t = res.cv_metrics["overall"]["shrinkage_t_stat"]
    assert np.isfinite(t) and manifest["serving"]["cropland_C"]["selection_evidence"]["pooled_t_stat"] == t

    # shrink_z: a mix whose paired t over stations is not above it is not served (the global model is,
    # with half the trees per cell); cross-fitted, so the reported framework is the global model too
    cfg.train = cfg.train.model_copy(update={"shrink_z": float(t) + 1.0})
    res_z = selection.train_models(df, cfg)
    o = res_z.cv_metrics["overall"]
    assert o["shrinkage_weight"] == 0.0 and o["shrinkage_t_stat"] == pytest.approx(t)
    assert set(o["shrinkage_weight_by_fold"].values()) == {0.0}
    np.testing.assert_array_equal(res_z.oof["framework"], res_z.oof["pred_global"])
    m_z = registry.save_registry(tmp_path / "models_z", res_z, cfg)
    assert all(e["candidate"] == "global" and "blend" not in e for e in m_z["serving"].values())
    assert set(m_z["files"]) == {"models/global/global.ubj", "models/global/global_quantiles.ubj"}
    got_z = registry.load_registry(tmp_path / "models_z").predict(q)
    assert (got_z["model_id"] == f"{m_z['manifest_id']}/cropland_C/global").all() and np.isfinite(got_z["ssm"]).all()
    # a threshold below the mix's t keeps it, with the same weight
    cfg.train = cfg.train.model_copy(update={"shrink_z": float(t) - 1.0})
    assert selection.train_models(df, cfg).cv_metrics["overall"]["shrinkage_weight"] == w


def test_masked_cells_are_not_evaluated_and_the_global_model_runs_once(trained, saved, monkeypatch):
    from ssm_spark.environments import MASK_BITS

    df, _, _ = trained
    path, manifest = saved
    m2 = copy.deepcopy(manifest)
    for unit in ("cropland_C", "bare_B"):  # two blended units: the global model still runs once
        m2["serving"][unit]["blend"] = {"weight": 0.3, "with": "global"}
    reg = registry.Registry(m2, registry.load_registry(path).model_bytes())
    g_point = reg._fitted("global")[0].booster
    calls: list = []
    real_point, real_quant = registry.candidates.predict_point_matrix, registry.candidates.predict_quantile_matrix

    def spy(real):
        def f(m, x, off):
            if m.booster is not None:
                calls.append((m.booster, len(x)))
            return real(m, x, off)
        return f

    monkeypatch.setattr(registry.candidates, "predict_point_matrix", spy(real_point))
    monkeypatch.setattr(registry.candidates, "predict_quantile_matrix", spy(real_quant))
    q = queries(df).iloc[:-4].assign(qc=0)
    clear = reg.predict(q)
    n_clear = sum(n for _, n in calls)
    assert [b for b, _ in calls].count(g_point) == 1
    masked = np.arange(len(q)) % 3 == 0
    q.loc[masked, "qc"] = MASK_BITS & -MASK_BITS  # the lowest mask bit
    calls.clear()
    out = reg.predict(q)
    assert [b for b, _ in calls].count(g_point) == 1
    assert out.loc[masked, ["ssm", "ssm_p05", "ssm_p95"]].isna().all().all()
    # the cells that need a prediction are the only ones evaluated, and theirs do not change
    calls_masked = sum(n for _, n in calls)
    calls.clear()
    alone = reg.predict(q[~masked].assign(qc=0))
    assert calls_masked == sum(n for _, n in calls) and calls_masked < n_clear
    pd.testing.assert_frame_equal(out[~masked], alone, check_exact=True)
    pd.testing.assert_frame_equal(out[~masked], clear[~masked], check_exact=True)
    calls.clear()
    assert reg.predict(q.assign(qc=int(MASK_BITS & -MASK_BITS)))["ssm"].isna().all() and calls == []
