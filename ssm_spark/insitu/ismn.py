"""ISMN station downloads to the in-situ table (the series and means are in :mod:`ssm_spark.insitu.series`).

:func:`read_ismn` reads a download of the International Soil Moisture Network (Dorigo et al. 2011,
2021) in either native format, with the ``ismn`` package of TU Wien doing the file parsing:

* **header_values** (``Data_separate_files_header_*``): each ``.stm`` file starts with a header line
  ``CSE NETWORK STATION LAT LON ELEVATION DEPTH_FROM DEPTH_TO INSTRUMENT`` followed by records
  ``YYYY/MM/DD HH:MM VALUE FLAG ORIG_FLAG``;
* **CEOP separated** (``Data_separate_files_*``): no header; every record repeats the station fields
  (``DATE TIME DATE TIME CSE NETWORK STATION LAT LON ELEVATION DEPTH_FROM DEPTH_TO VALUE FLAG
  ORIG_FLAG``) and the depths come from the file name.

Both are laid out ``<root>/<NETWORK>/<STATION>/<CSE>_<NETWORK>_<STATION>_<var>_<from>_<to>_<instrument>
_<start>_<end>.stm`` with a ``*_static_variables.csv`` per station (ESA CCI land cover, Koppen-Geiger
climate, HWSD soil) and ``Metadata.xml``; a zip archive of the same is read as is. Files lying
directly in a network folder (``<NETWORK>/<file>.stm``, as in the ismn package's own test data) are
read too.

Selection (docs/contracts.md, "Tables": in situ): ISMN quality flag ``G`` only, sensors with
``depth_to <= 0.05 m`` (plus a tolerance so that the 0.0508 m = 2 inch SCAN sensors count), values in
the physical range ``[0, 0.6] m3/m3``. Nothing is dropped silently: every record read lands in
exactly one of kept / rejected by depth / rejected by flag (per flag) / rejected as out of range /
rejected as malformed, and a file that cannot be parsed is quarantined with its reason while the
rest of the download goes on.

Times
-----
ISMN distributes every record in UTC. ``time`` columns here are tz-aware ``datetime64[ns, UTC]``
(Spark and Parquet then carry the instant unambiguously, whatever the session time zone); functions
that take times accept tz-aware values (converted to UTC) or naive values (taken as UTC). Daily
means are over UTC days (``date`` is a :class:`datetime.date`), matching the UTC dates of the
Sentinel-1 acquisitions.

Why not ``ismn.interface.ISMN_Interface``
-----------------------------------------
``ISMN_Interface`` (ismn 1.5.4) writes a metadata index to ``<data>/python_metadata/`` unless given
``meta_path`` (the input folder is often read-only), caches it under the download folder's *name*
only (two downloads with the same name share a stale index), prints to stdout, skips malformed files
without telling the caller, and fails with ``TypeError`` on files that lie directly in a network
folder. This module therefore walks the files itself and uses the package's lower-level
:class:`ismn.filehandlers.DataFile` and :class:`ismn.filehandlers.StaticMetaFile` per file: nothing is
written anywhere except temporary extractions from a zip archive (into ``temp_dir``), and every
failure is reported.

References
----------
Dorigo, W. A. et al. (2011), The International Soil Moisture Network, Hydrol. Earth Syst. Sci. 15,
1675-1698. Dorigo, W. A. et al. (2013), Global automated quality control of in situ soil moisture data
from the International Soil Moisture Network, Vadose Zone J. 12(3) (the quality flags). Dorigo, W. et
al. (2021), Hydrol. Earth Syst. Sci. 25, 5749-5804. Beck, H. E. et al. (2018), Sci. Data 5, 180214
(Koppen-Geiger classes 1-30).
"""

from __future__ import annotations

import logging
import re
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Optional, Sequence, Union

import numpy as np
import pandas as pd
from tqdm import tqdm

from ssm_spark.errors import InputError

log = logging.getLogger(__name__)

