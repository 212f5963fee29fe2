"""deploy/spark-submit/{standalone,yarn,k8s}.sh compose, for every job of jobs/, a spark-submit with
the packed environment (--archives ...#environment, spark.pyspark.python=./environment/bin/python),
the jars, the job file and the job's own arguments (DRY_RUN=1 prints the command: no cluster here);
deploy/standalone/cluster.sh and scripts/pack_env.sh are valid bash."""

from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

from ssm_spark import jars

ROOT = Path(__file__).resolve().parents[1]
SUBMIT = ROOT / "deploy" / "spark-submit"
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))
ENV = {"MASTER": "spark://master:7077", "K8S_API": "https://k8s:6443", "IMAGE": "spark:4.0.1",
       "UPLOAD_PATH": "s3a://bucket/uploads", "DRY_RUN": "1", "ENV_ARCHIVE": "/opt/ssm-spark-env.tar.gz",
       "SPARK_HOME": str(Path(__import__("pyspark").__file__).parent)}


def _dry(target: str, job: str, *args: str, **env: str) -> list[str]:
    res = subprocess.run([str(SUBMIT / f"{target}.sh"), job, *args], capture_output=True, text=True,
                         env={**os.environ, **ENV, **env}, timeout=60)
    assert res.returncode == 0, res.stderr
    return shlex.split(res.stdout)


def _conf(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--conf")


@pytest.mark.parametrize("target", ["standalone", "yarn", "k8s"])
def test_every_job_is_submitted_with_the_packed_environment(target: str):
    # every job on one target, one job on the others (the job is the only per-job part)
    for stem in JOBS if target == "standalone" else ["produce"]:
        job = "matchups" if stem == "build_matchups" else stem
        cmd = _dry(target, job, "--output", "/shared/out")
        assert cmd[0].endswith("spark-submit")
        assert cmd[cmd.index("--archives") + 1] == "/opt/ssm-spark-env.tar.gz#environment"
        conf = _conf(cmd)
        assert conf["spark.pyspark.python"] == "./environment/bin/python"
        assert cmd[cmd.index("--jars") + 1].split(",") == [str(p) for p in jars.verify()]
        i = cmd.index(str(ROOT / "jobs" / f"{stem}.py"))
        assert cmd[i + 1:] == ["--set", "spark.master=null", "--set", "spark.jars.mode=cluster", "--output", "/shared/out"]
        master = cmd[cmd.index("--master") + 1]
        if target == "standalone":
            assert master == "spark://master:7077" and cmd[cmd.index("--deploy-mode") + 1] == "client"
            assert conf["spark.pyspark.driver.python"]
        elif target == "yarn":
            assert master == "yarn" and cmd[cmd.index("--deploy-mode") + 1] == "cluster"
            assert conf["spark.yarn.appMasterEnv.PYSPARK_PYTHON"] == "./environment/bin/python"
        else:
            assert master == "k8s://https://k8s:6443" and conf["spark.kubernetes.container.image"] == "spark:4.0.1"
            assert conf["spark.kubernetes.file.upload.path"] == "s3a://bucket/uploads"


def test_options_no_archive_packages_and_errors(tmp_path: Path):
    cmd = _dry("standalone", "produce", ENV_ARCHIVE="none", PYTHON="/nodes/python", JARS_MODE="packages",
               SUBMIT_ARGS="--executor-cores 4 --executor-memory 6g")
    assert "--archives" not in cmd and _conf(cmd)["spark.pyspark.python"] == "/nodes/python"
    assert cmd[cmd.index("--packages") + 1] == jars.maven_packages() and "--jars" not in cmd
    assert cmd[cmd.index("--executor-cores") + 1] == "4"
    cmd = _dry("yarn", "train", JARS_MODE="cluster", DEPLOY_MODE="client")
    assert "--jars" not in cmd and "--packages" not in cmd and "spark.pyspark.driver.python" in _conf(cmd)
    env = {**os.environ, **ENV, "DRY_RUN": "0", "ENV_ARCHIVE": str(tmp_path / "missing.tar.gz")}
    res = subprocess.run([str(SUBMIT / "standalone.sh"), "produce"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "make pack" in res.stderr
    res = subprocess.run([str(SUBMIT / "standalone.sh"), "nosuchjob"], capture_output=True, text=True, env=env)
    assert res.returncode == 2 and "no such job" in res.stderr


def test_scripts_parse():
    for script in [ROOT / "deploy" / "standalone" / "cluster.sh", ROOT / "scripts" / "pack_env.sh",
                   *SUBMIT.glob("*.sh")]:
        res = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert res.returncode == 0, (script, res.stderr)
    res = subprocess.run([str(ROOT / "deploy" / "standalone" / "cluster.sh")], capture_output=True, text=True)
    assert res.returncode == 2 and "start" in res.stderr
