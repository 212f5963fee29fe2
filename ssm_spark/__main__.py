"""``python -m ssm_spark JOB ARGS``: the same as the ``ssm-spark`` command."""

import sys

from ssm_spark.cli import main

sys.exit(main())
