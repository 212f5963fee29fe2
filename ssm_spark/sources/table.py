"""A user's own matchup table (CSV or Parquet) to the matchup contract.

Users arrive with tables like ``Station, Date, Lat, Lon, Sentinel-1 VH, NDVI, LST, sm``. The
``table`` section of the configuration maps their column names to ours and says their units
(backscatter in dB or linear power, soil moisture and texture in fraction or percent). Optional
columns may be absent: the features that need them are dropped (no VV: no VV features; no NDVI: the
physics uses its radar vegetation descriptor), and a missing incidence angle is replaced by the
configured nominal angle, recorded in the report and in an ``incidence_nominal`` column so no one
mistakes it for a measurement. An optional ``group_id`` column (e.g. the field of a point) is
carried through for grouping cross-validation folds.

Nothing is guessed and nothing is dropped silently. Every row of the file ends in exactly one of
``kept``, ``masked`` (by reason: a masked land-cover class) or ``rejected`` (by reason), and the
counts add up (``rows_in = rows_kept + rows_masked + rows_rejected``). Reasons, first one wins:

- a missing or unparsable station, date, lon, lat or soil moisture (``"missing ssm"`` and
  ``"unparsable ssm"`` are told apart);
- a value out of physical range (backscatter above 5 dB or below -40 dB, NDVI outside [-1, 1], soil
  moisture outside [0, 1] m3/m3, lat outside [-90, 90], ...);
- duplicates: a row equal to an earlier one in every mapped column is rejected as an exact
  duplicate (the first is kept); rows of one station and date that differ are all rejected as
  conflicting duplicates (which one is right cannot be told).

An optional feature value that is not a number is set missing and counted by column
(``values_unparsable_set_missing``); a column where most values are not numbers is refused (wrong
column mapped, or decimal commas: ``table.decimal``).

Dates: with ``table.date_format`` every value is parsed with it. Without it, ISO dates (times and
offsets allowed; converted to UTC), ``YYYYMMDD`` (strings or integers) and ``YYYY/MM/DD`` are read
as such; ``D/M/Y``-like dates (``/ . -``) only when some day above 12 tells the order; a column
where no value tells it, or whose values mix formats, is refused (set ``table.date_format``).
Integers that are not ``YYYYMMDD`` (epoch seconds, spreadsheet serials) are refused.

CSV text: UTF-8 with or without a BOM (another encoding must be named in ``table.encoding``); the
separator is taken from ``table.delimiter`` or found among ``,``, ``;`` and tab (the one that splits
the header and the first rows into the same number of fields). Duplicated column names are
accepted when the columns are identical (recorded) and refused, naming both, when a mapped one
differs. A file with no data row, or with every row rejected, is refused.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from ssm_spark.config import TableConfig
from ssm_spark.environments import MASKED_LANDCOVER, environment
from ssm_spark.errors import InputError, InputIOError
from ssm_spark.sources.stacks import CLASS_BANDS, DYNAMIC_BANDS, STATIC_BANDS, VALID_RANGES

log = logging.getLogger(__name__)

REQUIRED = ("station_id", "date", "lon", "lat", "ssm")
OPTIONAL_IDS = ("network", "env", "group_id")
KNOWN = REQUIRED + OPTIONAL_IDS + DYNAMIC_BANDS + STATIC_BANDS + CLASS_BANDS
FEATURES = DYNAMIC_BANDS + STATIC_BANDS + CLASS_BANDS
#: column -> (low, high) inclusive, after unit conversion
RANGES = {**VALID_RANGES, "lon": (-180.0, 180.0), "lat": (-90.0, 90.0)}
#: Text read as a missing value (pandas' default list).
NA_TOKENS = frozenset(["", "#N/A", "#N/A N/A", "#NA", "-1.#IND", "-1.#QNAN", "-NaN", "-nan", "1.#IND", "1.#QNAN",
                       "<NA>", "N/A", "NA", "NULL", "NaN", "None", "n/a", "nan", "null"])
#: Above this fraction of unparsable values a column is refused rather than set missing.
MAX_UNPARSABLE = 0.5

_ISO = re.compile(r"^\d{4}-\d{2}-\d{2}([T ].*)?$")
_YMD8 = re.compile(r"^\d{8}(\.0+)?$")
_YMD_SLASH = re.compile(r"^\d{4}/\d{1,2}/\d{1,2}$")
_AMBIG = re.compile(r"^(\d{1,2})([./-])(\d{1,2})\2(\d{4})$")
_DEC_COMMA = re.compile(r"^[-+]?\d*,\d+$")


# ------------------------------------------------------------------------------------------ reading


def _sniff_delimiter(text: str, path: Path) -> str:
    lines = [ln for ln in text.splitlines()[:21] if ln.strip()]
    best, best_n = ",", 1
    for d in (",", ";", "\t"):
        counts = {len(r) for r in csv.reader(lines, delimiter=d)}
        if len(counts) == 1 and (n := counts.pop()) > best_n:
            best, best_n = d, n
    return best


def _read_csv(path: Path, cfg: TableConfig) -> tuple[list[str], pd.DataFrame, dict]:
    blob = path.read_bytes()
    enc = cfg.encoding or "utf-8-sig"
    try:
        text = blob.decode(enc)
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not valid {cfg.encoding or 'UTF-8'} text (byte 0x{blob[exc.start]:02x} at offset "
                         f"{exc.start}); name its encoding in table.encoding (e.g. latin-1, cp1250)") from None
    except LookupError:
        raise InputError(f"{path}: unknown encoding table.encoding={cfg.encoding!r}") from None
    info = {"encoding": cfg.encoding or "utf-8", "bom": blob.startswith(b"\xef\xbb\xbf")}
    delim = cfg.delimiter or _sniff_delimiter(text, path)
    info["delimiter"] = delim
    reader = csv.reader(io.StringIO(text), delimiter=delim)
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{path}: the file is empty (no header, no rows)") from None
    header = [h.strip() for h in header]
    rows = []
    try:
        for row in reader:
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if len(row) != len(header):
                raise InputError(f"{path}: line {reader.line_num} has {len(row)} fields, the header {len(header)} "
                                 f"(separator {delim!r}; an unquoted separator inside a value, or a cut line?)")
            rows.append(row)
    except csv.Error as exc:
        raise InputIOError(f"{path}: cannot read as a {delim!r}-separated CSV (line {reader.line_num}: {exc})") from exc
    raw = pd.DataFrame(rows, columns=list(range(len(header))), dtype=object) if rows else \
        pd.DataFrame({i: pd.Series([], dtype=object) for i in range(len(header))})
    return header, raw, info


def _read(path: Path, cfg: TableConfig) -> tuple[list[str], pd.DataFrame, dict]:
    """Header (names as in the file, duplicates included), columns by position, reading info."""
    if not path.exists():
        raise InputIOError(f"{path}: matchup table not found")
    try:
        if path.suffix.lower() in (".parquet", ".pq") or path.is_dir():
            df = pd.read_parquet(path)
            header = [str(c) for c in df.columns]
            return header, df.set_axis(range(len(header)), axis=1), {"format": "parquet"}
        header, raw, info = _read_csv(path, cfg)
        return header, raw, {"format": "csv", **info}
    except OSError as exc:
        raise InputIOError(f"{path}: cannot read as CSV or Parquet ({exc})") from exc
    except (ValueError, pd.errors.ParserError) as exc:
        if isinstance(exc, InputError):
            raise
        raise InputIOError(f"{path}: cannot read as CSV or Parquet ({exc})") from exc


def _col_ref(header: list[str], i: int) -> str:
    return f"{header[i]!r} (column {i + 1})"


def _resolve_duplicates(path: Path, header: list[str], raw: pd.DataFrame, used: set[str]) -> tuple[dict, list]:
    """Name -> position; duplicated names: identical copies accepted, differing mapped ones refused."""
    positions: dict[str, list[int]] = {}
    for i, h in enumerate(header):
        positions.setdefault(h, []).append(i)
    where, records = {}, []
    for name, pos in positions.items():
        where[name] = pos[0]
        if len(pos) == 1:
            continue
        first = raw[pos[0]].astype(str)
        diff = [p for p in pos[1:] if not first.equals(raw[p].astype(str))]
        rec = {"name": name, "columns": [p + 1 for p in pos], "identical": not diff}
        if diff:
            p = diff[0]
            row = int(np.flatnonzero((first != raw[p].astype(str)).to_numpy())[0])
            msg = (f"{path}: column name {name!r} appears {len(pos)} times (columns {[q + 1 for q in pos]}) and "
                   f"columns {pos[0] + 1} and {p + 1} differ (first at data row {row + 1}: {raw[pos[0]].iloc[row]!r} vs "
                   f"{raw[p].iloc[row]!r})")
            if name in used:
                raise InputError(msg + "; which one is meant cannot be told: rename one in the file")
            rec["used"] = False
            log.warning("%s; not mapped, so not used", msg)
            del where[name]
        records.append(rec)
    return where, records


# -------------------------------------------------------------------------------------------- dates


def _date_examples(values: pd.Series, mask: np.ndarray, n: int = 1) -> str:
    idx = np.flatnonzero(mask)[:n]
    items = [values.iloc[i] for i in idx]
    return ", ".join(f"{(v.item() if isinstance(v, np.generic) else v)!r} (data row {i + 1})" for i, v in zip(idx, items))


def parse_dates(values: pd.Series, fmt: str | None, where: str) -> tuple[np.ndarray, np.ndarray, str]:
    """Dates of a column, never guessed (see the module docstring).

    Parameters
    ----------
    values : pandas.Series
        The column as read (strings, integers, datetimes).
    fmt : str or None
        ``table.date_format``.
    where : str
        The file and column, for messages.

    Returns
    -------
    dates : numpy.ndarray of object
        ``datetime.date`` or None.
    unparsable : numpy.ndarray of bool
        Non-missing values that did not parse (rejected by the caller, counted).
    how : str
        The format used, e.g. ``"%d.%m.%Y (table.date_format)"`` or ``"ISO 8601"``.

    Raises
    ------
    InputError
        Ambiguous day/month order, mixed formats, integers that are not YYYYMMDD, or no value
        parsing at all.
    """
    n = len(values)
    if pd.api.types.is_datetime64_any_dtype(values):
        v = values
        if getattr(values.dt, "tz", None) is not None and not _all_midnight(values):
            v = values.dt.tz_convert("UTC")  # times: the UTC date (the matchup contract); local midnights are dates
        d = v.dt.date.to_numpy(dtype=object)
        return np.where(pd.isna(v).to_numpy(), None, d), np.zeros(n, bool), "datetime values"
    if values.dtype == object and len(values) and values.map(lambda x: isinstance(x, dt.date)).all():
        return values.to_numpy(dtype=object), np.zeros(n, bool), "date values"
    if pd.api.types.is_numeric_dtype(values):
        f = values.to_numpy(dtype="f8")
        ok = np.isfinite(f)
        if ok.any() and (np.any(f[ok] != np.round(f[ok])) or np.any((f[ok] < 1000_01_01) | (f[ok] > 9999_12_31))):
            bad = ok & ((f != np.round(f)) | (f < 1000_01_01) | (f > 9999_12_31))
            raise InputError(f"{where}: numeric dates such as {_date_examples(values, bad)} are not YYYYMMDD "
                             "(epoch seconds? spreadsheet serial days?); write them as YYYY-MM-DD")
        s = pd.Series(np.where(ok, np.nan_to_num(f).astype(np.int64).astype(str), ""), dtype=object)
        fmt = fmt or "%Y%m%d"
    else:
        s = values.astype(str).str.strip()
    missing = s.isin(NA_TOKENS).to_numpy()
    present = ~missing
    if fmt is not None:
        how = f"{fmt} (table.date_format)" if not pd.api.types.is_numeric_dtype(values) else fmt
        parsed = pd.to_datetime(s.where(present), format=fmt, errors="coerce")
        return _finish_dates(parsed, present, values, where, how)
    kind = np.full(n, "", dtype=object)
    for name, rx in (("iso", _ISO), ("ymd8", _YMD8), ("ymd/", _YMD_SLASH), ("ambig", _AMBIG)):
        hit = present & (kind == "") & s.str.match(rx).to_numpy()
        kind[hit] = name
    kinds = [k for k in ("iso", "ymd8", "ymd/", "ambig") if (kind == k).any()]
    label = {"iso": "YYYY-MM-DD", "ymd8": "YYYYMMDD", "ymd/": "YYYY/MM/DD", "ambig": "D/M/YYYY or M/D/YYYY"}
    if not kinds:
        if not present.any():
            return np.full(n, None, dtype=object), np.zeros(n, bool), "none"
        raise InputError(f"{where}: dates such as {_date_examples(values, present)} are in no format read without "
                         "being told (YYYY-MM-DD, YYYYMMDD, YYYY/MM/DD, D/M/YYYY with a day above 12); set "
                         "table.date_format (e.g. '%d %b %Y')")
    if len(kinds) > 1:
        ex = "; ".join(f"{label[k]}: {_date_examples(values, kind == k)}" for k in kinds)
        raise InputError(f"{where}: the dates mix formats ({ex}); fix the file or set table.date_format")
    k = kinds[0]
    sel = kind == k
    if k == "iso":
        times = s[sel].str.slice(11)
        if times.str.fullmatch(r"(00:00(:00(\.0+)?)?)?\s*(Z|[+-]\d\d:?\d\d)?").all():  # dates, maybe at midnight
            parsed = pd.to_datetime(s.where(sel).str.slice(0, 10), format="%Y-%m-%d", errors="coerce")
            return _finish_dates(parsed, present, values, where, "ISO 8601")
        parsed = pd.to_datetime(s.where(sel), format="ISO8601", errors="coerce", utc=True)
        return _finish_dates(parsed, present, values, where, "ISO 8601 (UTC)")
    if k == "ymd8":
        parsed = pd.to_datetime(s.where(sel).str.split(".").str[0], format="%Y%m%d", errors="coerce")
        return _finish_dates(parsed, present, values, where, "%Y%m%d")
    if k == "ymd/":
        parsed = pd.to_datetime(s.where(sel), format="%Y/%m/%d", errors="coerce")
        return _finish_dates(parsed, present, values, where, "%Y/%m/%d")
    parts = s.where(sel).str.extract(_AMBIG)
    a = pd.to_numeric(parts[0], errors="coerce").to_numpy()
    b = pd.to_numeric(parts[2], errors="coerce").to_numpy()
    seps = sorted(set(parts[1].dropna()))
    if len(seps) > 1:
        raise InputError(f"{where}: the dates mix separators {seps}; fix the file or set table.date_format")
    sep = seps[0]
    day_first, month_first = np.nansum(a > 12) > 0, np.nansum(b > 12) > 0
    if day_first and month_first:
        raise InputError(f"{where}: some dates have a first number above 12 ({_date_examples(values, sel & (a > 12))}) "
                         f"and others a second one ({_date_examples(values, sel & (b > 12))}): neither day/month nor "
                         "month/day fits every row; fix the file or set table.date_format")
    if not (day_first or month_first):
        raise InputError(f"{where}: dates such as {_date_examples(values, sel)} can be day/month or month/day and no "
                         f"day above 12 tells which; set table.date_format to '%d{sep}%m{sep}%Y' or "
                         f"'%m{sep}%d{sep}%Y'")
    f = f"%d{sep}%m{sep}%Y" if day_first else f"%m{sep}%d{sep}%Y"
    parsed = pd.to_datetime(s.where(sel), format=f, errors="coerce")
    first = np.flatnonzero(sel & ((a > 12) if day_first else (b > 12)))[0]
    return _finish_dates(parsed, present, values, where,
                         f"{f} (inferred: {values.iloc[first]!r} in data row {first + 1} has a "
                         f"{'day' if day_first else 'day in second place'} above 12)")


def _all_midnight(v: pd.Series) -> bool:
    ok = v.dropna()
    return bool(len(ok)) and bool(((ok.dt.hour == 0) & (ok.dt.minute == 0) & (ok.dt.second == 0)).all())


def _finish_dates(parsed: pd.Series, present: np.ndarray, values: pd.Series, where: str, how: str):
    if getattr(parsed.dt, "tz", None) is not None:
        parsed = parsed.dt.tz_convert("UTC").dt.tz_localize(None)
    ok = parsed.notna().to_numpy()
    unparsable = present & ~ok
    if present.any() and not ok.any():
        raise InputError(f"{where}: no date parses as {how}, e.g. {_date_examples(values, present)}; check "
                         "table.date_format")
    dates = np.where(ok, parsed.dt.date.to_numpy(dtype=object), None)
    return dates, unparsable, how


# ------------------------------------------------------------------------------------------- values


def _numeric(values: pd.Series, decimal: str) -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Numbers of a column; returns (values, missing, unparsable)."""
    if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
        v = values.astype("f8")
        return v, v.isna().to_numpy(), np.zeros(len(v), bool)
    s = values.astype(str).str.strip()
    missing = s.isin(NA_TOKENS).to_numpy() | values.isna().to_numpy()
    if decimal == ",":
        s = s.str.replace(".", "", regex=False).str.replace(",", ".", regex=False)
    v = pd.to_numeric(s.where(~missing), errors="coerce").astype("f8")
    return v, missing, (~missing) & v.isna().to_numpy()


