"""A user's own matchup table (CSV or Parquet) to the matchup contract.

Users arrive with tables like ``Station, Date, Lat, Lon, Sentinel-1 VH, NDVI, LST, sm``. The
``table`` section of the configuration maps their column names to ours and says their units
(backscatter in dB or linear power, soil moisture and texture in fraction or percent). Optional
columns may be absent: the features that need them are dropped (no VV: no VV features), and a
missing incidence angle is replaced by the configured nominal angle, recorded in the report and in
an ``incidence_nominal`` column so no one mistakes it for a measurement.

Rows with values out of physical range (backscatter above 5 dB or below -40 dB, NDVI outside
[-1, 1], soil moisture outside [0, 1] m3/m3, missing date, station or soil moisture) are rejected
with their reason and counted; the counts in = kept + rejected add up.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from ssm_spark.config import TableConfig
from ssm_spark.environments import environment
from ssm_spark.errors import InputError, InputIOError
from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, STATIC_BANDS, VALID_RANGES

log = logging.getLogger(__name__)

REQUIRED = ("station_id", "date", "lon", "lat", "ssm")
KNOWN = REQUIRED + ("network", "env") + DYNAMIC_BANDS + STATIC_BANDS + CLASS_BANDS
RANGES = VALID_RANGES  # column -> (low, high) inclusive, after unit conversion


def _read(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise InputIOError(f"{path}: matchup table not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq") or path.is_dir():
            return pd.read_parquet(path)
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputIOError(f"{path}: cannot read as CSV or Parquet ({exc})") from exc


def import_table(path: str | Path, cfg: TableConfig) -> tuple[pd.DataFrame, dict]:
    """Read a user's matchup table and return it in the matchup contract, with a report.

    Parameters
    ----------
    path : path
        CSV, or Parquet (file or dataset folder).
    cfg : TableConfig
        Column mapping (ours -> theirs), units, nominal incidence angle, network and default env.

    Returns
    -------
    table : pandas.DataFrame
        ``station_id, network, lon, lat, date``, the feature columns present, ``ssm``, ``env``, and
        ``incidence_nominal`` (bool).
    report : dict
        Rows in / kept / rejected (by reason), columns mapped, absent optional columns, units, and
        whether the nominal incidence angle was used.

    Raises
    ------
    InputError
        If a required column is missing (named, with the columns the file has).
    """
    path = Path(path)
    raw = _read(path)
    mapping = {ours: theirs for ours, theirs in cfg.columns.items()}
    for ours in KNOWN:
        mapping.setdefault(ours, ours)
    present = {ours: theirs for ours, theirs in mapping.items() if theirs in raw.columns}
    missing_req = [c for c in REQUIRED if c not in present]
    if missing_req:
        raise InputError(
            f"{path}: required column(s) {[mapping[c] for c in missing_req]} (for {missing_req}) not found; the file has "
            f"{list(raw.columns)}. Map them in the config: table.columns.<ours>=<their name>")
    df = pd.DataFrame({ours: raw[theirs] for ours, theirs in present.items()})
    n_in = len(df)
    df["station_id"] = df["station_id"].astype(str)
    df["network"] = df["network"].astype(str) if "network" in df else cfg.network
    df["date"] = pd.to_datetime(df["date"], format=cfg.date_format, errors="coerce").dt.date
    for c in df.columns:
        if c in RANGES or c in STATIC_BANDS or c in DYNAMIC_BANDS or c in ("lon", "lat"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    # units
    for pol in ("vv_db", "vh_db"):
        if pol in df and cfg.backscatter_unit == "linear":
            with np.errstate(divide="ignore", invalid="ignore"):
                df[pol] = np.where(df[pol] > 0, 10.0 * np.log10(df[pol].where(df[pol] > 0)), np.nan)
    if cfg.ssm_unit == "percent":
        df["ssm"] = df["ssm"] / 100.0
    for tex in ("clay_pct", "sand_pct"):
        if tex in df and cfg.texture_unit == "fraction":
            df[tex] = df[tex] * 100.0
    nominal = "incidence_deg" not in df
    if nominal:
        if cfg.nominal_incidence_deg is None:
            raise InputError(f"{path}: no incidence angle column and no table.nominal_incidence_deg configured")
        df["incidence_deg"] = float(cfg.nominal_incidence_deg)
    df["incidence_nominal"] = nominal
    if "vv_db" not in df and "vh_db" not in df:
        raise InputError(f"{path}: neither VV nor VH backscatter found (map table.columns.vv_db / vh_db)")
    # rejections, first reason wins, every row counted once
    reason = pd.Series(pd.NA, index=df.index, dtype="object")
    for c in ("station_id", "date", "lon", "lat", "ssm"):
        bad = df[c].isna() if c != "station_id" else df[c].isin(["", "nan", "None"])
        reason = reason.mask(reason.isna() & bad, f"missing {c}")
    for c, (lo, hi) in RANGES.items():
        if c in df:
            bad = df[c].notna() & ((df[c] < lo) | (df[c] > hi))
            reason = reason.mask(reason.isna() & bad, f"{c} out of range [{lo}, {hi}]")
    rejected = df[reason.notna()].assign(reason=reason[reason.notna()])
    kept = df[reason.isna()].copy()
    # environment
    if "env" not in kept:
        if "landcover" in kept:
            env = environment(kept["landcover"].to_numpy(), kept["climate"].to_numpy() if "climate" in kept else None)
            kept["env"] = np.where(pd.isna(env), cfg.default_env, env)
        else:
            kept["env"] = cfg.default_env
    front = ["station_id", "network", "lon", "lat", "date"]
    feats = [c for c in DYNAMIC_BANDS + STATIC_BANDS + CLASS_BANDS if c in kept]
    out = kept[front + feats + ["ssm", "env", "incidence_nominal"]].reset_index(drop=True)
    report = {
        "file": str(path), "rows_in": n_in, "rows_kept": len(out), "rows_rejected": len(rejected),
        "rejected_by_reason": {str(k): int(v) for k, v in rejected["reason"].value_counts().items()},
        "columns_mapped": {k: v for k, v in present.items() if k in KNOWN},
        "absent_optional": [c for c in DYNAMIC_BANDS + STATIC_BANDS + CLASS_BANDS if c not in present],
        "units": {"backscatter": cfg.backscatter_unit, "ssm": cfg.ssm_unit, "texture": cfg.texture_unit},
        "nominal_incidence_deg": float(cfg.nominal_incidence_deg) if nominal else None,
        "stations": int(out["station_id"].nunique()),
    }
    assert report["rows_kept"] + report["rows_rejected"] == n_in
    if nominal:
        log.warning("%s: no incidence angle; the nominal %.1f deg is used for every row", path, cfg.nominal_incidence_deg)
    log.info("%s: %d rows in, %d kept, %d rejected %s", path, n_in, len(out), len(rejected), report["rejected_by_reason"])
    return out, report