#: The in-situ table (docs/contracts.md, "Tables"), then ``sensor`` (instrument and depth, for diagnostics).
OBSERVATION_COLUMNS: tuple[str, ...] = ("station_id", "network", "lon", "lat", "depth_from", "depth_to", "time",
                                        "ssm", "flag", "sensor")
STATION_COLUMNS: tuple[str, ...] = ("station_id", "network", "station", "lon", "lat", "elevation", "landcover",
                                    "worldcover", "climate", "climate_class", "n_sensors", "sensors", "n_obs",
                                    "first_time", "last_time")

#: ESA CCI land cover (the classification in ISMN's static-variable files) -> nearest ESA WorldCover
#: class, following the CCI legend's IPCC grouping (10-40 agriculture, 50-100 and 160 forest, 110/130
#: grassland, 120-122 shrubland, 140 lichens and mosses, 150-153 sparse, 170 flooded saline trees,
#: 180 flooded shrub/herbaceous, 190 urban, 200-202 bare, 210 water, 220 snow and ice).
CCI_TO_WORLDCOVER: dict[int, int] = {
    **{c: 40 for c in (10, 11, 12, 20, 30, 40)},
    **{c: 10 for c in (50, 60, 61, 62, 70, 71, 72, 80, 81, 82, 90, 100, 160)},
    110: 30, 130: 30, 120: 20, 121: 20, 122: 20, 140: 100,
    **{c: 60 for c in (150, 151, 152, 153, 200, 201, 202)},
    170: 95, 180: 90, 190: 50, 210: 80, 220: 70,
}
#: Koppen-Geiger code -> class number of Beck et al. (2018), 1-30 (the numbering of the ``climate``
#: band and :mod:`ssm_spark.environments`). Peel et al. (2007) codes that Beck merged: ``As`` -> ``Aw``;
#: ``BWn``/``BSn`` (fog deserts/steppes) -> their hot variant.
KOPPEN_CLASS: dict[str, int] = {
    "Af": 1, "Am": 2, "Aw": 3, "As": 3, "BWh": 4, "BWn": 4, "BWk": 5, "BSh": 6, "BSn": 6, "BSk": 7,
    "Csa": 8, "Csb": 9, "Csc": 10, "Cwa": 11, "Cwb": 12, "Cwc": 13, "Cfa": 14, "Cfb": 15, "Cfc": 16,
    "Dsa": 17, "Dsb": 18, "Dsc": 19, "Dsd": 20, "Dwa": 21, "Dwb": 22, "Dwc": 23, "Dwd": 24,
    "Dfa": 25, "Dfb": 26, "Dfc": 27, "Dfd": 28, "ET": 29, "EF": 30,
}
_NO_VALUE = {"", "unknown", "masked", "nan", "none", "null"}
_DEPTH_EPS = 1e-9
_STM = re.compile(r"\.stm$", re.IGNORECASE)


@dataclass
class InSituData:
    """What :func:`read_ismn` returns.

    Attributes
    ----------
    observations : pandas.DataFrame
        The in-situ table, one row per kept record, columns :data:`OBSERVATION_COLUMNS`:
        ``station_id`` (``"<network>.<station>"``), ``network``, ``lon``, ``lat`` (degrees, the
        station's), ``depth_from``, ``depth_to`` (m, the sensor's), ``time`` (``datetime64[ns, UTC]``),
        ``ssm`` (m3/m3), ``flag`` (the ISMN flag), ``sensor`` (``"<instrument>@<from>-<to>m"``);
        sorted by station, time and sensor.
    stations : pandas.DataFrame
        One row per station with at least one kept record, columns :data:`STATION_COLUMNS`:
        ``landcover`` (ESA CCI code of the latest epoch in the station's static-variable file),
        ``worldcover`` (its nearest WorldCover class, :data:`CCI_TO_WORLDCOVER`), ``climate``
        (Koppen-Geiger code from the file, Peel et al. 2007), ``climate_class`` (Beck et al. 2018 class
        1-30, :data:`KOPPEN_CLASS`), nullable where the file has none; ``n_sensors`` and ``sensors``
        (``"; "``-joined) count the sensors that contributed, ``n_obs`` the kept records.
    report : dict
        JSON-serialisable counts and reasons; see :func:`read_ismn`.
    """

    observations: pd.DataFrame
    stations: pd.DataFrame
    report: dict = field(default_factory=dict)


