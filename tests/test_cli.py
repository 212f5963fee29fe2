"""The ssm-spark command and the jobs/ entry points."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ssm_spark.cli import JOBS, main

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


@pytest.fixture(autouse=True)
def _restore_logging():
    """main() configures the root logger (as a job should); give the next tests theirs back."""
    import logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_config_job_prints_resolved_config_and_hash(capsys):
    assert main(["config", "-q", "--set", "simulate.n_stations=40"]) == 0
    out = capsys.readouterr().out
    assert "n_stations: 40" in out and out.strip().splitlines()[-1].startswith("# config hash: ")


def test_user_errors_exit_2_with_the_key(capsys):
    assert main(["config", "--set", "spark.mastr=local[1]"]) == 2
    assert "spark.mastr: unknown key" in capsys.readouterr().err


def test_produce_dates_are_parsed_by_argparse(capsys):
    from ssm_spark.cli import build_parser

    base = ["produce", "--models", "m", "--stacks", "s", "--output", "o"]
    args = build_parser().parse_args(base + ["--start", "2024-04-01"])
    assert args.start == dt.date(2024, 4, 1) and args.end is None
    with pytest.raises(SystemExit) as exc:  # not a calendar date: a usage error before any work
        main(base + ["--end", "2024-02-30"])
    assert exc.value.code == 2
    assert "argument --end: '2024-02-30' is not a date YYYY-MM-DD" in capsys.readouterr().err


def test_every_job_has_a_spark_submit_entry_point():
    files = {"matchups": "build_matchups"}  # docs/contracts.md: `matchups` is jobs/build_matchups.py
    for name in JOBS:
        if name in ("config", "jars"):  # tools, not Spark jobs
            continue
        text = (ROOT / "jobs" / f"{files.get(name, name)}.py").read_text()
        assert f'run_job("{name}")' in text


def test_console_script_is_installed():
    res = subprocess.run([str(BIN / "ssm-spark"), "--version"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("ssm-spark ")


@pytest.mark.slow
@pytest.mark.long  # ~60 s; spark-submit is also run by test_deploy_scripts and the standalone cluster's tests
def test_demo_job_through_spark_submit(tmp_path: Path):
    """``deploy/submit.sh demo`` (spark-submit jobs/demo.py, jars on the command line, the library as
    --py-files) runs the same job as ``ssm-spark demo``, in its own JVM."""
    env = dict(os.environ, MASTER="local[1]")
    small = ["--set", "region.size_km=[64, 64]", "--set", "grid.tile_size=32", "--set", "simulate.n_stations=12",
             "--set", "simulate.end=2024-05-01", "--set", "simulate.min_stations_per_env=3"]
    res = subprocess.run([str(ROOT / "deploy" / "submit.sh"), "demo", "-q", *small, "--output", str(tmp_path)],
                         capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    # the packaged log4j2 profile keeps the JVM quiet (Spark's default prints ~60 INFO lines)
    assert " INFO SparkContext" not in res.stderr and " INFO Utils" not in res.stderr, res.stderr[:2000]
    summary = json.loads((tmp_path / "demo_summary.json").read_text())
    assert summary["sedona_check"]["centres_in_own_tile"] == 4
    assert summary["region"]["cells"] == 64 * 64 and len(summary["region"]["tiles"]) == 4
    assert summary["features"]["pixels"] > 0 and summary["matchups"]["rows"] > 0
    assert (tmp_path / "features").is_dir() and (tmp_path / "matchups.parquet").exists()


def test_an_unwritable_output_exits_2_with_a_message(tmp_path, capsys):
    out = Path("/sys/ssm-spark-test/out")  # not writable, even by root
    if not Path("/sys").is_dir():
        pytest.skip("no /sys on this machine")
    rows = ["Station,Date,Lat,Lon,VH,NDVI,sm"] + [f"s{i % 3},2024-05-{1 + i:02d},44.0,2.0,-16.{i},0.4,0.2{i}" for i in range(9)]
    (tmp_path / "t.csv").write_text("\n".join(rows) + "\n")
    cols = "{station_id: Station, date: Date, lat: Lat, lon: Lon, vh_db: VH, ndvi: NDVI, ssm: sm}"
    rc = main(["matchups", "-q", "--set", f"table.columns={cols}", "--table", str(tmp_path / "t.csv"),
               "--output", str(out / "m.parquet")])
    err = capsys.readouterr().err
    assert rc == 2 and "Traceback" not in err and "cannot write /sys/ssm-spark-test" in err


def test_date_lists_are_parsed_by_argparse_and_a_date_twice_is_refused(capsys):
    from ssm_spark.cli import build_parser

    base = ["zonal", "--product", "p", "--zones", "z.geojson"]
    args = build_parser().parse_args(base + ["--dates", "2024-04-07, 2024-04-01"])
    assert args.dates == [dt.date(2024, 4, 1), dt.date(2024, 4, 7)]
    for bad, says in (("2024-04-01,2024-04-01", "2024-04-01 given more than once"), (" , ", "holds no date"),
                      ("2024-04-01,2024-13-01", "'2024-13-01' is not a date")):
        with pytest.raises(SystemExit) as exc:
            main(base + ["--dates", bad])
        assert exc.value.code == 2 and says in capsys.readouterr().err



def test_logging_follows_stderr_when_a_caller_swaps_it(monkeypatch):
    """The CLI's handler writes to the sys.stderr of each record: after a capture (pytest's, a
    notebook's) is closed, later records go to the new stream instead of '--- Logging error ---'."""
    import io
    import logging

    from ssm_spark.cli import configure_logging

    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    configure_logging()
    logging.getLogger("ssm_spark.test").info("first record")
    first.close()  # the capture that was current when logging was configured ends
    monkeypatch.setattr(sys, "stderr", second)
    logging.getLogger("ssm_spark.test").warning("a later record")
    assert "a later record" in second.getvalue() and "Logging error" not in second.getvalue()


def test_serve_on_a_port_in_use_is_refused_by_name():
    """A busy port is a user's error (exit 2 naming host:port and the cause), not a traceback."""
    import socket

    from ssm_spark.errors import InputError
    from ssm_spark.serve import serve_in_thread

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        port = busy.getsockname()[1]
        with pytest.raises(InputError, match=rf"cannot listen on 127.0.0.1:{port}: .*another server already listens"):
            serve_in_thread(None, "127.0.0.1", port)
    finally:
        busy.close()
