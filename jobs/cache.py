"""spark-submit entry point: same arguments as ``ssm-spark cache`` (a tool: no Spark session)."""

import sys

from ssm_spark.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("cache"))