class _Quarantine(Exception):
    """A station file that cannot be used; the message is the reason recorded in the report."""


# -- reading -------------------------------------------------------------------------------------------
def read_ismn(path: Union[str, Path], *, max_depth_m: float = 0.05, depth_tolerance_m: float = 0.0008,
              good_flags: Sequence[str] = ("G",), variable: str = "soil_moisture",
              valid_range: Optional[tuple[float, float]] = (0.0, 0.6),
              temp_dir: Union[str, Path, None] = None) -> InSituData:
    """Read an ISMN download (header_values or CEOP separated, folder or zip) into the in-situ table.

    Every ``.stm`` file under ``path`` is found; files of other variables are skipped (counted); each
    remaining file is read with :class:`ismn.filehandlers.DataFile` and its records are split into
    kept and rejected, in this order:

    1. **depth**: the whole sensor is rejected when ``depth_to > max_depth_m + depth_tolerance_m``
       (0.05 + 0.0008 m keeps the 0.0508 m SCAN sensors and rejects cosmic-ray probes, 0-0.19 m);
    2. **malformed**: a record whose time, value or flag could not be parsed;
    3. **flag**: a record is good when every comma-separated part of its flag is in ``good_flags``
       (``"D05,D04"`` is rejected under ``G`` only); rejections are counted per flag string;
    4. **range**: a good record with ``ssm`` outside ``valid_range`` (inclusive bounds).

    Parameters
    ----------
    path : str or Path
        The folder extracted from an ISMN download (it holds one folder per network, and
        ``Metadata.xml``), or the downloaded ``.zip``.
    max_depth_m : float
        Deepest allowed sensor bottom (``depth_to``), m.
    depth_tolerance_m : float
        Added to ``max_depth_m`` (the 2-inch = 0.0508 m sensors of SCAN and USCRN count as 5 cm).
    good_flags : sequence of str
        ISMN quality flags accepted (``G`` = good; Dorigo et al. 2013).
    variable : str
        ISMN variable name (file name code ``sm`` = ``soil_moisture``). The value column is ``ssm``
        whatever the variable.
    valid_range : (float, float) or None
        Physical range of the values; records outside are rejected and counted. None: no range check.
    temp_dir : str or Path, optional
        Where members of a zip archive are extracted while read (default: a temporary folder removed
        afterwards). Nothing is ever written next to the input.

    Returns
    -------
    InSituData
        ``observations``, ``stations`` and ``report``. The report holds ``path``, ``settings``,
        ``files_found`` (``.stm`` files), ``files_other_variable``, ``files_read``,
        ``files_quarantined`` (list of ``{"file", "reason"}``), ``formats`` (files per format),
        ``stations_read``, ``stations`` (with kept data), ``stations_without_data`` (list of
        ``{"station_id", "reason"}``), ``observations_in``, ``observations_kept``,
        ``rejected_depth``, ``rejected_malformed``, ``rejected_flag`` (``{flag: n}``),
        ``rejected_range``, ``sensors_rejected_depth`` (list), ``files`` (per-file counts) and
        ``warnings``. Always ``files_found == files_read + len(files_quarantined) +
        files_other_variable`` and ``observations_in == observations_kept + rejected_depth +
        rejected_malformed + sum(rejected_flag.values()) + rejected_range``.

    Raises
    ------
    InputError
        ``path`` does not exist, is not a folder or zip, holds no ISMN ``.stm`` file, holds none of
        ``variable``, or none of its files could be read; the message names the path and the likely
        cause. Arguments out of range (negative depth, empty ``good_flags``) raise it too.
    """
    from ismn.base import IsmnRoot

    path = Path(path)
    good = tuple(str(g).strip() for g in good_flags)
    if not good or any(not g for g in good):
        raise InputError(f"good_flags must name at least one ISMN flag (e.g. ('G',)), got {tuple(good_flags)!r}")
    if not (max_depth_m > 0 and depth_tolerance_m >= 0):
        raise InputError(f"max_depth_m must be > 0 and depth_tolerance_m >= 0, got {max_depth_m}, {depth_tolerance_m}")
    if valid_range is not None and not valid_range[0] < valid_range[1]:
        raise InputError(f"valid_range must be (low, high) with low < high, got {valid_range!r}")
    depth_limit = max_depth_m + depth_tolerance_m + _DEPTH_EPS

    files = _find_stm_files(path)
    settings = {"max_depth_m": max_depth_m, "depth_tolerance_m": depth_tolerance_m, "good_flags": list(good),
                "variable": variable, "valid_range": list(valid_range) if valid_range is not None else None}
    report: dict[str, Any] = {
        "path": str(path), "settings": settings, "files_found": len(files), "files_other_variable": 0,
        "files_read": 0, "files_quarantined": [], "formats": {}, "stations_read": 0, "stations": 0,
        "stations_without_data": [], "observations_in": 0, "observations_kept": 0, "rejected_depth": 0,
        "rejected_malformed": 0, "rejected_flag": {}, "rejected_range": 0, "sensors_rejected_depth": [],
        "files": [], "warnings": [],
    }

    kept_parts: list[pd.DataFrame] = []
    stations: dict[str, dict[str, Any]] = {}   # station_id -> metadata of the first file read
    seen_sensors: dict[tuple[str, str], str] = {}
    static_cache: dict[PurePosixPath, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="ssm_ismn_") as own_tmp:
        tmp = str(temp_dir) if temp_dir is not None else own_tmp
        root = IsmnRoot(path)
        try:
            # a progress bar for a person at a terminal (a global download holds thousands of files);
            # disable=None: tqdm stays silent when stderr is not a terminal (a log file, a pipe)
            for rel in tqdm(files, desc=f"ISMN files in {path.name}", unit="file", disable=None, leave=False):
                name_parts = _STM.sub("", rel.name).split("_")
                if len(name_parts) < 9:
                    report["files_quarantined"].append({"file": str(rel), "reason": (
                        "file name does not follow the ISMN pattern CSE_NETWORK_STATION_VARIABLE_FROM_TO_"
                        "INSTRUMENT_START_END.stm (renamed or not an ISMN file?)")})
                    continue
                if _variable_of(name_parts[3]) != variable:
                    report["files_other_variable"] += 1
                    continue
                try:
                    meta, data = _read_one(root, rel, tmp)
                except _Quarantine as exc:
                    log.warning("quarantined %s: %s", rel, exc)
                    report["files_quarantined"].append({"file": str(rel), "reason": str(exc)})
                    continue
                network, warning = _network_of(rel, name_parts[1])
                if warning:
                    report["warnings"].append(warning)
                sid = f"{network}.{meta['station']}"
                counts, kept = _split_records(meta, data, good, depth_limit, valid_range)
                report["files_read"] += 1
                report["formats"][meta["format"]] = report["formats"].get(meta["format"], 0) + 1
                if sid not in stations:
                    static = _static_for(root, rel, tmp, cache=static_cache, report=report)
                    stations[sid] = {"station_id": sid, "network": network, "station": meta["station"],
                                     "lon": meta["lon"], "lat": meta["lat"], "elevation": meta["elevation"],
                                     **static, "reasons": []}
                st = stations[sid]
                if abs(meta["lon"] - st["lon"]) > 1e-4 or abs(meta["lat"] - st["lat"]) > 1e-4:
                    report["warnings"].append(
                        f"{rel}: sensor at ({meta['lon']}, {meta['lat']}) differs from the station position "
                        f"({st['lon']}, {st['lat']}) of its first file; the station position is used")
                key = (sid, meta["sensor"])
                if key in seen_sensors:
                    report["warnings"].append(
                        f"{rel}: sensor {meta['sensor']} of {sid} was already read from {seen_sensors[key]} "
                        "(two downloads under one folder?); station_series averages them as one sensor")
                else:
                    seen_sensors[key] = str(rel)
                _add_counts(report, counts)
                report["files"].append({"file": str(rel), "station_id": sid, "sensor": meta["sensor"],
                                        "format": meta["format"], "depth_from": meta["depth_from"],
                                        "depth_to": meta["depth_to"], **_json_counts(counts)})
                if counts["depth"]:
                    report["sensors_rejected_depth"].append({"station_id": sid, "sensor": meta["sensor"],
                                                             "depth_from": meta["depth_from"],
                                                             "depth_to": meta["depth_to"]})
                    st["reasons"].append(f"{meta['sensor']} deeper than {max_depth_m + depth_tolerance_m:g} m")
                elif counts["kept"] == 0:
                    st["reasons"].append(f"{meta['sensor']}: none of {counts['in']} records passed the flag "
                                         f"{list(good)} and range checks")
                if len(kept):
                    kept_parts.append(kept.assign(station_id=sid, network=network, lon=st["lon"], lat=st["lat"]))
        finally:
            root.close()

    _raise_if_nothing(path, report, variable)
    observations = _assemble_observations(kept_parts)
    station_table = _station_table(observations, stations)
    report["stations_read"] = len(stations)
    report["stations"] = len(station_table)
    with_data = set(station_table["station_id"])
    report["stations_without_data"] = [{"station_id": sid, "reason": "; ".join(dict.fromkeys(st["reasons"])) or "no records"}
                                       for sid, st in stations.items() if sid not in with_data]
    report["rejected_flag"] = dict(sorted(report["rejected_flag"].items()))
    log.info("ISMN %s: %d files read, %d quarantined, %d other variable; %d stations; %d of %d records kept "
             "(depth %d, flag %d, range %d, malformed %d)", path, report["files_read"],
             len(report["files_quarantined"]), report["files_other_variable"], report["stations"],
             report["observations_kept"], report["observations_in"], report["rejected_depth"],
             sum(report["rejected_flag"].values()), report["rejected_range"], report["rejected_malformed"])
    return InSituData(observations=observations, stations=station_table, report=report)


