"""ISMN reader, station series, daily and overpass-window means.

Expectations are computed here from the files' text with plain Python (split the lines, apply the
flag and depth rules), never with the code under test.
"""

from __future__ import annotations

import datetime as dt
import shutil
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssm_spark.errors import InputError, SSMError
from ssm_spark.insitu import (
    OBSERVATION_COLUMNS,
    daily_means,
    overpass_means,
    read_ismn,
    station_series,
)

#: real ISMN station files copied into the repository, some cut short (tests/data/ismn_samples/SOURCE.md)
DATA = Path(__file__).resolve().parent / "data" / "ismn_samples"
SAMPLES = DATA / "ismn_package"
HEADER = SAMPLES / "Data_seperate_files_header_20170810_20180809"
CEOP = SAMPLES / "Data_seperate_files_20170810_20180809"
SCAN = DATA / "scan_hawaii"
#: sample folder -> the format of its files (the tests parse the text with that layout)
FOLDERS = {
    "header": (HEADER, "header_values"),
    "ceop": (CEOP, "ceop"),
    "fmt_ceop": (SAMPLES / "format_ceop_sep", "ceop"),
    "fmt_header": (SAMPLES / "format_header_values", "header_values"),
    "scan": (SCAN, "header_values"),
}
LIMIT = 0.05 + 0.0008


def _need(path: Path) -> Path:
    """The sample data are part of the repository: a missing folder is a failure, never a skip."""
    if not path.exists():
        pytest.fail(f"real ISMN sample data missing at {path} (tests/data/ismn_samples/SOURCE.md says what belongs there)")
    return path


# -- plain-text parsing of .stm files (the expectation side) -------------------------------------------
def text_records(path: Path, fmt: str) -> tuple[tuple[float, float], list[tuple[str, float, str]]]:
    """((depth_from, depth_to), [("YYYY/MM/DD HH:MM", value, flag), ...]) straight from the file's text."""
    lines = [ln.split() for ln in path.read_text().splitlines() if ln.strip()]
    if fmt == "header_values":
        head, body = lines[0], lines[1:]
        return (float(head[6]), float(head[7])), [(f"{t[0]} {t[1]}", float(t[2]), t[3]) for t in body]
    parts = path.name.split("_")
    return (float(parts[4]), float(parts[5])), [(f"{t[0]} {t[1]}", float(t[12]), t[13]) for t in lines]


def utc(stamps) -> pd.DatetimeIndex:
    """ISMN time stamps (UTC) as a tz-aware index."""
    return pd.DatetimeIndex(pd.to_datetime(list(stamps), format="%Y/%m/%d %H:%M", utc=True))


def is_good(flag: str, good=("G",)) -> bool:
    return all(p in good for p in flag.split(","))


def expected_split(path: Path, fmt: str, good=("G",), limit=LIMIT):
    """What the rules keep and reject for one file, computed from its text."""
    depth, recs = text_records(path, fmt)
    if depth[1] > limit + 1e-9:
        return {"in": len(recs), "depth": len(recs), "flag": Counter(), "range": 0, "kept": []}
    flag = Counter(f for _, _, f in recs if not is_good(f, good))
    good_recs = [(t, v) for t, v, f in recs if is_good(f, good)]
    kept = [(t, v) for t, v in good_recs if 0.0 <= v <= 0.6]
    return {"in": len(recs), "depth": 0, "flag": flag, "range": len(good_recs) - len(kept), "kept": kept}


@pytest.fixture(scope="module")
def sample_reads() -> dict[str, object]:
    _need(DATA)
    return {key: read_ismn(_need(path)) for key, (path, _) in FOLDERS.items()}


def _adds_up(report: dict) -> None:
    assert report["observations_in"] == (report["observations_kept"] + report["rejected_depth"]
                                         + report["rejected_malformed"] + sum(report["rejected_flag"].values())
                                         + report["rejected_range"])
    assert report["files_found"] == (report["files_read"] + len(report["files_quarantined"])
                                     + report["files_other_variable"])
    per_file_in = sum(f["observations_in"] for f in report["files"])
    assert per_file_in == report["observations_in"]


