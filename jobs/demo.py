"""spark-submit entry point: the whole pipeline on the embedded demo region (same arguments as ``ssm-spark demo``)."""

import sys

from ssm_spark.cli import run_job

if __name__ == "__main__":
    sys.exit(run_job("demo"))