def _find_stm_files(path: Path) -> list[PurePosixPath]:
    """Relative paths of the ``.stm`` files of a download folder or zip; InputError when there are none."""
    if not path.exists():
        raise InputError(f"{path}: does not exist (expected the folder extracted from an ISMN download, or "
                         "its .zip)")
    if path.is_file():
        if not zipfile.is_zipfile(path):
            raise InputError(f"{path}: is a file but not a zip archive; pass the folder extracted from an ISMN "
                             "download (one folder per network, each with station folders of .stm files) "
                             "or the downloaded .zip")
        with zipfile.ZipFile(path) as zf:
            names = [n for n in zf.namelist() if _STM.search(n) and not _hidden(PurePosixPath(n))]
        files = sorted(PurePosixPath(n) for n in names)
    elif path.is_dir():
        files = sorted(PurePosixPath(p.relative_to(path).as_posix()) for p in path.rglob("*")
                       if _STM.search(p.name) and p.is_file() and not _hidden(PurePosixPath(p.relative_to(path).as_posix())))
    else:
        raise InputError(f"{path}: is neither a folder nor a file")
    if not files:
        zips = sorted(p.name for p in path.glob("*.zip")) if path.is_dir() else []
        hint = (f"it holds zip archive(s) {zips[:3]}: pass the zip itself, or extract it" if zips else
                "is this the folder extracted from an ISMN download (NETWORK/STATION/*.stm with "
                "*_static_variables.csv and Metadata.xml)?")
        raise InputError(f"{path}: no ISMN station files (.stm) found; {hint}")
    return files