# -- counts and values against the file text -----------------------------------------------------------
@pytest.mark.parametrize("key", list(FOLDERS))
def test_counts_and_values_match_file_text(sample_reads, key):
    root, fmt = FOLDERS[key]
    data = sample_reads[key]
    rep = data.report
    files = sorted(root.rglob("*.stm"))
    assert rep["files_found"] == len(files) == rep["files_read"]
    assert rep["files_quarantined"] == []
    total_in = total_kept = total_depth = total_range = 0
    total_flag: Counter = Counter()
    by_file = {f["file"]: f for f in rep["files"]}
    groups = dict(list(data.observations.groupby(["station_id", "sensor"], sort=False)))
    for path in files:
        exp = expected_split(path, fmt)
        got = by_file[path.relative_to(root).as_posix()]
        assert got["observations_in"] == exp["in"]
        assert got["rejected_depth"] == exp["depth"]
        assert got["rejected_flag"] == dict(exp["flag"])
        assert got["rejected_range"] == exp["range"]
        assert got["observations_kept"] == len(exp["kept"])
        # the kept records themselves: same times and values, in order
        obs = groups.get((got["station_id"], got["sensor"]), data.observations.iloc[:0])
        assert len(obs) == len(exp["kept"])
        if exp["kept"]:
            kept = sorted(exp["kept"])          # 'YYYY/MM/DD HH:MM' sorts as time does
            assert pd.DatetimeIndex(obs["time"]).equals(utc(t for t, _ in kept))
            np.testing.assert_array_equal(obs["ssm"].to_numpy(), [v for _, v in kept])
            assert obs["ssm"].mean() == pytest.approx(np.mean([v for _, v in kept]), abs=1e-12)
        total_in += exp["in"]
        total_kept += len(exp["kept"])
        total_depth += exp["depth"]
        total_range += exp["range"]
        total_flag += exp["flag"]
    assert rep["observations_in"] == total_in
    assert rep["observations_kept"] == total_kept == len(data.observations)
    assert rep["rejected_depth"] == total_depth
    assert rep["rejected_flag"] == dict(sorted(total_flag.items()))
    assert rep["rejected_range"] == total_range
    assert rep["rejected_malformed"] == 0
    _adds_up(rep)


def test_sample_numbers_as_documented(sample_reads):
    """The counts measured on each sample folder (pinned: a change here is a behaviour change)."""
    scan = sample_reads["scan"].report
    assert (scan["files_found"], scan["stations_read"], scan["stations"]) == (8, 7, 5)
    assert (scan["observations_in"], scan["observations_kept"], scan["rejected_depth"]) == (52475, 44348, 4227)
    assert scan["rejected_flag"]["M"] == 2855
    ceop = sample_reads["ceop"].report
    assert (ceop["observations_in"], ceop["observations_kept"], ceop["rejected_depth"]) == (7492, 3365, 3984)
    assert ceop["rejected_flag"]["D10"] == 12
    assert sample_reads["header"].report["observations_kept"] == 0


def test_observation_table_contract(sample_reads):
    obs = sample_reads["scan"].observations
    assert tuple(obs.columns) == OBSERVATION_COLUMNS
    assert list(obs.columns[:9]) == ["station_id", "network", "lon", "lat", "depth_from", "depth_to", "time", "ssm",
                                     "flag"]
    assert str(obs["time"].dtype) == "datetime64[ns, UTC]"
    assert (obs["flag"] == "G").all()
    assert obs["ssm"].between(0.0, 0.6).all()
    st = sample_reads["scan"].stations
    assert (st["station_id"] == st["network"] + "." + st["station"]).all()
    assert st["station_id"].is_unique
    assert set(obs["station_id"]) == set(st["station_id"])
    # positions are the file headers' (Kemole Gulch: 19.91700 -155.58300)
    kg = st.set_index("station_id").loc["SCAN.KemoleGulch"]
    assert (kg["lat"], kg["lon"], kg["elevation"]) == (19.917, -155.583, 1268.8824)


def test_first_record_of_fr_aqui(sample_reads):
    obs = sample_reads["ceop"].observations
    fr = obs[obs["station_id"] == "FR_Aqui.fraye"]
    first = fr.iloc[0]
    # 2013/08/13 10:00 ... FR_Aqui fraye 44.46700 -0.72690 52.42 0.05 0.05 0.0345 G M
    assert first["time"] == pd.Timestamp("2013-08-13 10:00", tz="UTC")
    assert first["ssm"] == 0.0345
    assert (first["network"], first["lon"], first["lat"], first["depth_from"], first["depth_to"]) == (
        "FR_Aqui", -0.7269, 44.467, 0.05, 0.05)


