"""deploy/spark-submit/{standalone,yarn,k8s}.sh compose, for every job of jobs/, a spark-submit with
the packed environment (--archives ...#environment, spark.pyspark.python=./environment/bin/python),
the jars, the job file and the job's own arguments (DRY_RUN=1 prints the command: no cluster here);
and the quiet log4j2 profile (SPARK_SUBMIT_OPTS for the JVM started here, --files for YARN's containers);
deploy/standalone/cluster.sh and scripts/pack_env.sh are valid bash."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from ssm_spark import jars

ROOT = Path(__file__).resolve().parents[1]
SUBMIT = ROOT / "deploy" / "spark-submit"
JOBS = sorted(p.stem for p in (ROOT / "jobs").glob("*.py"))
ENV = {"MASTER": "spark://master:7077", "K8S_API": "https://k8s:6443", "IMAGE": "spark:4.0.1",
       "UPLOAD_PATH": "s3a://bucket/uploads", "DRY_RUN": "1", "ENV_ARCHIVE": "/opt/ssm-spark-env.tar.gz",
       "SPARK_HOME": str(Path(__import__("pyspark").__file__).parent)}


def _dry_env(target: str, job: str, *args: str, **env: str) -> tuple[dict[str, str], list[str]]:
    """(the environment assignments printed before the command, the spark-submit command)."""
    res = subprocess.run([str(SUBMIT / f"{target}.sh"), job, *args], capture_output=True, text=True,
                         env={**os.environ, **ENV, **env}, timeout=60)
    assert res.returncode == 0, res.stderr
    words = shlex.split(res.stdout)
    n = next(i for i, w in enumerate(words) if "=" not in w or w.startswith("-"))
    return dict(w.split("=", 1) for w in words[:n]), words[n:]


def _dry(target: str, job: str, *args: str, **env: str) -> list[str]:
    return _dry_env(target, job, *args, **env)[1]


def _conf(cmd: list[str]) -> dict[str, str]:
    return dict(cmd[i + 1].split("=", 1) for i, a in enumerate(cmd) if a == "--conf")


@pytest.mark.parametrize("target", ["standalone", "yarn", "k8s"])
def test_every_job_is_submitted_with_the_packed_environment(target: str):
    # every job on one target, one job on the others (the job is the only per-job part)
    for stem in JOBS if target == "standalone" else ["produce"]:
        job = "matchups" if stem == "build_matchups" else stem
        cmd = _dry(target, job, "--output", "/cluster-fs/out")
        assert cmd[0].endswith("spark-submit")
        assert cmd[cmd.index("--archives") + 1] == "/opt/ssm-spark-env.tar.gz#environment"
        conf = _conf(cmd)
        assert conf["spark.pyspark.python"] == "./environment/bin/python"
        assert cmd[cmd.index("--jars") + 1].split(",") == [str(p) for p in jars.verify()]
        i = cmd.index(str(ROOT / "jobs" / f"{stem}.py"))
        assert cmd[i + 1:] == ["--set", "spark.master=null", "--set", "spark.jars.mode=cluster", "--output", "/cluster-fs/out"]
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


def test_s3a_jars_only_when_asked():
    """A cluster's own Hadoop may differ from pyspark's: the S3A jars go on --jars with S3A=1 only."""
    if not jars.s3a_jars():
        pytest.skip("the S3A jars are not fetched (ssm-spark jars fetch --s3a; scripts/setup.sh --test does)")
    cmd = _dry("yarn", "produce", S3A="1")
    assert cmd[cmd.index("--jars") + 1].split(",") == [str(p) for p in jars.verify(s3a=True)]
    assert any(p.endswith("hadoop-aws-3.4.1.jar") for p in cmd[cmd.index("--jars") + 1].split(","))
    plain = _dry("yarn", "produce", S3A="0")
    assert plain[plain.index("--jars") + 1].split(",") == [str(p) for p in jars.verify()]
    res = subprocess.run([str(SUBMIT / "yarn.sh"), "produce"], capture_output=True, text=True, timeout=60,
                         env={**os.environ, **ENV, "S3A": "yes"})
    assert res.returncode == 2 and "S3A must be 0 or 1 (got 'yes')" in res.stderr  # not silently off


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


LOG4J2 = ROOT / "ssm_spark" / "log4j2.properties"
QUIET = f"-Dlog4j2.configurationFile={LOG4J2.as_uri()}"


def test_the_quiet_log4j2_profile_reaches_each_jvm_it_can(tmp_path: Path):
    env_of = {}
    for target, extra in [("standalone", {}), ("yarn", {}), ("yarn", {"DEPLOY_MODE": "client"}), ("k8s", {})]:
        env, cmd = _dry_env(target, "produce", **extra)
        env_of[(target, extra.get("DEPLOY_MODE"))] = (env, cmd)
        # the JVM spark-submit starts here (the client-mode driver, or the cluster-mode client)
        assert env["SPARK_SUBMIT_OPTS"].split()[-1] == QUIET
    # YARN localizes --files before a container's JVM starts: executors, and the driver in cluster mode
    env, cmd = env_of[("yarn", None)]
    assert cmd[cmd.index("--files") + 1] == str(LOG4J2)
    conf = _conf(cmd)
    assert conf["spark.executor.defaultJavaOptions"] == conf["spark.driver.defaultJavaOptions"] == \
        "-Dlog4j2.configurationFile=log4j2.properties"
    assert "spark.executor.extraJavaOptions" not in conf    # the job's own options are appended, not replaced
    _, cmd = env_of[("yarn", "client")]
    assert "spark.driver.defaultJavaOptions" not in _conf(cmd) and "spark.executor.defaultJavaOptions" in _conf(cmd)
    # standalone and Kubernetes fetch --files after the executor's JVM has started: nothing shipped
    for key in [("standalone", None), ("k8s", None)]:
        _, cmd = env_of[key]
        assert "--files" not in cmd and not any("log4j2" in c for c in cmd), key
    # the user's own options are kept; none leaves the cluster's profile; a missing file is an error
    env, _ = _dry_env("standalone", "produce", SPARK_SUBMIT_OPTS="-Xss4m")
    assert env["SPARK_SUBMIT_OPTS"] == f"-Xss4m {QUIET}"
    env, cmd = _dry_env("yarn", "produce", LOG4J2="none")
    assert "SPARK_SUBMIT_OPTS" not in env and "--files" not in cmd
    spaced = tmp_path / "my logs" / "quiet.properties"
    spaced.parent.mkdir()
    spaced.write_text(LOG4J2.read_text())
    env, cmd = _dry_env("yarn", "produce", LOG4J2=str(spaced))
    assert env["SPARK_SUBMIT_OPTS"] == f"-Dlog4j2.configurationFile={spaced.as_uri()}" and "%20" in spaced.as_uri()
    assert cmd[cmd.index("--files") + 1] == str(spaced)
    assert _conf(cmd)["spark.executor.defaultJavaOptions"] == "-Dlog4j2.configurationFile=quiet.properties"
    res = subprocess.run([str(SUBMIT / "standalone.sh"), "produce"], capture_output=True, text=True,
                         env={**os.environ, **ENV, "LOG4J2": str(tmp_path / "nope.properties")}, timeout=60)
    assert res.returncode == 2 and "no log4j2 profile" in res.stderr


@pytest.mark.slow
@pytest.mark.spark
def test_spark_submit_with_the_profile_prints_no_info_lines(tmp_path: Path):
    """A real spark-submit (local[1]): Spark's default profile prints dozens of INFO lines, ours none."""
    app = tmp_path / "app.py"
    app.write_text("from pyspark.sql import SparkSession\n"
                   "s = SparkSession.builder.getOrCreate()\nprint('ROWS', s.range(5).count())\ns.stop()\n")
    env, cmd = _dry_env("standalone", "produce")
    submit = cmd[0]
    base = {**os.environ, "SPARK_HOME": ENV["SPARK_HOME"], "PYSPARK_PYTHON": sys.executable}
    base.pop("SPARK_SUBMIT_OPTS", None)
    runs = {}
    for name, extra in [("default", {}), ("quiet", {"SPARK_SUBMIT_OPTS": env["SPARK_SUBMIT_OPTS"]})]:
        res = subprocess.run([submit, "--master", "local[1]", str(app)], capture_output=True, text=True,
                             env={**base, **extra}, timeout=300)
        assert res.returncode == 0 and "ROWS 5" in res.stdout, res.stderr[-2000:]
        runs[name] = [ln for ln in res.stderr.splitlines() if " INFO " in ln]
    assert len(runs["default"]) > 20            # the test can fail: without the profile they are there
    assert runs["quiet"] == []
