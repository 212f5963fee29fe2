"""Point retrieval: SSM at (lat, lon, date) in milliseconds, without Spark.

The answer goes through the code of ``ssm-spark produce`` on a one-pixel input (the stack reader's
value rules, the climatology attach, :func:`~ssm_spark.product.produce.predict_rows`), so it equals
the product's Parquet value for the same cell and date (a test holds it to 1e-6). Modules:

- :mod:`.errors`: :class:`PointError` (an :class:`~ssm_spark.errors.InputError`: the CLI exits 2) and
  its kinds (:class:`OutsideCoverageError`, :class:`NoAcquisitionError` naming the nearest dates,
  :class:`MaskedCellError` naming the QC bits); date and coordinate checks.
- :mod:`.cells`: one cell from stack files fast (datasets kept open, 1 x 1 windows) and
  :func:`~.cells.pixel_frame`, the stack reader's value rules on 1-D arrays.
- :mod:`.sources`: :class:`StackSource`, :class:`ProductSource`, :class:`EarthEngineSource`.
- :mod:`.climatology`: the change-detection climatology of the cell (produce's stack, or built
  from the cell's Earth Engine series).
- :mod:`.service`: :class:`PointService` (``point``, ``series``, ``health``); :mod:`ssm_spark.serve`
  puts it behind HTTP.
- :mod:`.cli`: ``ssm-spark point``.

Python::

    from ssm_spark.point import PointService
    svc = PointService(cfg, "out/demo/models", stacks="out/demo/sim/stacks")
    svc.point(44.0, 2.5, "2024-05-01")["ssm"]
"""

from ssm_spark.point.cli import run
from ssm_spark.point.errors import (MaskedCellError, NoAcquisitionError, OutsideCoverageError, PointError,
                                    parse_date)
from ssm_spark.point.service import MAX_SERIES_DAYS, PointService
from ssm_spark.point.sources import EarthEngineSource, PointSource, ProductSource, StackSource

__all__ = ["PointError", "OutsideCoverageError", "NoAcquisitionError", "MaskedCellError", "PointSource",
           "StackSource", "ProductSource", "EarthEngineSource", "PointService", "MAX_SERIES_DAYS", "parse_date",
           "run"]