# -- depth, flags, range ---------------------------------------------------------------------------------
def test_depth_filter(sample_reads):
    scan = sample_reads["scan"]
    deep = {s["station_id"]: s["depth_to"] for s in scan.report["sensors_rejected_depth"]}
    assert deep == {"COSMOS.CPTECINPE": 0.27, "COSMOS.Pe-de-Gigante": 0.33}
    assert {s["station_id"] for s in scan.report["stations_without_data"]} == set(deep)
    assert set(scan.observations["depth_to"]) == {0.0508}              # SCAN 2-inch sensors kept
    header = sample_reads["header"].report                              # COSMOS 0-0.19 / 0-0.21 m
    assert header["rejected_depth"] == header["observations_in"] > 0
    assert {s["depth_to"] for s in header["sensors_rejected_depth"]} == {0.19, 0.21}
    assert set(sample_reads["ceop"].observations["station_id"]) == {"FR_Aqui.fraye"}   # 0.05 m kept


def test_depth_tolerance_is_what_keeps_scan():
    strict = read_ismn(_need(SCAN), depth_tolerance_m=0.0)
    assert strict.report["observations_kept"] == 0
    assert strict.report["rejected_depth"] == strict.report["observations_in"]
    fr = read_ismn(_need(CEOP), depth_tolerance_m=0.0)                 # 0.05 m is <= 0.05 m exactly
    assert fr.report["observations_kept"] == 3365
    cosmos = read_ismn(_need(HEADER), max_depth_m=0.25)                 # a deeper limit takes COSMOS in
    assert cosmos.report["rejected_depth"] == 0
    assert cosmos.report["observations_kept"] == 1900 + 1360


def test_flags_filtered_against_text(sample_reads):
    stm = next((CEOP / "FR_Aqui" / "fraye").glob("*.stm"))
    flags = [ln.split()[13] for ln in stm.read_text().splitlines() if ln.strip()]
    non_g = Counter(f for f in flags if f != "G")
    got = sample_reads["ceop"].report
    fr_file = next(f for f in got["files"] if f["station_id"] == "FR_Aqui.fraye")
    assert fr_file["rejected_flag"] == dict(non_g)
    assert sum(fr_file["rejected_flag"].values()) == sum(non_g.values()) == 3508 - 3365
    # other accepted flags: SMOSMANIA's sample is all 'U' (unchecked) and 'D05'
    u = read_ismn(_need(SAMPLES / "format_ceop_sep"), good_flags=("U",))
    assert u.report["observations_kept"] == 736
    assert u.report["rejected_flag"] == {"D05": 5}
    mixed = read_ismn(SCAN, good_flags=("G", "D05"))                    # a compound flag needs every part good
    assert "D05" not in mixed.report["rejected_flag"]
    assert mixed.report["rejected_flag"]["D05,D04"] == 171


def _small_station(tmp_path: Path, src: Path, network: str = "SCAN", station: str = "KemoleGulch",
                   n: int = 60) -> Path:
    """A one-station ISMN-like folder from the first n records of a real file (header kept)."""
    folder = tmp_path / "dl" / network / station
    folder.mkdir(parents=True)
    lines = src.read_text().splitlines()[: n + 1]
    (folder / src.name).write_text("\n".join(lines) + "\n")
    for csv in src.parent.glob("*.csv"):
        shutil.copy(csv, folder / csv.name)
    return folder / src.name


def test_out_of_range_values_rejected_and_counted(tmp_path):
    src = next((_need(SCAN) / "SCAN" / "KemoleGulch").glob("*.stm"))
    stm = _small_station(tmp_path, src)
    lines = stm.read_text().splitlines()
    t5, t9 = lines[5].split()[:2], lines[9].split()[:2]
    lines[5] = f"{t5[0]} {t5[1]} 0.650 G M"
    lines[9] = f"{t9[0]} {t9[1]} -0.010 G M"
    stm.write_text("\n".join(lines) + "\n")
    got = read_ismn(tmp_path / "dl")
    assert got.report["rejected_range"] == 2
    assert got.report["observations_in"] == 60
    assert got.observations["ssm"].between(0, 0.6).all()
    assert pd.Timestamp(f"{t5[0]} {t5[1]}", tz="UTC") not in set(got.observations["time"])
    _adds_up(got.report)