def _check_units(df: pd.DataFrame, cfg: TableConfig, ref: dict) -> None:
    """Refuse values that contradict the configured unit (they would load as wrong numbers)."""
    def refuse(c: str, what: str, key: str, value: str) -> None:
        v = df[c].dropna()
        raise InputError(f"{ref[c]} (for {c}): {what} (range {v.min():g} .. {v.max():g}) contradicts table.{key}="
                         f"{getattr(cfg, key)}; set table.{key}={value}")

    def share(c: str, cond) -> float:
        v = df[c].dropna() if c in df else pd.Series([], dtype="f8")
        return float(cond(v).mean()) if len(v) >= 3 else np.nan

    if cfg.ssm_unit == "fraction" and share("ssm", lambda v: v > 1.0) > 0.5:
        refuse("ssm", "most values are above 1 (volume percent?)", "ssm_unit", "percent")
    if cfg.ssm_unit == "percent" and share("ssm", lambda v: v <= 1.0) == 1.0:
        refuse("ssm", "every value is at most 1 % (fractions, m3/m3?)", "ssm_unit", "fraction")
    for pol in ("vv_db", "vh_db"):
        if cfg.backscatter_unit == "db" and share(pol, lambda v: v > 0) == 1.0:
            refuse(pol, "every value is positive (linear power?)", "backscatter_unit", "linear")
        if cfg.backscatter_unit == "linear" and share(pol, lambda v: v <= 0) > 0.5:
            refuse(pol, "most values are not positive (dB?)", "backscatter_unit", "db")
    for tex in ("clay_pct", "sand_pct"):
        if cfg.texture_unit == "percent" and share(tex, lambda v: v <= 1.0) == 1.0:
            refuse(tex, "every value is at most 1 % (fractions?)", "texture_unit", "fraction")
        if cfg.texture_unit == "fraction" and share(tex, lambda v: v > 1.0) > 0.5:
            refuse(tex, "most values are above 1 (percent?)", "texture_unit", "percent")


