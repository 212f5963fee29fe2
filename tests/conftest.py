"""Shared fixtures: one local Spark session with Sedona for the whole run (real data: tests/data)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession with Sedona registered, shared by every test."""
    from ssm_spark.config import SparkConfig
    from ssm_spark.spark import session

    s = session(SparkConfig(master="local[2]", shuffle_partitions=2, app_name="ssm-spark-tests",
                            conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}))
    yield s
    s.stop()
