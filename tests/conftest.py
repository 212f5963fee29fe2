"""Shared fixtures: one local Spark session with Sedona for the whole run, paths to the real data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data (real files for tests); tests that need it skip when it is absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real test data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture(scope="session")
def spark():
    """One local[2] SparkSession with Sedona registered, shared by every test."""
    from ssm_spark.config import SparkConfig
    from ssm_spark.spark import session

    s = session(SparkConfig(master="local[2]", shuffle_partitions=2, app_name="ssm-spark-tests",
                            conf={"spark.ui.enabled": "false", "spark.ui.showConsoleProgress": "false"}))
    yield s
    s.stop()