# -- both formats agree ----------------------------------------------------------------------------------
@pytest.mark.parametrize("folders,kwargs", [
    ((HEADER, CEOP), {"max_depth_m": 0.25}),                            # COSMOS ARM-1 and Barrow-ARM
    ((SAMPLES / "format_header_values", SAMPLES / "format_ceop_sep"), {"good_flags": ("U",)}),  # SMOSMANIA
])
def test_header_values_and_ceop_give_the_same_observations(folders, kwargs):
    a, b = (read_ismn(_need(f), **kwargs) for f in folders)
    ids = sorted(set(a.observations["station_id"]))
    assert ids and ids == sorted(set(b.observations["station_id"]) & set(ids))
    oa = a.observations[a.observations["station_id"].isin(ids)].reset_index(drop=True)
    ob = b.observations[b.observations["station_id"].isin(ids)].reset_index(drop=True)
    assert len(oa) > 700
    pd.testing.assert_frame_equal(oa, ob)
    assert a.report["formats"].keys() == {"header_values"} and "ceop_sep" in b.report["formats"]


# -- several sensors at a station ------------------------------------------------------------------------
def test_multi_sensor_average_from_a_constructed_second_sensor(tmp_path):
    src = next((_need(SCAN) / "SCAN" / "KemoleGulch").glob("*.stm"))
    a = _small_station(tmp_path, src, n=48)
    lines = a.read_text().splitlines()
    header = lines[0].replace("Hydraprobe Analog (2.5 Volt)", "Hydraprobe Analog (2.5 Volt)_B")
    body = []
    for i, ln in enumerate(lines[1:]):
        if 10 <= i < 20:            # sensor B misses ten hours
            continue
        d, h, v, f, o = ln.split()
        f = "D05" if i == 30 else f  # and has one flagged hour
        body.append(f"{d} {h} {float(v) + 0.02:.3f} {f} {o}")
    b = a.with_name(a.name.replace("(2.5-Volt)_", "(2.5-Volt)-B_"))
    b.write_text("\n".join([header, *body]) + "\n")

    got = read_ismn(tmp_path / "dl")
    assert got.report["files_read"] == 2
    st = got.stations.iloc[0]
    assert (st["station_id"], st["n_sensors"]) == ("SCAN.KemoleGulch", 2)
    series = station_series(got.observations)
    assert list(series.columns) == ["station_id", "network", "lon", "lat", "depth_from", "depth_to", "time", "ssm",
                                    "n_sensors"]
    _, ra = text_records(a, "header_values")
    _, rb = text_records(b, "header_values")
    va = dict(zip(utc(t for t, _, f in ra if f == "G"), (v for _, v, f in ra if f == "G")))
    vb = dict(zip(utc(t for t, _, f in rb if f == "G"), (v for _, v, f in rb if f == "G")))
    exp = {t: (np.mean([va[t], vb[t]]) if t in vb else va[t], 2 if t in vb else 1) for t in va}
    exp.update({t: (vb[t], 1) for t in vb if t not in va})
    assert len(series) == len(exp) >= 45
    for row in series.itertuples():
        assert row.ssm == pytest.approx(exp[row.time][0], abs=1e-12)
        assert row.n_sensors == exp[row.time][1]
    singles = sum(1 for _, n in exp.values() if n == 1)
    assert (series["n_sensors"] == 1).sum() == singles >= 11   # ten missing hours + one flagged hour


