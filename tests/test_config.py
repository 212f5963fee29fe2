"""Typed configuration: files, overrides, errors that name key and file, the provenance hash."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from ssm_spark.config import DEFAULT_CONFIG, Config, load_config, parse_override
from ssm_spark.errors import ConfigError


def test_default_file_is_the_demo_and_validates():
    cfg = load_config()
    assert DEFAULT_CONFIG.exists()
    assert cfg.grid.name == "ease2_1km" and cfg.region.name == "demo"
    grid = cfg.grid.build()
    w = cfg.region.window(grid)
    assert (w.height, w.width) == (512, 512) and len(grid.tiles_for_window(w)) == 4


def test_overrides_are_parsed_as_yaml():
    cfg = load_config(overrides=["spark.master=local[1]", "simulate.n_stations=40", "region.size_km=[64, 32]",
                                 "grid.tile_size=32", "spark.conf={spark.driver.memory: 2g, spark.x: true}"])
    assert cfg.spark.master == "local[1]" and cfg.simulate.n_stations == 40
    assert cfg.region.size_km == (64.0, 32.0) and cfg.grid.tile_size == 32
    assert cfg.spark.conf == {"spark.driver.memory": "2g", "spark.x": "true"}
    w = cfg.region.window(cfg.grid.build())
    assert (w.width, w.height) == (64, 32)
    assert parse_override("a.b=") == (["a", "b"], "")
    with pytest.raises(ConfigError, match="key=value"):
        parse_override("spark.master")


def test_unknown_key_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("spark:\n  mastr: local[1]\n")
    with pytest.raises(ConfigError) as err:
        load_config([DEFAULT_CONFIG, bad])
    assert f"{bad}: spark.mastr: unknown key" in str(err.value)
    with pytest.raises(ConfigError, match=re.escape("--set simulat.seed=3: simulat: unknown key")):
        load_config(overrides=["simulat.seed=3"])


def test_bad_value_names_key_and_file(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("grid:\n  name: ease2_2km\nsimulate:\n  revisit_days: 0\n")
    with pytest.raises(ConfigError) as err:
        load_config([bad])
    msg = str(err.value)
    assert f"{bad}: grid.name" in msg and "nested resolutions" in msg
    assert f"{bad}: simulate.revisit_days" in msg
    with pytest.raises(ConfigError, match="region: .*bbox"):
        load_config(overrides=["region.bbox=[10, 50, 5, 40]"])


def test_unreadable_files_are_config_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config([tmp_path / "missing.yaml"])
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must be a mapping"):
        load_config([tmp_path / "list.yaml"])
    (tmp_path / "broken.yaml").write_text("grid: [1,\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config([tmp_path / "broken.yaml"])


def test_layered_profiles_merge_deeply():
    root = DEFAULT_CONFIG.parent
    cfg = load_config([DEFAULT_CONFIG, root / "spark" / "cluster.yaml"])
    assert cfg.spark.master is None and cfg.spark.jars.mode == "packages"
    assert cfg.spark.app_name == "ssm-spark"  # kept from default.yaml
    local = load_config([DEFAULT_CONFIG, root / "spark" / "local.yaml"])
    assert local.spark.conf["spark.driver.memory"] == "8g"


def test_hash_is_stable_and_sensitive(tmp_path: Path):
    a = load_config()
    # the same resolved values written in another key order hash the same
    reordered = tmp_path / "r.yaml"
    def rev(d):
        return {k: rev(v) if isinstance(v, dict) else v for k, v in reversed(list(d.items()))}

    reordered.write_text(yaml.safe_dump(rev(a.model_dump(mode="json")), sort_keys=False))
    assert reordered.read_text().splitlines()[0].startswith(list(a.model_dump())[-1])
    b = load_config([reordered])
    assert a.hash() == b.hash() and re.fullmatch(r"[0-9a-f]{16}", a.hash())
    assert load_config(overrides=["simulate.seed=1"]).hash() != a.hash()
    assert Config().hash() == Config().hash()


def test_set_into_a_mapping_keeps_dotted_keys_whole():
    cfg = load_config(overrides=["spark.conf.spark.driver.memory=8g", "spark.conf.spark.sql.shuffle.partitions=4",
                                 "table.columns.vh_db=S1.VH", "produce.regions.west.side=[1, 2, 3, 4]"])
    assert cfg.spark.conf["spark.driver.memory"] == "8g" and cfg.spark.conf["spark.sql.shuffle.partitions"] == "4"
    assert "spark" not in cfg.spark.conf
    assert cfg.table.columns["vh_db"] == "S1.VH" and cfg.produce.regions["west.side"] == (1, 2, 3, 4)
    # everything else keeps its meaning: sections nest, a scalar key is one key
    assert load_config(overrides=["spark.conf.x=1"]).spark.conf["x"] == "1"
    with pytest.raises(ConfigError, match=re.escape("--set spark.mastr.x=1: spark.mastr: unknown key")):
        load_config(overrides=["spark.mastr.x=1"])


def test_a_section_check_blames_the_override_that_broke_it():
    with pytest.raises(ConfigError) as err:
        load_config([DEFAULT_CONFIG], overrides=["region.bbox=[3, 44, 2, 45]"])
    assert "--set region.bbox=[3, 44, 2, 45]: region:" in str(err.value) and "default.yaml" not in str(err.value)


def test_tree_defaults_are_the_measured_ones_in_code_and_file():
    """train.xgb's served-tree sizes: the code's defaults and conf/default.yaml agree, and are the
    settings measured in docs/physics.md section 7 (benchmarks/bench_trees.py, bench_accuracy.py)."""
    from ssm_spark.config import XGBConfig

    code = XGBConfig().model_dump()
    file = yaml.safe_load(DEFAULT_CONFIG.read_text())["train"]["xgb"]
    keys = ("n_estimators", "max_depth", "learning_rate", "quantile_n_estimators", "quantile_max_depth",
            "quantile_multi_strategy")
    assert {k: file[k] for k in keys} == {k: code[k] for k in keys}
    assert {k: code[k] for k in keys} == {"n_estimators": 100, "max_depth": 5, "learning_rate": 0.15,
                                         "quantile_n_estimators": 40, "quantile_max_depth": 4,
                                         "quantile_multi_strategy": "one_output_per_tree"}
    # the quantile models keep the step they were measured at: learning_rate x n_estimators / 40
    assert code["learning_rate"] * code["n_estimators"] / code["quantile_n_estimators"] == pytest.approx(0.375)
