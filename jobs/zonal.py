"""Entry point: same arguments as ``ssm-spark zonal`` (spark-submit jobs/zonal.py ARGS)."""

import sys

from ssm_spark.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("zonal"))