def test_multi_sensor_average_on_real_kainaliu(sample_reads):
    series = station_series(sample_reads["scan"].observations)
    kai = series[series["station_id"] == "SCAN.Kainaliu"].set_index("time")
    files = sorted((SCAN / "SCAN" / "Kainaliu").glob("*.stm"))
    good = []
    for p in files:
        recs = [(t, v) for t, v, f in text_records(p, "header_values")[1] if f == "G"]
        good.append(dict(zip(utc(t for t, _ in recs), (v for _, v in recs))))
    both = sorted(set(good[0]) & set(good[1]))
    assert len(both) > 7000
    assert (kai.loc[both, "n_sensors"] == 2).all()
    np.testing.assert_allclose(kai.loc[both, "ssm"], [(good[0][t] + good[1][t]) / 2 for t in both], atol=1e-12)
    # 2020/01/01 00:00: A 0.347, B 0.293
    assert kai.loc[pd.Timestamp("2020-01-01 00:00", tz="UTC"), "ssm"] == pytest.approx(0.32, abs=1e-12)
    only = sorted(set(good[0]) ^ set(good[1]))
    assert (kai.loc[only, "n_sensors"] == 1).all()
    assert len(kai) == len(set(good[0]) | set(good[1]))


# -- daily and overpass means ----------------------------------------------------------------------------
def _hand_obs() -> pd.DataFrame:
    rows = [  # station, sensor, time (UTC), ssm
        ("N.S1", "a", "2020-01-01 00:00", 0.10), ("N.S1", "a", "2020-01-01 01:00", 0.20),
        ("N.S1", "a", "2020-01-01 23:00", 0.30), ("N.S1", "a", "2020-01-02 00:00", 0.40),
        ("N.S2", "a", "2020-01-01 06:00", 0.10), ("N.S2", "b", "2020-01-01 06:00", 0.30),
        ("N.S2", "a", "2020-01-01 07:00", 0.20),
    ]
    df = pd.DataFrame(rows, columns=["station_id", "sensor", "time", "ssm"])
    df["time"] = pd.to_datetime(df["time"]).dt.tz_localize("UTC")
    df["network"] = "N"
    df["lon"] = df["station_id"].map({"N.S1": -150.0, "N.S2": 10.0})
    df["lat"] = 20.0
    df["depth_from"] = df["depth_to"] = 0.05
    df["flag"] = "G"
    return df[list(OBSERVATION_COLUMNS)]


def test_daily_means_by_hand():
    obs = _hand_obs()
    d = daily_means(obs)
    assert list(d.columns) == ["station_id", "network", "lon", "lat", "depth_from", "depth_to", "date", "ssm", "n"]
    got = {(r.station_id, r.date): (round(r.ssm, 12), r.n) for r in d.itertuples()}
    assert got == {("N.S1", dt.date(2020, 1, 1)): (0.2, 3), ("N.S1", dt.date(2020, 1, 2)): (0.4, 1),
                   ("N.S2", dt.date(2020, 1, 1)): (round((0.2 + 0.2) / 2, 12), 2)}  # 06:00 = mean(0.1, 0.3)
    d2 = daily_means(obs, min_count=2)
    assert set(zip(d2["station_id"], d2["date"])) == {("N.S1", dt.date(2020, 1, 1)), ("N.S2", dt.date(2020, 1, 1))}
    # the same from a station series, and times in another zone are UTC days
    pd.testing.assert_frame_equal(daily_means(station_series(obs)), d)
    shifted = obs.assign(time=obs["time"].dt.tz_convert("Pacific/Honolulu"))
    pd.testing.assert_frame_equal(daily_means(shifted), d)
    naive = obs.assign(time=obs["time"].dt.tz_localize(None))
    pd.testing.assert_frame_equal(daily_means(naive), d)
    with pytest.raises(InputError, match="min_count"):
        daily_means(obs, min_count=0)
    with pytest.raises(InputError, match="ssm"):
        daily_means(obs.drop(columns="ssm"))


def test_daily_mean_of_a_real_day_against_text(sample_reads):
    stm = next((CEOP / "FR_Aqui" / "fraye").glob("*.stm"))
    _, recs = text_records(stm, "ceop")
    day = [v for t, v, f in recs if f == "G" and t.startswith("2014/03/01 ")]
    assert len(day) >= 12
    d = daily_means(sample_reads["ceop"].observations)
    row = d[(d["station_id"] == "FR_Aqui.fraye") & (d["date"] == dt.date(2014, 3, 1))].iloc[0]
    assert row["ssm"] == pytest.approx(np.mean(day), abs=1e-12)
    assert row["n"] == len(day)


