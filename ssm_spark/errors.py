"""Exceptions of ssm-spark.

Every error the library raises on purpose derives from :class:`SSMError` and also from the builtin
exception that matches its nature, so callers can catch either ``SSMError`` or the familiar builtin
(``except ValueError``) without knowing this package (the rasterio pattern).

Messages name what was wrong, where (file, band, key, station, tile) and the likely cause.
"""

from __future__ import annotations


class SSMError(Exception):
    """Root of every error raised on purpose by ssm-spark."""


class ConfigError(SSMError, ValueError):
    """A configuration file or override is invalid (unknown key, bad value, unreadable file)."""


class GridError(SSMError, ValueError):
    """Grid or tile arithmetic was asked for something outside the grid or not nested."""


class GridMismatchError(GridError):
    """A raster's CRS or alignment does not match the configured grid."""


class InputError(SSMError, ValueError):
    """An input (file, band, table, column, station) is missing, unreadable or out of range."""


class InputIOError(SSMError, OSError):
    """An input file could not be read (missing, truncated, corrupt)."""


class SparkSetupError(SSMError, RuntimeError):
    """The Spark session could not be built (missing jars, Sedona not registered)."""


class CalibrationError(SSMError, RuntimeError):
    """A physics calibration could not be fitted."""


class ModelRegistryError(SSMError, ValueError):
    """A model registry does not exist or does not match this code (versions, features)."""
