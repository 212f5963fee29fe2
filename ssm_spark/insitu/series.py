"""In-situ series: one series per station, daily means and overpass-window means (pure pandas).

The input is the in-situ table that :func:`ssm_spark.insitu.ismn.read_ismn` gives (or any table of
the same columns, docs/contracts.md "Tables"); times are tz-aware UTC or naive values taken as UTC
(see the "Times" section of :mod:`ssm_spark.insitu.ismn`). The Spark layer wraps these elsewhere.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence, Union

import numpy as np
import pandas as pd

from ssm_spark.errors import InputError

__all__ = ["SERIES_COLUMNS", "station_series", "daily_means", "overpass_means"]

#: One series per station: the mean over its sensors at each timestamp.
SERIES_COLUMNS: tuple[str, ...] = ("station_id", "network", "lon", "lat", "depth_from", "depth_to", "time", "ssm",
                                   "n_sensors")
#: Station columns carried through the aggregations when present (constant per station).
_META_COLUMNS: tuple[str, ...] = ("network", "lon", "lat", "depth_from", "depth_to")


def _require(df: pd.DataFrame, cols: Iterable[str], what: str) -> None:
    missing = [c for c in cols if c not in df.columns]
    if missing:
        raise InputError(f"{what}: table lacks column(s) {missing} (has {list(df.columns)})")


def _utc(times: pd.Series) -> pd.Series:
    """Times as ``datetime64[ns, UTC]``, same index (naive values are taken as UTC)."""
    t = pd.to_datetime(times)
    t = t.dt.tz_localize("UTC") if t.dt.tz is None else t.dt.tz_convert("UTC")
    return t.dt.as_unit("ns")


def _epoch_ns(times: pd.Series) -> np.ndarray:
    """UTC nanoseconds since the epoch (int64) of a time column."""
    return pd.DatetimeIndex(_utc(times)).asi8


def _station_meta(df: pd.DataFrame) -> pd.DataFrame:
    """Per-station metadata columns present in ``df`` (first value; depths as min/max over sensors)."""
    cols = [c for c in _META_COLUMNS if c in df.columns]
    if not cols:
        return pd.DataFrame({"station_id": df["station_id"].unique()})
    g = df.groupby("station_id", sort=True)
    parts = {c: (g[c].min() if c == "depth_from" else g[c].max() if c == "depth_to" else g[c].first()) for c in cols}
    return pd.DataFrame(parts).reset_index()


def station_series(obs: pd.DataFrame) -> pd.DataFrame:
    """One series per station: the mean over its sensors at each timestamp.

    Records of one sensor (``sensor`` column) at one timestamp are averaged first, so that each sensor
    weighs once; the station value is then the mean over the sensors reporting at that timestamp:
    ``ssm(station, t) = mean_s ssm(s, t)``. Without a ``sensor`` column every record counts as one
    sensor. Records with a non-finite ``ssm`` are ignored.

    Parameters
    ----------
    obs : pandas.DataFrame
        The in-situ table (:attr:`InSituData.observations`): ``station_id``, ``time``, ``ssm`` at least;
        ``network``, ``lon``, ``lat``, ``depth_from``, ``depth_to`` are carried when present.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`SERIES_COLUMNS` (those of the meta columns present): ``depth_from`` and
        ``depth_to`` span the station's sensors, ``time`` is UTC, ``n_sensors`` counts the sensors
        averaged; sorted by station and time.

    Raises
    ------
    InputError
        A required column is missing.
    """
    _require(obs, ("station_id", "time", "ssm"), "station_series")
    df = pd.DataFrame({"station_id": obs["station_id"], "time": _utc(obs["time"]),
                       "ssm": pd.to_numeric(obs["ssm"], errors="coerce").astype("f8")})
    df = df[np.isfinite(df["ssm"].to_numpy())]
    if "sensor" in obs.columns:
        df["sensor"] = obs["sensor"]
        per_sensor = df.groupby(["station_id", "sensor", "time"], sort=False)["ssm"].mean().reset_index()
    else:   # no sensor column: every record counts as one sensor
        per_sensor = df
    g = per_sensor.groupby(["station_id", "time"], sort=True)["ssm"]
    series = pd.DataFrame({"ssm": g.mean(), "n_sensors": g.size().astype("int64")}).reset_index()
    out = _station_meta(obs).merge(series, on="station_id", how="inner")
    cols = [c for c in SERIES_COLUMNS if c in out.columns]
    return out[cols].sort_values(["station_id", "time"], kind="mergesort").reset_index(drop=True)


def _as_series(data: pd.DataFrame) -> pd.DataFrame:
    return data if "n_sensors" in data.columns else station_series(data)


def daily_means(data: pd.DataFrame, min_count: int = 1) -> pd.DataFrame:
    """Daily (UTC day) mean of each station's series.

    Parameters
    ----------
    data : pandas.DataFrame
        The in-situ table or the output of :func:`station_series` (recognised by its ``n_sensors``
        column); the table is first turned into station series, so several sensors are averaged per
        timestamp before the day's mean.
    min_count : int
        Days with fewer timestamps than this are dropped (e.g. 12 for at least half of an hourly day).

    Returns
    -------
    pandas.DataFrame
        ``station_id``, the station columns present (``network, lon, lat, depth_from, depth_to``),
        ``date`` (:class:`datetime.date`, UTC day), ``ssm`` (m3/m3, mean), ``n`` (timestamps averaged);
        sorted by station and date.

    Raises
    ------
    InputError
        A required column is missing, or ``min_count < 1``.
    """
    if int(min_count) < 1:
        raise InputError(f"daily_means: min_count must be >= 1, got {min_count}")
    series = _as_series(data)
    _require(series, ("station_id", "time", "ssm"), "daily_means")
    df = pd.DataFrame({"station_id": series["station_id"], "day": _utc(series["time"]).dt.floor("D"),
                       "ssm": pd.to_numeric(series["ssm"], errors="coerce").astype("f8")})
    g = df.groupby(["station_id", "day"], sort=True)["ssm"]
    daily = pd.DataFrame({"ssm": g.mean(), "n": g.count().astype("int64")}).reset_index()
    daily = daily[daily["n"] >= int(min_count)]
    daily["date"] = pd.DatetimeIndex(daily["day"]).date
    out = _station_meta(series).merge(daily.drop(columns="day"), on="station_id", how="inner")
    meta_cols = [c for c in _META_COLUMNS if c in out.columns]
    return out[["station_id", *meta_cols, "date", "ssm", "n"]].sort_values(
        ["station_id", "date"], kind="mergesort").reset_index(drop=True)


def overpass_means(data: pd.DataFrame, times: Union[pd.DataFrame, float, Sequence[float]], *,
                   window_hours: float = 1.0, clock: str = "utc", min_count: int = 1) -> pd.DataFrame:
    """Mean of each station's series within ``± window_hours`` of each satellite overpass.

    ``ssm(station, t0) = mean{ssm(station, t) : |t - t0| <= window_hours}`` (both ends included: with
    hourly data and the default ±1 h, an overpass on the hour averages three values).

    Parameters
    ----------
    data : pandas.DataFrame
        The in-situ table or the output of :func:`station_series`.
    times : pandas.DataFrame or float or sequence of float
        Either the overpasses, a table ``station_id, time`` (naive times are UTC), or a fixed
        overpass hour of day (or several, e.g. ``(6, 18)`` for Sentinel-1's descending and ascending
        passes), applied to every day the station's series covers.
    window_hours : float
        Half-width of the window, hours (> 0).
    clock : {"utc", "solar"}
        For fixed hours: UTC hours, or local mean solar hours (UTC = solar - lon / 15 h, from each
        station's ``lon``).
    min_count : int
        Overpasses with fewer values in their window are dropped.

    Returns
    -------
    pandas.DataFrame
        ``station_id``, the station columns present, ``time`` (the overpass, UTC), ``ssm``, ``n``;
        sorted by station and time.

    Raises
    ------
    InputError
        Missing columns, a bad ``clock``, hours outside [0, 24), ``window_hours <= 0`` or
        ``min_count < 1``.
    """
    if not window_hours > 0:
        raise InputError(f"overpass_means: window_hours must be > 0, got {window_hours}")
    if int(min_count) < 1:
        raise InputError(f"overpass_means: min_count must be >= 1, got {min_count}")
    series = _as_series(data)
    _require(series, ("station_id", "time", "ssm"), "overpass_means")
    ns = _epoch_ns(series["time"])
    sid_all = series["station_id"].to_numpy()
    ssm_all = series["ssm"].to_numpy(dtype="f8")
    order = np.lexsort((ns, sid_all))
    ns, sid_all, ssm_all = ns[order], sid_all[order], ssm_all[order]
    ok = np.isfinite(ssm_all)
    ns, sid_all, ssm_all = ns[ok], sid_all[ok], ssm_all[ok]
    meta = _station_meta(series)

    if isinstance(times, pd.DataFrame):
        _require(times, ("station_id", "time"), "overpass_means times")
        targets = pd.DataFrame({"station_id": times["station_id"].to_numpy(),
                                "t": _epoch_ns(times["time"])})
    else:
        if clock not in ("utc", "solar"):
            raise InputError(f"overpass_means: clock must be 'utc' or 'solar', got {clock!r}")
        hours = np.atleast_1d(np.asarray(times, dtype="f8"))
        if hours.size == 0 or np.any(~np.isfinite(hours)) or np.any((hours < 0) | (hours >= 24)):
            raise InputError(f"overpass_means: overpass hours must be in [0, 24), got {times!r}")
        if clock == "solar":
            _require(meta, ("lon",), "overpass_means with clock='solar'")
        targets = _fixed_overpasses(sid_all, ns, hours, meta, clock, window_hours)

    hour_ns = 3_600_000_000_000
    w = int(round(window_hours * hour_ns))
    rows_sid, rows_t, rows_ssm, rows_n = [], [], [], []
    starts = _group_bounds(sid_all)
    for sid, tg in targets.groupby("station_id", sort=True):
        if sid not in starts:
            continue
        a, b = starts[sid]
        t_st, v_st = ns[a:b], ssm_all[a:b]
        csum = np.concatenate([[0.0], np.cumsum(v_st)])
        t0 = np.sort(tg["t"].to_numpy(dtype="i8"))
        lo = np.searchsorted(t_st, t0 - w, side="left")
        hi = np.searchsorted(t_st, t0 + w, side="right")
        n = hi - lo
        keep = n >= int(min_count)
        rows_sid.append(np.full(int(keep.sum()), sid, dtype=object))
        rows_t.append(t0[keep])
        rows_ssm.append((csum[hi] - csum[lo])[keep] / n[keep])
        rows_n.append(n[keep].astype("int64"))
    if rows_sid:
        res = pd.DataFrame({"station_id": np.concatenate(rows_sid),
                            "time": pd.to_datetime(np.concatenate(rows_t), utc=True),
                            "ssm": np.concatenate(rows_ssm), "n": np.concatenate(rows_n)})
    else:
        res = pd.DataFrame({"station_id": pd.Series(dtype=object), "time": pd.Series(dtype="datetime64[ns, UTC]"),
                            "ssm": pd.Series(dtype="f8"), "n": pd.Series(dtype="int64")})
    out = meta.merge(res, on="station_id", how="inner")
    meta_cols = [c for c in _META_COLUMNS if c in out.columns]
    return out[["station_id", *meta_cols, "time", "ssm", "n"]].sort_values(
        ["station_id", "time"], kind="mergesort").reset_index(drop=True)


def _group_bounds(sorted_ids: np.ndarray) -> dict[Any, tuple[int, int]]:
    """``{id: (start, stop)}`` of the runs of equal values in a sorted array."""
    if len(sorted_ids) == 0:
        return {}
    change = np.flatnonzero(sorted_ids[1:] != sorted_ids[:-1]) + 1
    starts = np.concatenate([[0], change])
    stops = np.concatenate([change, [len(sorted_ids)]])
    return {sorted_ids[a]: (int(a), int(b)) for a, b in zip(starts, stops)}


def _fixed_overpasses(sids: np.ndarray, ns: np.ndarray, hours: np.ndarray, meta: pd.DataFrame, clock: str,
                      window_hours: float) -> pd.DataFrame:
    """Overpass instants (UTC ns) at fixed hours on every day each station's series covers."""
    day_ns = 86_400_000_000_000
    hour_ns = 3_600_000_000_000
    lon = dict(zip(meta["station_id"], meta["lon"])) if "lon" in meta.columns else {}
    out_sid, out_t = [], []
    for sid, (a, b) in _group_bounds(sids).items():
        offset = -float(lon[sid]) / 15.0 if clock == "solar" else 0.0   # UTC = solar - lon/15
        first = (ns[a] // day_ns - 1) * day_ns
        last = (ns[b - 1] // day_ns + 1) * day_ns
        days = np.arange(first, last + day_ns, day_ns, dtype="i8")
        t = (days[:, None] + np.round((hours[None, :] + offset) * hour_ns).astype("i8")).ravel()
        w = int(round(window_hours * hour_ns))
        t = t[(t + w >= ns[a]) & (t - w <= ns[b - 1])]
        out_sid.append(np.full(t.size, sid, dtype=object))
        out_t.append(t)
    if not out_sid:
        return pd.DataFrame({"station_id": pd.Series(dtype=object), "t": pd.Series(dtype="i8")})
    return pd.DataFrame({"station_id": np.concatenate(out_sid), "t": np.concatenate(out_t)})