def _hourly(station="N.S1", lon=-150.0, day="2020-01-01") -> pd.DataFrame:
    t = pd.date_range(day, periods=24, freq="h", tz="UTC")
    return pd.DataFrame({"station_id": station, "network": "N", "lon": lon, "lat": 20.0, "depth_from": 0.05,
                         "depth_to": 0.05, "time": t, "ssm": np.arange(24) / 100.0, "flag": "G", "sensor": "a"})


def test_overpass_means_by_hand():
    obs = _hourly()
    o = overpass_means(obs, 6)                            # 06 UTC +-1 h: 05, 06, 07 -> 0.06
    assert list(o.columns) == ["station_id", "network", "lon", "lat", "depth_from", "depth_to", "time", "ssm", "n"]
    assert len(o) == 1
    assert (o["time"].iloc[0], o["n"].iloc[0]) == (pd.Timestamp("2020-01-01 06:00", tz="UTC"), 3)
    assert o["ssm"].iloc[0] == pytest.approx(0.06, abs=1e-12)
    narrow = overpass_means(obs, 6, window_hours=0.5)
    assert (narrow["n"].iloc[0], round(narrow["ssm"].iloc[0], 12)) == (1, 0.06)
    wide = overpass_means(obs, 6, window_hours=3)           # 03..09 -> 0.06, n 7
    assert (wide["n"].iloc[0], round(wide["ssm"].iloc[0], 12)) == (7, 0.06)
    # local solar 06:00 at lon -150 is 16:00 UTC: 15, 16, 17
    solar = overpass_means(obs, 6, clock="solar")
    assert solar["time"].iloc[0] == pd.Timestamp("2020-01-01 16:00", tz="UTC")
    assert solar["ssm"].iloc[0] == pytest.approx(0.16, abs=1e-12)
    both = overpass_means(obs, (6, 18))
    assert list(both["ssm"].round(12)) == [0.06, 0.18]
    # explicit overpasses, between the hours: 10:30 +-1 h holds 10:00 and 11:00
    times = pd.DataFrame({"station_id": ["N.S1", "N.S1", "N.S1"],
                          "time": pd.to_datetime(["2020-01-01 10:30", "2020-01-01 23:30", "2020-01-05 00:00"])})
    ex = overpass_means(obs, times)
    assert list(ex["n"]) == [2, 1]                          # 23:30 holds 23:00 only; Jan 5 has no data
    assert list(ex["ssm"].round(12)) == [0.105, 0.23]
    assert list(overpass_means(obs, times, min_count=2)["n"]) == [2]
    with pytest.raises(InputError):
        overpass_means(obs, 25)
    with pytest.raises(InputError):
        overpass_means(obs, 6, window_hours=0)
    with pytest.raises(InputError):
        overpass_means(obs, 6, clock="local")


def test_overpass_mean_of_real_data_against_text(sample_reads):
    stm = next((SCAN / "SCAN" / "KemoleGulch").glob("*.stm"))
    _, recs = text_records(stm, "header_values")
    t0 = pd.Timestamp("2020-03-10 16:30", tz="UTC")       # about a Sentinel-1 ascending pass over Hawaii
    vals = [v for t, v, f in recs if f == "G" and t in ("2020/03/10 16:00", "2020/03/10 17:00")]
    assert len(vals) == 2
    o = overpass_means(sample_reads["scan"].observations,
                       pd.DataFrame({"station_id": ["SCAN.KemoleGulch"], "time": [t0]}))
    assert (o["n"].iloc[0], o["ssm"].iloc[0]) == (2, pytest.approx(np.mean(vals), abs=1e-12))


# -- robustness ------------------------------------------------------------------------------------------
def _three_stations(tmp_path: Path) -> Path:
    root = tmp_path / "dl"
    for name in ("KemoleGulch", "ManaHouse", "Combate"):
        shutil.copytree(_need(SCAN) / "SCAN" / name, root / "SCAN" / name)
    return root


GARBAGE = {
    "text": lambda lines: "this is not an ISMN file\n@@@ ### !!!\n",
    "binary": lambda lines: bytes(range(256)) * 8,
    "header_only": lambda lines: lines[0] + "\n",
    "empty": lambda lines: "",
    "bad_line_in_the_middle": lambda lines: "\n".join(lines[:40] + ["2020/12/18 03:00 0.1 G M extra", "xx yy"]
                                                     + lines[41:80]) + "\n",
}