def _hidden(rel: PurePosixPath) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


def _variable_of(code: str) -> str:
    from ismn.const import VARIABLE_LUT

    return VARIABLE_LUT.get(code, code)


def _short(exc: BaseException, limit: int = 300) -> str:
    """One-line description of an exception (ismn puts whole tracebacks into its messages)."""
    msg = str(exc)
    lines = [ln.strip() for ln in msg.strip().splitlines() if ln.strip()]
    if not lines:
        text = type(exc).__name__
    elif "Traceback (most recent call last)" in msg:   # ismn's message, then the final exception line
        head = msg.split("Traceback (most recent call last)")[0].strip().rstrip(":")
        text = f"{head} ({lines[-1]})" if head else lines[-1]
    else:
        text = f"{type(exc).__name__}: {' '.join(lines)}"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_one(root: Any, rel: PurePosixPath, tmp: str) -> tuple[dict[str, Any], pd.DataFrame]:
    """Metadata and records of one station file, or :class:`_Quarantine` with the reason."""
    from ismn.filehandlers import DataFile

    try:
        f = DataFile(root, Path(rel) if root.zip is None else rel, temp_root=tmp)
    except Exception as exc:   # noqa: BLE001 - any failure of a third-party parser quarantines the file
        raise _Quarantine(f"header or first records unreadable as ISMN header_values or CEOP ({_short(exc)}); "
                          "truncated, corrupt or not an ISMN .stm file?") from exc
    try:
        data = f.read_data()
    except Exception as exc:   # noqa: BLE001
        raise _Quarantine(f"records unparseable as {f.file_type} ({_short(exc)}); corrupt lines or a "
                          "truncated download?") from exc
    md = f.metadata
    try:
        depth = md["instrument"].depth
        meta = {"station": str(md["station"].val), "instrument": str(md["instrument"].val),
                "lat": float(md["latitude"].val), "lon": float(md["longitude"].val),
                "elevation": float(md["elevation"].val), "depth_from": float(depth.start),
                "depth_to": float(depth.end), "format": f.file_type, "variable": str(md["variable"].val)}
    except Exception as exc:   # noqa: BLE001
        raise _Quarantine(f"station metadata incomplete ({_short(exc)})") from exc
    if not (-90 <= meta["lat"] <= 90 and -180 <= meta["lon"] <= 180):
        raise _Quarantine(f"header coordinates out of range (lat {meta['lat']}, lon {meta['lon']}); "
                          "corrupt header line?")
    if not (np.isfinite(meta["depth_from"]) and np.isfinite(meta["depth_to"])):
        raise _Quarantine(f"sensor depth not finite ({meta['depth_from']}, {meta['depth_to']})")
    meta["sensor"] = f"{meta['instrument']}@{meta['depth_from']:g}-{meta['depth_to']:g}m"
    var = meta["variable"]
    need = [var, f"{var}_flag"]
    if any(c not in data.columns for c in need) or not isinstance(data.index, pd.DatetimeIndex):
        raise _Quarantine(f"records lack a time, value or flag column (columns {list(data.columns)})")
    if len(data) == 0:
        raise _Quarantine("no records after the header")
    return meta, data


