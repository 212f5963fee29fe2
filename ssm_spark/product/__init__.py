"""Regional products: Parquet by date, tile COGs, VRT mosaics and quicklooks (``ssm-spark produce``).

``from ssm_spark.product.produce import produce`` is the run. Each stage is one module:

=================  ================================================================================
``produce``        :func:`~ssm_spark.product.produce.produce`: the run's setup and summary
``region``         the region: its tiles, and which cells of them it keeps (``clip_mask``)
``schema``         the tables (pyarrow schemas; Spark DDL and column lists derived)
``tiles``          a tile on the executors: read and clip, predict, the tile writer (fine and coarse)
``tasks``          the date's Spark jobs over its stack files; the tile summaries reduced
``outputs``        the driver's part of a date: VRT + quicklook per grid, the aggregates
``aggregate``      coarser nested grids: block means of the fine tiles (Spark)
``commit``         staging, markers, resume, the product hash, ``product.json``
``run``            the date scheduler (dates in flight, one finishing at a time)
``climatology``    the change-detection climatology stack of a region
``cog``/``vrt``    tile COGs and VRT mosaics; ``quicklook``: PNG quicklooks; ``files``: the folder lock
=================  ================================================================================

Nothing is imported here, so ``ssm_spark.product.produce`` always names the module.
"""