@pytest.mark.parametrize("kind", list(GARBAGE))
def test_corrupt_station_file_is_quarantined_and_the_rest_arrives(tmp_path, kind):
    root = _three_stations(tmp_path)
    bad = next((root / "SCAN" / "ManaHouse").glob("*.stm"))
    content = GARBAGE[kind](bad.read_text().splitlines())
    (bad.write_bytes if isinstance(content, bytes) else bad.write_text)(content)
    got = read_ismn(root)
    q = got.report["files_quarantined"]
    assert [x["file"] for x in q] == [bad.relative_to(root).as_posix()]
    assert len(q[0]["reason"]) > 20
    assert set(got.stations["station_id"]) == {"SCAN.KemoleGulch", "SCAN.Combate"}
    assert got.report["files_read"] == 2
    exp_in = sum(expected_split(next((root / "SCAN" / s).glob("*.stm")), "header_values")["in"]
                 for s in ("KemoleGulch", "Combate"))
    assert got.report["observations_in"] == exp_in
    _adds_up(got.report)


def test_bad_value_inside_a_readable_file_counts_as_malformed(tmp_path):
    src = next((_need(SCAN) / "SCAN" / "KemoleGulch").glob("*.stm"))
    stm = _small_station(tmp_path, src, n=30)
    lines = stm.read_text().splitlines()
    d, h = lines[7].split()[:2]
    lines[7] = f"{d} {h} n/a G M"
    stm.write_text("\n".join(lines) + "\n")
    got = read_ismn(tmp_path / "dl")
    assert got.report["rejected_malformed"] == 1
    assert got.report["observations_kept"] == 29
    _adds_up(got.report)


def test_not_an_ismn_download_raises_input_error(tmp_path):
    missing = tmp_path / "nope"
    with pytest.raises(InputError, match="nope.*does not exist"):
        read_ismn(missing)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InputError, match=r"empty.*no ISMN station files"):
        read_ismn(empty)
    other = tmp_path / "other"
    (other / "sub").mkdir(parents=True)
    (other / "sub" / "readme.txt").write_text("hello")
    with pytest.raises(InputError, match="other"):
        read_ismn(other)
    plain = tmp_path / "data.csv"
    plain.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a zip"):
        read_ismn(plain)
    with_zip = tmp_path / "withzip"
    with_zip.mkdir()
    zipfile.ZipFile(with_zip / "Data_separate_files_2020.zip", "w").close()
    with pytest.raises(InputError, match="pass the zip"):
        read_ismn(with_zip)
    garbage = tmp_path / "garbage" / "NET" / "STA"
    garbage.mkdir(parents=True)
    (garbage / "NET_NET_STA_sm_0.050000_0.050000_Probe_20200101_20200102.stm").write_text("junk\n")
    with pytest.raises(InputError, match="none of its 1"):
        read_ismn(tmp_path / "garbage")
    temps = tmp_path / "temps" / "NET" / "STA"
    temps.mkdir(parents=True)
    src = next((_need(SCAN) / "SCAN" / "KemoleGulch").glob("*.stm"))
    shutil.copy(src, temps / src.name.replace("_sm_", "_ts_"))
    with pytest.raises(InputError, match="soil_moisture"):
        read_ismn(tmp_path / "temps")
    # the error is also an SSMError and a builtin ValueError
    with pytest.raises(SSMError):
        read_ismn(missing)
    with pytest.raises(ValueError):
        read_ismn(missing)


def test_other_variables_are_skipped_and_counted(tmp_path):
    root = _three_stations(tmp_path)
    src = next((root / "SCAN" / "Combate").glob("*.stm"))
    shutil.copy(src, src.with_name(src.name.replace("_sm_", "_ts_")))
    got = read_ismn(root)
    assert got.report["files_other_variable"] == 1
    assert got.report["files_read"] == 3
    _adds_up(got.report)