def _split_records(meta: dict[str, Any], data: pd.DataFrame, good: tuple[str, ...], depth_limit: float,
                   valid_range: Optional[tuple[float, float]]) -> tuple[dict[str, Any], pd.DataFrame]:
    """Counts per outcome, and the kept records (time, ssm, flag, depths, sensor) of one file."""
    var = meta["variable"]
    n = len(data)
    counts: dict[str, Any] = {"in": n, "kept": 0, "depth": 0, "malformed": 0, "flag": {}, "range": 0}
    if meta["depth_to"] > depth_limit:
        counts["depth"] = n
        return counts, data.iloc[:0]
    values = pd.to_numeric(data[var], errors="coerce").to_numpy(dtype="f8")
    flags = data[f"{var}_flag"].astype("string").str.strip()
    times = data.index
    malformed = np.isnan(values) | np.asarray(times.isna()) | flags.isna().to_numpy() | (flags == "").fillna(True).to_numpy()
    ok_flag = {fl: all(p.strip() in good for p in fl.split(",")) for fl in flags.dropna().unique()}
    good_mask = flags.map(ok_flag).fillna(False).to_numpy(dtype=bool) & ~malformed
    bad_flag = ~malformed & ~good_mask
    if valid_range is not None:
        with np.errstate(invalid="ignore"):
            out = good_mask & ((values < valid_range[0]) | (values > valid_range[1]))
    else:
        out = np.zeros(n, dtype=bool)
    keep = good_mask & ~out
    counts["malformed"] = int(malformed.sum())
    counts["flag"] = {str(k): int(v) for k, v in flags[bad_flag].value_counts().items()}
    counts["range"] = int(out.sum())
    counts["kept"] = int(keep.sum())
    kept = pd.DataFrame({"time": times[keep], "ssm": values[keep], "flag": flags[keep].to_numpy(dtype=object)})
    kept["depth_from"] = meta["depth_from"]
    kept["depth_to"] = meta["depth_to"]
    kept["sensor"] = meta["sensor"]
    return counts, kept