def import_table(path: str | Path, cfg: TableConfig) -> tuple[pd.DataFrame, dict]:
    """Read a user's matchup table and return it in the matchup contract, with a report.

    Parameters
    ----------
    path : path
        CSV, or Parquet (file or dataset folder).
    cfg : TableConfig
        Column mapping (ours -> theirs), units, date format, encoding, nominal incidence angle,
        network and default env.

    Returns
    -------
    table : pandas.DataFrame
        ``station_id, network[, group_id], lon, lat, date``, the feature columns present, ``ssm``,
        ``env``, and ``incidence_nominal`` (bool).
    report : dict
        The row ledger (``rows_in = rows_kept + rows_masked + rows_rejected``, by reason), values set
        missing by column, columns mapped, absent optional columns, duplicated column names, units,
        how the dates were read, the CSV's encoding and separator, and whether the nominal incidence
        angle was used.

    Raises
    ------
    InputError
        A required column missing (named, with the columns the file has), a differing duplicated
        column, ambiguous or mixed dates, a mostly non-numeric column, no data row, every row
        rejected.
    InputIOError
        The file is missing or cannot be parsed.
    """
    path = Path(path)
    mapping = {ours: theirs for ours, theirs in cfg.columns.items()}
    unknown = sorted(set(mapping) - set(KNOWN))
    if unknown:
        raise InputError(f"table.columns: {unknown} are not columns of the matchup contract (known: {list(KNOWN)})")
    for ours in KNOWN:
        mapping.setdefault(ours, ours)
    header, raw, reading = _read(path, cfg)
    where, dup_cols = _resolve_duplicates(path, header, raw, {mapping[c] for c in cfg.columns})
    present = {ours: theirs for ours, theirs in mapping.items() if theirs in where}
    missing_req = [c for c in REQUIRED if c not in present]
    if missing_req:
        raise InputError(
            f"{path}: required column(s) {[mapping[c] for c in missing_req]} (for {missing_req}) not found; the file has "
            f"{header}. Map them in the config: table.columns.<ours>=<their name>")
    n_in = len(raw)
    if n_in == 0:
        raise InputError(f"{path}: no data rows (only a header: {header})")
    col = {ours: raw[where[theirs]].reset_index(drop=True) for ours, theirs in present.items()}
    ref = {ours: f"{path}: column {_col_ref(header, where[theirs])}" for ours, theirs in present.items()}
    reason = pd.Series(pd.NA, index=range(n_in), dtype="object")

    def reject(mask, why: str) -> None:
        nonlocal reason
        reason = reason.mask(reason.isna() & pd.Series(np.asarray(mask, bool)), why)

    df = pd.DataFrame(index=range(n_in))
    # identifiers
    for c in ("station_id", "network", "group_id", "env"):
        if c in col:
            s = col[c].astype(str).str.strip()
            miss = s.isin(NA_TOKENS).to_numpy() | col[c].isna().to_numpy()
            df[c] = s.where(~miss, None)
            if c == "station_id":
                reject(miss, "missing station_id")
    if "network" not in df:
        df["network"] = cfg.network
    # dates
    dates, bad_date, date_how = parse_dates(col["date"], cfg.date_format, ref["date"])
    df["date"] = dates
    reject(pd.isna(dates) & ~bad_date, "missing date")
    reject(bad_date, f"unparsable date (as {date_how.split(' (')[0]})")
    # numbers
    unparsable_set_missing: dict[str, int] = {}
    for c in ("lon", "lat", "ssm") + FEATURES:
        if c not in col:
            continue
        v, miss, bad = _numeric(col[c], cfg.decimal)
        n_bad, n_present = int(bad.sum()), int((~miss).sum())
        if n_bad and n_bad > MAX_UNPARSABLE * n_present:
            hint = ("; decimal commas? set table.decimal=','" if cfg.decimal == "." and
                    col[c].astype(str).str.strip()[bad].str.match(_DEC_COMMA).any() else "; is the right column mapped?")
            raise InputError(f"{ref[c]} (for {c}): {n_bad} of {n_present} values are not numbers, e.g. "
                             f"{_date_examples(col[c], bad)}{hint}")
        df[c] = v
        if c in ("lon", "lat", "ssm"):
            reject(miss, f"missing {c}")
            reject(bad, f"unparsable {c}")
        elif n_bad:
            unparsable_set_missing[c] = n_bad
            log.warning("%s (for %s): %d value(s) are not numbers and are set missing, e.g. %s", ref[c], c, n_bad,
                        _date_examples(col[c], bad))
    _check_units(df, cfg, ref)
    # units
    for pol in ("vv_db", "vh_db"):
        if pol in df and cfg.backscatter_unit == "linear":
            with np.errstate(divide="ignore", invalid="ignore"):
                bad = df[pol].notna() & (df[pol] <= 0)
                reject(bad, f"{pol} not positive (linear power)")
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
    for c, (lo, hi) in RANGES.items():
        if c in df:
            bad = (df[c].notna() & ((df[c] < lo) | (df[c] > hi))) | np.isinf(df[c])
            reject(bad, f"{c} out of range [{lo}, {hi}]")
    # duplicates among the rows still in: exact copies (the first is kept), conflicting ones (none is)
    ours_cols = [c for c in df.columns if c != "incidence_nominal"]
    alive = np.flatnonzero(reason.isna().to_numpy())
    exact = np.zeros(n_in, bool)
    exact[alive[df[ours_cols].iloc[alive].astype(str).duplicated(keep="first").to_numpy()]] = True
    reject(exact, "exact duplicate of an earlier row")
    alive = reason.isna().to_numpy()
    sd = df[["station_id", "date"]].astype(str)[alive]
    conflict = np.zeros(n_in, bool)
    conflict[np.flatnonzero(alive)[sd.duplicated(keep=False).to_numpy()]] = True
    reject(conflict, "conflicting duplicate (same station and date, different values)")
    # masked land-cover classes (water, built-up, snow/ice): not soil, no matchup
    masked_reason = pd.Series(pd.NA, index=range(n_in), dtype="object")
    if "landcover" in df:
        for code, flag in MASKED_LANDCOVER.items():
            m = reason.isna() & masked_reason.isna() & (df["landcover"] == code)
            masked_reason = masked_reason.mask(m, f"landcover {code} ({flag.name})")
    rejected = reason.notna()
    masked = masked_reason.notna() & ~rejected
    kept = df[~rejected & ~masked].copy()
    if kept.empty:
        raise InputError(f"{path}: every one of the {n_in} rows was rejected or masked: "
                         f"{dict(reason[rejected].value_counts())} {dict(masked_reason[masked].value_counts())}")
    # environment
    if "env" not in kept:
        if "landcover" in kept:
            env = environment(kept["landcover"].to_numpy(), kept["climate"].to_numpy() if "climate" in kept else None)
            kept["env"] = np.where(pd.isna(env), cfg.default_env, env)
        else:
            kept["env"] = cfg.default_env
    else:
        kept["env"] = kept["env"].where(kept["env"].notna(), cfg.default_env)
    front = ["station_id", "network"] + (["group_id"] if "group_id" in kept else []) + ["lon", "lat", "date"]
    feats = [c for c in FEATURES if c in kept]
    out = kept[front + feats + ["ssm", "env", "incidence_nominal"]].reset_index(drop=True)
    for c in ("landcover", "climate"):
        if c in out:
            out[c] = out[c].astype("Int64")
    locs = out.groupby("station_id")[["lon", "lat"]].nunique()
    sites = out.drop_duplicates("station_id").groupby(["lon", "lat"]).size()
    report = {
        "file": str(path), "reading": reading, "dates": date_how,
        "rows_in": n_in, "rows_kept": len(out), "rows_masked": int(masked.sum()), "rows_rejected": int(rejected.sum()),
        "rejected_by_reason": {str(k): int(v) for k, v in reason[rejected].value_counts().items()},
        "masked_by_reason": {str(k): int(v) for k, v in masked_reason[masked].value_counts().items()},
        "values_unparsable_set_missing": unparsable_set_missing,
        "columns_mapped": {k: v for k, v in present.items() if k in KNOWN},
        "duplicate_column_names": dup_cols,
        "absent_optional": [c for c in FEATURES if c not in present],
        "units": {"backscatter": cfg.backscatter_unit, "ssm": cfg.ssm_unit, "texture": cfg.texture_unit},
        "nominal_incidence_deg": float(cfg.nominal_incidence_deg) if nominal else None,
        "stations": int(out["station_id"].nunique()),
        "stations_with_several_locations": int((locs.max(axis=1) > 1).sum()),
        "locations_shared_by_several_stations": int((sites > 1).sum()),
    }
    if "group_id" in out:
        report["groups"] = int(out["group_id"].nunique())
    assert report["rows_kept"] + report["rows_masked"] + report["rows_rejected"] == n_in
    if nominal:
        log.warning("%s: no incidence angle; the nominal %.1f deg is used for every row", path, cfg.nominal_incidence_deg)
    if "ndvi" not in present:
        log.info("%s: no NDVI column: no optical vegetation descriptor (the physics uses the radar one)", path)
    for rec in dup_cols:
        if rec["identical"]:
            log.info("%s: column name %r appears in columns %s with identical values; the first is used", path,
                     rec["name"], rec["columns"])
    log.info("%s: %d rows in, %d kept, %d masked %s, %d rejected %s", path, n_in, len(out), report["rows_masked"],
             report["masked_by_reason"], report["rows_rejected"], report["rejected_by_reason"])
    return out, report
