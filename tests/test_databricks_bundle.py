"""deploy/databricks/ is a bundle that would deploy: every job resource passes the schema of the
``databricks-bundles`` package (``Job.from_dict``: unknown fields and bad enum values are errors; no
Databricks CLI or network here), every task's entry point exists in the wheel, its parameters parse
with the job's own parser and load as a cluster configuration, the libraries are the wheel and the
pins of requirements/constraints.txt, the init script copies the jars of ssm_spark/jars.py into
/databricks/jars, outputs are on /Volumes, and every notebook is in source format with widgets."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from ssm_spark import jars
from ssm_spark.cli import build_parser
from ssm_spark.config import load_config

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "deploy" / "databricks"
TOP_LEVEL = {"bundle", "include", "variables", "artifacts", "targets", "resources", "workspace", "sync",
             "permissions", "run_as", "presets", "experimental", "scripts", "python"}


def _bundle() -> tuple[dict, dict]:
    top = yaml.safe_load((BUNDLE / "databricks.yml").read_text())
    jobs: dict = {}
    for pattern in top.get("include", []):
        for f in sorted(BUNDLE.glob(pattern)):
            part = yaml.safe_load(f.read_text())
            assert set(part) <= TOP_LEVEL, f
            for name, job in part.get("resources", {}).get("jobs", {}).items():
                jobs[name] = (f, job)
    return top, jobs


def _resolve(value, variables: dict):
    """${var.x} (recursively, the target's defaults) and ${bundle.target}/${workspace.file_path}."""
    if isinstance(value, dict):
        return {k: _resolve(v, variables) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve(v, variables) for v in value]
    if isinstance(value, str):
        m = re.fullmatch(r"\$\{var\.(\w+)\}", value)
        if m:
            return _resolve(variables[m.group(1)], variables)
        for _ in range(5):
            value = re.sub(r"\$\{var\.(\w+)\}", lambda m: str(_resolve(variables[m.group(1)], variables)), value)
        return value.replace("${bundle.target}", "dev").replace("${workspace.file_path}", "/Workspace/ssm/files")
    return value


def test_top_level_targets_and_variables():
    top, jobs = _bundle()
    assert set(top) <= TOP_LEVEL and top["bundle"]["name"] == "ssm-spark"
    assert set(top["targets"]) == {"dev", "prod"} and top["targets"]["dev"]["mode"] == "development"
    assert top["targets"]["prod"]["mode"] == "production"
    assert {"ssm_train", "ssm_produce", "ssm_validate"} <= set(jobs)
    art = top["artifacts"]["ssm_spark_wheel"]
    assert art["type"] == "whl" and (BUNDLE / art["path"] / "setup.py").is_file() and "pip wheel" in art["build"]
    variables = {k: v["default"] for k, v in top["variables"].items()}
    cluster = _resolve(variables["ssm_cluster"], variables)
    assert top["variables"]["ssm_cluster"]["type"] == "complex"
    # the current LTS runtime with Spark 4.0 (17.3 LTS), Scala 2.13 as the jars are built for
    assert cluster["spark_version"] == f"17.3.x-scala{jars.SCALA_COMPAT}" and jars.SPARK_COMPAT == "4.0"
    assert cluster["data_security_mode"] == "SINGLE_USER" and cluster["runtime_engine"] == "STANDARD"
    conf = cluster["spark_conf"]
    assert conf["spark.serializer"].endswith("KryoSerializer") and conf["spark.kryo.registrator"].endswith("SedonaKryoRegistrator")
    assert "SedonaSqlExtensions" in conf["spark.sql.extensions"]
    (init,) = cluster["init_scripts"]
    assert init["workspace"]["destination"] == "/Workspace/ssm/files/init/sedona-jars.sh"
    assert cluster["spark_env_vars"]["SSM_JARS_DIR"].startswith("/Volumes/")


def test_init_script_copies_the_pinned_jars_into_databricks_jars(tmp_path: Path):
    script = BUNDLE / "init" / "sedona-jars.sh"
    text = script.read_text()
    assert text.startswith("#!/bin/bash") and "/databricks/jars" in text
    for art in jars.ARTIFACTS:
        assert art.filename in text, art.filename
    # run it against a fake volume: a missing jar is an error that names it
    res = subprocess.run(["bash", str(script)], env={"SSM_JARS_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True)
    assert res.returncode == 1 and jars.ARTIFACTS[0].filename in res.stderr


def test_every_job_validates_and_its_tasks_parse_as_cluster_jobs():
    from databricks.bundles.jobs import Job

    top, jobs = _bundle()
    variables = {k: v["default"] for k, v in top["variables"].items()}
    entry_points = re.findall(r'"([\w-]+)=ssm_spark\.cli:main"', (ROOT / "setup.py").read_text())
    pins = dict(line.split("==") for line in (ROOT / "requirements" / "constraints.txt").read_text().splitlines()
                if "==" in line and not line.startswith("#"))
    for name, (path, raw) in jobs.items():
        job = _resolve(raw, variables)
        Job.from_dict(job)  # the bundle schema: raises on unknown fields and bad values
        params = {p["name"]: p["default"] for p in job["parameters"]}
        for task in job["tasks"]:
            libs = task["libraries"]
            (whl,) = [lib["whl"] for lib in libs if "whl" in lib]
            assert (path.parent / whl).resolve().parent == ROOT / "dist" and whl.endswith(".whl")
            for lib in libs:
                if "pypi" in lib:
                    pkg, version = lib["pypi"]["package"].split("==")
                    assert pins.get(pkg) == version, lib
            t = task["python_wheel_task"]
            assert t["package_name"] == "ssm_spark" and t["entry_point"] in entry_points
            argv = [re.sub(r"\{\{job\.parameters\.(\w+)\}\}", lambda m: str(params[m.group(1)]), a)
                    for a in t["parameters"]]
            used = {m for a in t["parameters"] for m in re.findall(r"\{\{job\.parameters\.(\w+)\}\}", a)}
            assert used == set(params), (name, used ^ set(params))
            args = build_parser().parse_args(argv)
            assert args.job == name.removeprefix("ssm_")
            for option in ("output", "models", "stacks", "product", "matchups", "insitu"):
                value = getattr(args, option, None)
                assert value is None or value.startswith("/Volumes/"), (name, option, value)
            assert args.config == [_resolve(variables["root"], variables) + "/conf/default.yaml"]
            cfg = load_config([ROOT / "conf" / "default.yaml"], args.overrides)  # the volume's copy of it
            assert cfg.spark.master is None and cfg.spark.jars.mode == "cluster", name


@pytest.mark.parametrize("name", ["train", "produce", "validate", "point"])
def test_notebooks_are_source_format_with_widgets_for_every_argument(name: str):
    text = (BUNDLE / "notebooks" / f"{name}.py").read_text()
    assert text.startswith("# Databricks notebook source\n") and "# COMMAND ----------" in text
    compile(text, name, "exec")
    widgets = set(re.findall(r'dbutils\.widgets\.text\("(\w+)"', text))
    args = re.search(r"^ARGS = (\[.*\])$", text, re.M).group(1)
    pairs = eval(args)  # noqa: S307 - a literal list in our own file
    assert {w for w, _ in pairs} <= widgets and "config" in widgets
    # the options exist on the job's parser: a complete argv from the widgets' defaults parses
    defaults = dict(re.findall(r'dbutils\.widgets\.text\("(\w+)", (?:ROOT \+ )?"([^"]*)"', text))
    argv = [name, "--set", "spark.master=null"]
    for w, option in pairs:
        argv += [option, defaults[w] or "2024-05-01"]
    build_parser().parse_args(argv)
    assert f'run("{name}"' in text