def _add_counts(report: dict[str, Any], counts: dict[str, Any]) -> None:
    report["observations_in"] += counts["in"]
    report["observations_kept"] += counts["kept"]
    report["rejected_depth"] += counts["depth"]
    report["rejected_malformed"] += counts["malformed"]
    report["rejected_range"] += counts["range"]
    for fl, k in counts["flag"].items():
        report["rejected_flag"][fl] = report["rejected_flag"].get(fl, 0) + k


def _json_counts(counts: dict[str, Any]) -> dict[str, Any]:
    return {"observations_in": counts["in"], "observations_kept": counts["kept"], "rejected_depth": counts["depth"],
            "rejected_malformed": counts["malformed"], "rejected_flag": dict(sorted(counts["flag"].items())),
            "rejected_range": counts["range"]}


def _norm(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", name.lower())


def _network_of(rel: PurePosixPath, file_network: str) -> tuple[str, Optional[str]]:
    """The network name: the enclosing folder named after the file's network (ISMN writes ``FR_Aqui``
    folders with ``FR-Aqui`` in the file names), else the file name's, with a warning."""
    folders = rel.parts[:-1]
    for folder in reversed(folders[-2:]):
        if _norm(folder) == _norm(file_network):
            return folder, None
    return file_network, (f"{rel}: no enclosing folder is named after network {file_network!r} (expected "
                          "NETWORK/STATION/file.stm); the network is taken from the file name")


def _static_for(root: Any, rel: PurePosixPath, tmp: str, cache: dict[PurePosixPath, dict[str, Any]],
                report: dict[str, Any]) -> dict[str, Any]:
    """Land cover and climate from the station's ``*_static_variables.csv`` (None where absent)."""
    from ismn.filehandlers import StaticMetaFile

    folder = rel.parent
    if folder in cache:
        return cache[folder]
    empty = {"landcover": None, "worldcover": None, "climate": None, "climate_class": None}
    if root.zip is not None:
        names = [PurePosixPath(n) for n in root.zip.namelist()]
        csvs = sorted(n for n in names if n.parent == folder and n.name.lower().endswith(".csv"))
    else:
        csvs = sorted(PurePosixPath(p.relative_to(root.path).as_posix()) for p in (root.path / folder).glob("*.csv"))
    preferred = [c for c in csvs if c.name.lower().endswith("static_variables.csv")] or csvs
    if not preferred or len(folder.parts) < 2:
        # network-level files (NETWORK/file.stm) share the folder with other stations: no static file
        cache[folder] = empty
        return empty
    try:
        md = StaticMetaFile(root, Path(preferred[0]) if root.zip is None else preferred[0], temp_root=tmp).metadata
        vals: dict[str, Any] = {}
        for v in md:
            vals.setdefault(v.name, v.val)
    except Exception as exc:   # noqa: BLE001 - static metadata is optional; say so and go on
        report["warnings"].append(f"{preferred[0]}: static variables unreadable ({_short(exc)}); land cover and "
                                  "climate left empty")
        cache[folder] = empty
        return empty
    lc = None
    for key in ("lc_2010", "lc_2005", "lc_2000"):
        try:
            code = float(vals.get(key, np.nan))
        except (TypeError, ValueError):
            continue
        if np.isfinite(code) and code > 0:
            lc = int(code)
            break
    climate = None
    for key in ("climate_KG", "climate_insitu"):
        c = vals.get(key)
        if isinstance(c, str) and c.strip().lower() not in _NO_VALUE:
            climate = c.strip()
            break
    out = {"landcover": lc, "worldcover": CCI_TO_WORLDCOVER.get(lc) if lc is not None else None,
           "climate": climate, "climate_class": KOPPEN_CLASS.get(climate) if climate else None}
    cache[folder] = out
    return out


def _raise_if_nothing(path: Path, report: dict[str, Any], variable: str) -> None:
    if report["files_read"]:
        return
    if report["files_quarantined"]:
        reasons = "; ".join(f"{q['file']}: {q['reason']}" for q in report["files_quarantined"][:3])
        raise InputError(f"{path}: none of its {len(report['files_quarantined'])} {variable} file(s) could be read "
                         f"(first reasons: {reasons}); a corrupt or partial download?")
    raise InputError(f"{path}: {report['files_found']} .stm file(s) found but none holds {variable!r} "
                     "(ISMN file name code 'sm' is soil_moisture); was the variable ticked in the ISMN download?")


def _assemble_observations(parts: list[pd.DataFrame]) -> pd.DataFrame:
    if not parts:
        return _empty_observations()
    obs = pd.concat(parts, ignore_index=True)
    obs["time"] = pd.DatetimeIndex(obs["time"]).tz_localize("UTC")
    obs = obs[list(OBSERVATION_COLUMNS)].sort_values(["station_id", "time", "sensor"], kind="mergesort")
    return obs.reset_index(drop=True)


def _empty_observations() -> pd.DataFrame:
    return pd.DataFrame({
        "station_id": pd.Series(dtype=object), "network": pd.Series(dtype=object), "lon": pd.Series(dtype="f8"),
        "lat": pd.Series(dtype="f8"), "depth_from": pd.Series(dtype="f8"), "depth_to": pd.Series(dtype="f8"),
        "time": pd.Series(dtype="datetime64[ns, UTC]"), "ssm": pd.Series(dtype="f8"),
        "flag": pd.Series(dtype=object), "sensor": pd.Series(dtype=object)})


def _station_table(obs: pd.DataFrame, stations: dict[str, dict[str, Any]]) -> pd.DataFrame:
    if obs.empty:
        dtypes = {"lon": "f8", "lat": "f8", "elevation": "f8", "landcover": "Int64", "worldcover": "Int64",
                  "climate_class": "Int64", "n_sensors": "int64", "n_obs": "int64",
                  "first_time": "datetime64[ns, UTC]", "last_time": "datetime64[ns, UTC]"}
        return pd.DataFrame({c: pd.Series(dtype=dtypes.get(c, object)) for c in STATION_COLUMNS})
    g = obs.groupby("station_id", sort=True)
    agg = pd.DataFrame({
        "n_sensors": g["sensor"].nunique(),
        "sensors": g["sensor"].agg(lambda s: "; ".join(sorted(set(s)))),
        "n_obs": g.size(),
        "first_time": g["time"].min(),
        "last_time": g["time"].max(),
    }).reset_index()
    meta = pd.DataFrame([{k: v for k, v in st.items() if k != "reasons"} for st in stations.values()])
    out = meta.merge(agg, on="station_id", how="inner")
    for c in ("landcover", "worldcover", "climate_class"):
        out[c] = pd.array(out[c].tolist(), dtype="Int64")
    out["climate"] = out["climate"].astype(object).where(out["climate"].notna(), None)
    return out[list(STATION_COLUMNS)].sort_values("station_id").reset_index(drop=True)
