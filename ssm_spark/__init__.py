"""ssm-spark: surface soil moisture from Sentinel-1 SAR, radar physics and per-environment XGBoost,
on Apache Spark with Apache Sedona.

The library never configures logging; only ``jobs/`` (through :mod:`ssm_spark.cli`) does.
"""

from __future__ import annotations

import logging

__version__ = "0.1.0"

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__"]
