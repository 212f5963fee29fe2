"""In-situ soil moisture: ISMN station downloads to the in-situ table, station series, daily and
overpass-window means (pure pandas; the Spark layer wraps them elsewhere)."""

from __future__ import annotations

from ssm_spark.insitu.ismn import OBSERVATION_COLUMNS, STATION_COLUMNS, InSituData, read_ismn
from ssm_spark.insitu.series import SERIES_COLUMNS, daily_means, overpass_means, station_series

__all__ = [
    "InSituData",
    "OBSERVATION_COLUMNS",
    "SERIES_COLUMNS",
    "STATION_COLUMNS",
    "daily_means",
    "overpass_means",
    "read_ismn",
    "station_series",
]