def test_reads_a_zip_and_writes_nothing_next_to_the_input(tmp_path):
    root = _three_stations(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    folder = read_ismn(root)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before      # no python_metadata/
    archive = tmp_path / "download.zip"
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for p in sorted(root.rglob("*")):
            if p.is_file():
                zf.write(p, p.relative_to(root).as_posix())
    extract_to = tmp_path / "extract"
    zipped = read_ismn(archive, temp_dir=extract_to)
    pd.testing.assert_frame_equal(zipped.observations, folder.observations)
    pd.testing.assert_frame_equal(zipped.stations, folder.stations)
    assert zipped.report["observations_in"] == folder.report["observations_in"]


def test_station_metadata_from_static_variables(sample_reads):
    fr = sample_reads["ceop"].stations.set_index("station_id").loc["FR_Aqui.fraye"]
    # FR-Aqui_FR-Aqui_fraye_static_variables.csv: CCI 70 (needleleaved evergreen trees), Cfb
    assert (fr["landcover"], fr["worldcover"], fr["climate"], fr["climate_class"]) == (70, 10, "Cfb", 15)
    assert (fr["elevation"], fr["n_sensors"], fr["n_obs"]) == (52.42, 1, 3365)
    assert fr["first_time"] == pd.Timestamp("2013-08-13 10:00", tz="UTC")
    assert fr["last_time"] == pd.Timestamp("2014-03-28 09:00", tz="UTC")     # the copy ends in March 2014
    scan = sample_reads["scan"].stations.set_index("station_id")
    assert pd.isna(scan.loc["SCAN.BosqueSeco", "climate"])               # the file says 'masked'
    assert pd.isna(scan.loc["SCAN.BosqueSeco", "climate_class"])
    assert (scan.loc["SCAN.KemoleGulch", "landcover"], scan.loc["SCAN.KemoleGulch", "worldcover"]) == (120, 20)
    assert (scan.loc["SCAN.KemoleGulch", "climate"], scan.loc["SCAN.KemoleGulch", "climate_class"]) == ("Aw", 3)
    assert scan.loc["SCAN.Kainaliu", "n_sensors"] == 2


def test_report_is_json_serialisable_and_adds_up_for_every_sample(sample_reads):
    import json

    for data in sample_reads.values():
        json.dumps(data.report)
        _adds_up(data.report)
    everything = read_ismn(_need(SAMPLES))          # both formats of the same stations under one folder
    _adds_up(everything.report)
    assert any("already read" in w for w in everything.report["warnings"])
    assert everything.report["formats"] == {"ceop_sep": 4, "header_values": 3}


def test_station_series_weighs_each_sensor_once():
    obs = _hand_obs()
    dup = obs[(obs["station_id"] == "N.S2") & (obs["sensor"] == "a")].iloc[[0]].assign(ssm=0.2)
    obs = pd.concat([obs, dup], ignore_index=True)      # sensor a twice at 06:00 (0.1, 0.2), sensor b 0.3
    s = station_series(obs)
    row = s[(s["station_id"] == "N.S2") & (s["time"] == pd.Timestamp("2020-01-01 06:00", tz="UTC"))].iloc[0]
    assert row["n_sensors"] == 2
    assert row["ssm"] == pytest.approx((0.15 + 0.3) / 2, abs=1e-12)
    # without a sensor column every row is its own value
    plain = station_series(obs.drop(columns="sensor")).set_index(["station_id", "time"]).loc[("N.S2", row["time"])]
    assert (plain["ssm"], plain["n_sensors"]) == (pytest.approx(0.2, abs=1e-12), 3)
    with pytest.raises(InputError, match="time"):
        station_series(obs.drop(columns="time"))


def test_progress_bar_only_on_a_terminal(monkeypatch):
    """tqdm draws a bar over the files for a person at a terminal and writes nothing into a log."""
    import io
    import sys

    class Tty(io.StringIO):
        def isatty(self):
            return True

    log_file = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log_file)
    read_ismn(SAMPLES / "format_header_values", good_flags=("U",))
    # no bar (other tests' warnings may reach stderr in a full run; the bar's text and its carriage
    # returns must not)
    assert "/1 [" not in log_file.getvalue() and "\r" not in log_file.getvalue(), log_file.getvalue()
    tty = Tty()
    monkeypatch.setattr(sys, "stderr", tty)
    got = read_ismn(SAMPLES / "format_header_values", good_flags=("U",))
    assert "ISMN files in format_header_values" in tty.getvalue() and "/1 [" in tty.getvalue()   # n of 1 file
    assert got.report["files_read"] == 1
