"""The wheel stands alone: built from the checkout, installed into a throwaway virtualenv, it carries
the default configuration as package data (same defaults, same config hash), finds the jars through
``$SSM_SPARK_JARS`` / ``spark.jars.dir`` / a per-user cache (never ``site-packages``), and does not pull
in ``pyspark`` unless asked (the ``[spark]`` extra)."""

from __future__ import annotations

import email
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    res = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                          "--disable-pip-version-check", str(ROOT), "-w", str(out)],
                         capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert res.returncode == 0, res.stderr[-2000:]
    (whl,) = out.glob("ssm_spark-*.whl")
    return whl


def test_wheel_contents_and_metadata(wheel: Path):
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        # conf/ is package data, byte for byte the repository's (one source of truth: conf/)
        for src in (ROOT / "conf").rglob("*.yaml"):
            arc = f"ssm_spark/conf/{src.relative_to(ROOT / 'conf').as_posix()}"
            assert z.read(arc) == src.read_bytes(), arc
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
        entry_points = z.read(next(n for n in names if n.endswith(".dist-info/entry_points.txt"))).decode()
    assert "ssm_spark/__init__.py" in names and "ssm_spark/product/produce.py" in names
    assert not any(n.startswith(("tests/", "jobs/", "jars/", "benchmarks/")) or n.endswith(".jar") for n in names)
    requires = meta.get_all("Requires-Dist")
    # pyspark only through the extra: a managed runtime keeps its own
    assert [r for r in requires if r.startswith("pyspark")] == [r for r in requires if "extra == \"spark\"" in r
                                                                  and r.startswith("pyspark")]
    assert any(r.startswith("pyspark") for r in requires) and "spark" in meta.get_all("Provides-Extra")
    assert any(r.startswith("apache-sedona") and "extra" not in r for r in requires)
    assert "ssm-spark = ssm_spark.cli:main" in entry_points
    assert wheel.stat().st_size < 1 << 20


def test_installed_wheel_resolves_the_same_config_and_finds_jars_outside_site_packages(wheel: Path, tmp_path: Path):
    from ssm_spark.config import load_config

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    py = venv / "bin" / "python"
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "-q", "--no-deps", "--no-index",
                    "--disable-pip-version-check", str(wheel)], check=True, timeout=120, capture_output=True)
    # the dependencies come from the project's venv, on PYTHONPATH: its .pth files (the editable
    # install of the checkout) are not processed there, so ssm_spark is the wheel's
    deps = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SSM_SPARK", "XDG_"))}
    env.update(PYTHONPATH=deps, HOME=str(tmp_path / "home"))
    probe = ("import json, ssm_spark, ssm_spark.config as c, ssm_spark.jars as j; "
             "print(json.dumps([ssm_spark.__file__, str(c.DEFAULT_CONFIG), c.load_config().hash(), str(j.jars_dir()), "
             "str(j.jars_dir(c.load_config(overrides=['spark.jars.dir=/opt/j']).spark.jars.dir))]))")
    res = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    module, default, cfg_hash, jars, configured = json.loads(res.stdout)
    site = str(venv)
    assert module.startswith(site) and default.startswith(site) and default.endswith("ssm_spark/conf/default.yaml")
    assert cfg_hash == load_config().hash()  # same defaults as the checkout's conf/default.yaml
    assert jars == str(tmp_path / "home" / ".cache" / "ssm-spark" / "jars-1.8.0") and configured == "/opt/j"
    res = subprocess.run([str(py), "-c", "import ssm_spark.jars as j; print(j.jars_dir())"], capture_output=True,
                         text=True, env=dict(env, SSM_SPARK_JARS="/data/jars"), cwd=tmp_path, timeout=60)
    assert res.stdout.strip() == "/data/jars"
    # the console script of the wheel: the same config hash, and `jars path` names the env's folder
    res = subprocess.run([str(venv / "bin" / "ssm-spark"), "config", "-q"], capture_output=True, text=True, env=env,
                         cwd=tmp_path, timeout=60)
    assert res.returncode == 0 and res.stdout.rstrip().endswith(f"# config hash: {load_config().hash()}")
    res = subprocess.run([str(venv / "bin" / "ssm-spark"), "jars", "path", "-q"], capture_output=True, text=True,
                         env=dict(env, SSM_SPARK_JARS=str(tmp_path / "j")), cwd=tmp_path, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == str(tmp_path / "j")
    res = subprocess.run([str(venv / "bin" / "ssm-spark"), "jars", "verify", str(tmp_path / "none"), "-q"],
                         capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert res.returncode == 2 and "ssm-spark jars fetch" in res.stderr


def test_jars_cli_in_the_checkout(capsys):
    from ssm_spark import jars
    from ssm_spark.cli import main

    assert main(["jars", "path", "-q"]) == 0 and capsys.readouterr().out.strip() == str(jars.jars_dir())
    assert main(["jars", "packages", "-q"]) == 0 and capsys.readouterr().out.strip() == jars.maven_packages()
    assert main(["jars", "path", "-q", "--set", "spark.jars.dir=/x/y"]) == 0
    assert capsys.readouterr().out.strip() == "/x/y"


def test_session_without_pyspark_says_how_to_get_it(monkeypatch):
    import builtins

    from ssm_spark.errors import SparkSetupError
    from ssm_spark.spark import session

    real = builtins.__import__

    def no_pyspark(name, *a, **k):
        if name.startswith("pyspark"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_pyspark)
    with pytest.raises(SparkSetupError, match=r"ssm-spark\[spark\]"):
        session()


def test_relative_paths_are_made_absolute_on_the_driver(tmp_path: Path, monkeypatch):
    """On a cluster the executors run in their own folders: the CLI hands every job absolute paths."""
    from ssm_spark.cli import absolute_paths, build_parser

    monkeypatch.chdir(tmp_path)
    args = absolute_paths(build_parser().parse_args(
        ["produce", "--models", "m", "--stacks", "s3://bucket/stacks", "--output", "out/p", "--region", "demo"]))
    assert args.models == str(tmp_path / "m") and args.output == str(tmp_path / "out" / "p")
    assert args.stacks == "s3://bucket/stacks" and args.region == "demo" and args.static is None
    args = absolute_paths(build_parser().parse_args(["validate", "--product", "dbfs:/p", "--insitu", "/abs/i",
                                                     "--output", "v"]))
    assert (args.product, args.insitu, args.output) == ("dbfs:/p", "/abs/i", str(tmp_path / "v"))
