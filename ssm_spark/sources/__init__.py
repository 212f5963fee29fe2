"""Where the inputs come from.

* :mod:`.simulate` -- the built-in simulator: a synthetic region with known truth, written as the
  files a real run reads (per-date feature stacks, static layers, ISMN station files) plus the truth
  kept apart under ``truth/`` (``ssm-spark simulate``).
* :mod:`.stacks` -- feature stacks on disk: per-date GeoTIFFs on the grid (the simulator's, or
  exports such as Earth Engine's), checked on the driver and read into the pixel table on Spark.
* :mod:`.table` -- a user's own matchup table (CSV or Parquet), mapped to the matchup contract.
* :mod:`.earthengine` -- Google Earth Engine: request builders on the grid, ``ssm-spark ee-export``
  (one GeoTIFF per grid tile and date exported to Cloud Storage or Drive by a task manager with a
  state file; copied to disk and finalised, they are read by :mod:`.stacks`), and point sampling of
  cells x dates for the point service. Live use needs earthengine-api and credentials; the package
  imports, and ``--dry-run`` builds the requests, without them.
"""
