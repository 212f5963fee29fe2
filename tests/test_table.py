"""A user's own matchup table: mapping, units, absent optional columns, rejected rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssm_spark.config import DEFAULT_CONFIG, TableConfig, load_config
from ssm_spark.errors import InputError
from ssm_spark.pipeline import table_matchups_run
from ssm_spark.sources.table import import_table

ROOT = Path(__file__).resolve().parents[1]


def test_scan_hawaii_results_end_to_end(tmp_path):
    csv = ROOT / "tests" / "data" / "scan_hawaii" / "results.csv"   # copied into the repository (SOURCE.md)
    raw = pd.read_csv(csv)
    cfg = load_config([DEFAULT_CONFIG, ROOT / "conf" / "scan_hawaii.yaml"])
    summary = table_matchups_run(cfg, csv, tmp_path / "m.parquet")
    out = pd.read_parquet(tmp_path / "m.parquet")
    assert summary["table"]["rows_in"] == len(raw) == 599
    assert len(out) == summary["rows"] == 599 and out["station_id"].nunique() == raw["Station"].nunique() == 5
    assert summary["table"]["nominal_incidence_deg"] == 39.0 and out["incidence_nominal"].all()
    # VH only: the VV features are dropped, the VH ones are there
    assert "vv_db" not in out and "sigma0_soil_vv_db" not in out and "mv_oh" not in out
    assert {"sigma0_soil_vh_db", "tau2_vh", "mv_wcm"} <= set(out.columns)
    raw["date"] = pd.to_datetime(raw["Date"]).dt.date
    merged = out.merge(raw, left_on=["station_id", "date"], right_on=["Station", "date"])
    assert len(merged) == 599
    np.testing.assert_allclose(merged["ssm"], merged["sm"])
    np.testing.assert_allclose(merged["lst_k"], merged["LST"])  # NaN where the file has none
    assert out["env"].eq("all").all() and out["network"].eq("SCAN").all()


def test_units_and_rejections(tmp_path):
    df = pd.DataFrame({
        "site": ["a", "a", "b", "b", "c", "c"],
        "day": ["2024-05-01", "2024-05-07", "2024-05-01", "not a date", "2024-05-01", "2024-05-07"],
        "x": [2.0] * 6, "y": [44.0] * 6,
        "VV": [0.1, 0.05, 10.0, 0.1, 0.1, 0.1],          # linear power; 10.0 = +10 dB: out of range
        "theta": [35.0] * 6,
        "NDVI": [0.3, 0.4, 0.5, 0.5, 0.2, 1.4],           # 1.4 out of range
        "SM": [25.0, 30.0, 20.0, 22.0, -3.0, 10.0],         # percent; -3 % out of range
        "clay": [0.2] * 6,                                  # fraction
    })
    path = tmp_path / "t.csv"
    df.to_csv(path, index=False)
    cfg = TableConfig(columns={"station_id": "site", "date": "day", "lon": "x", "lat": "y", "vv_db": "VV",
                               "incidence_deg": "theta", "ndvi": "NDVI", "ssm": "SM", "clay_pct": "clay"},
                      backscatter_unit="linear", ssm_unit="percent", texture_unit="fraction")
    out, rep = import_table(path, cfg)
    assert rep["rows_in"] == 6 and rep["rows_kept"] == 2 and rep["rows_rejected"] == 4
    assert rep["rejected_by_reason"] == {"vv_db out of range [-40.0, 5.0]": 1, "unparsable date (as ISO 8601)": 1,
                                         "ssm out of range [0.0, 1.0]": 1, "ndvi out of range [-1.0, 1.0]": 1}
    assert out["vv_db"].tolist() == pytest.approx([-10.0, 10 * np.log10(0.05)])
    assert out["ssm"].tolist() == pytest.approx([0.25, 0.30]) and out["clay_pct"].tolist() == pytest.approx([20.0, 20.0])
    assert not out["incidence_nominal"].any() and rep["nominal_incidence_deg"] is None


def test_missing_required_column_is_named(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"Station": ["a"], "Date": ["2024-01-01"], "Lat": [1.0], "Lon": [2.0], "VH": [-15.0]}).to_csv(path, index=False)
    cfg = TableConfig(columns={"station_id": "Station", "date": "Date", "lat": "Lat", "lon": "Lon", "vh_db": "VH", "ssm": "sm"})
    with pytest.raises(InputError, match=r"required column\(s\) \['sm'\] \(for \['ssm'\]\) not found; the file has"):
        import_table(path, cfg)
    with pytest.raises(OSError, match="not found"):
        import_table(tmp_path / "nope.csv", cfg)


# ------------------------------------------------------------------ bad input: refused or counted

POLAND = ROOT / "tests" / "data" / "poland_fields" / "input_data.csv"
MAP = {"station_id": "site", "date": "day", "lon": "x", "lat": "y", "vv_db": "VV", "ssm": "SM"}


def _csv(tmp_path: Path, text: str, name: str = "t.csv", encoding: str = "utf-8") -> Path:
    p = tmp_path / name
    p.write_bytes(text.encode(encoding))
    return p


def _table(days, **extra) -> str:
    lines = ["site,day,x,y,VV,SM"] + [f"s{i % 3},{d},2.0,44.0,-10.{i},0.2{i % 10}" for i, d in enumerate(days)]
    return "\n".join(lines) + "\n"


def test_dates_are_parsed_as_written_or_refused(tmp_path):
    cfg = TableConfig(columns=MAP)
    # YYYYMMDD integers: dates, not nanoseconds since 1970
    out, rep = import_table(_csv(tmp_path, _table(["20240501", "20240507", "20240513"])), cfg)
    assert [str(d) for d in out["date"]] == ["2024-05-01", "2024-05-07", "2024-05-13"] and rep["dates"] == "%Y%m%d"
    pq_path = tmp_path / "t.parquet"
    pd.DataFrame({"site": ["a", "b"], "day": [20240501, 20240613], "x": [2.0] * 2, "y": [44.0] * 2, "VV": [-9.0] * 2,
                  "SM": [0.2] * 2}).to_parquet(pq_path)
    assert [str(d) for d in import_table(pq_path, cfg)[0]["date"]] == ["2024-05-01", "2024-06-13"]
    pd.DataFrame({"site": ["a"], "day": [1714521600], "x": [2.0], "y": [44.0], "VV": [-9.0], "SM": [0.2]}).to_parquet(pq_path)
    with pytest.raises(InputError, match=r"numeric dates such as 1714521600 \(data row 1\) are not YYYYMMDD"):
        import_table(pq_path, cfg)
    # DD/MM/YYYY told apart by a day above 12; the ambiguous column is refused, never guessed
    out, rep = import_table(_csv(tmp_path, _table(["01/04/2024", "13/04/2024", "25/04/2024"])), cfg)
    assert [str(d) for d in out["date"]] == ["2024-04-01", "2024-04-13", "2024-04-25"]
    assert rep["dates"].startswith("%d/%m/%Y (inferred: '13/04/2024' in data row 2")
    out, _ = import_table(_csv(tmp_path, _table(["04/01/2024", "04/13/2024"])), cfg)
    assert [str(d) for d in out["date"]] == ["2024-04-01", "2024-04-13"]
    with pytest.raises(InputError, match=r"'01/04/2024' \(data row 1\) can be day/month or month/day.*"
                                         r"set table.date_format to '%d/%m/%Y' or '%m/%d/%Y'"):
        import_table(_csv(tmp_path, _table(["01/04/2024", "02/04/2024"])), cfg)
    with pytest.raises(InputError, match="neither day/month nor month/day fits every row"):
        import_table(_csv(tmp_path, _table(["13/04/2024", "04/13/2024"])), cfg)
    with pytest.raises(InputError, match=r"the dates mix formats \(YYYY-MM-DD: '2024-04-01' .*D/M/YYYY"):
        import_table(_csv(tmp_path, _table(["2024-04-01", "13/04/2024"])), cfg)
    # told: the format is used; a value that does not fit it is rejected and counted
    out, rep = import_table(_csv(tmp_path, _table(["01.04.2024", "02.04.2024", "31.02.2024", ""])),
                            TableConfig(columns=MAP, date_format="%d.%m.%Y"))
    assert [str(d) for d in out["date"]] == ["2024-04-01", "2024-04-02"]
    assert rep["rejected_by_reason"] == {"unparsable date (as %d.%m.%Y)": 1, "missing date": 1}
    # ISO with times and offsets: the UTC date
    out, _ = import_table(_csv(tmp_path, _table(["2024-05-01T23:30:00-02:00", "2024-05-02 06:00"])), cfg)
    assert [str(d) for d in out["date"]] == ["2024-05-02", "2024-05-02"]


def test_values_duplicates_and_empty_tables_are_counted_or_refused(tmp_path):
    text = ("site,day,x,y,VV,SM,NDVI\n"
            "a,2024-05-01,2.0,44.0,-10,0.20,0.5\n"
            "a,2024-05-01,2.0,44.0,-10,0.20,0.5\n"      # exact copy: rejected, the first kept
            "b,2024-05-01,2.0,44.0,-11,0.21,0.5\n"
            "b,2024-05-01,2.0,44.0,-12,0.30,0.5\n"      # same station and date, other values: both rejected
            "c,2024-05-01,2.0,44.0,-10,wet,0.5\n"       # unparsable ssm is not 'missing'
            "d,2024-05-01,2.0,north,-10,0.2,0.5\n"
            "e,2024-05-01,2.0,44.0,-10,0.2,n.d.\n"      # an optional value: set missing, counted
            "f,2024-05-01,2.0,95.0,-10,0.2,0.5\n"
            "g,2024-05-01,2.0,44.0,-10,,0.5\n")
    cfg = TableConfig(columns={**MAP, "ndvi": "NDVI"})
    out, rep = import_table(_csv(tmp_path, text), cfg)
    assert sorted(out["station_id"]) == ["a", "e"] and out.loc[out["station_id"] == "e", "ndvi"].isna().all()
    assert rep["rejected_by_reason"] == {
        "exact duplicate of an earlier row": 1, "conflicting duplicate (same station and date, different values)": 2,
        "unparsable ssm": 1, "unparsable lat": 1, "lat out of range [-90.0, 90.0]": 1, "missing ssm": 1}
    assert rep["values_unparsable_set_missing"] == {"ndvi": 1}
    assert rep["rows_in"] == 9 == rep["rows_kept"] + rep["rows_rejected"] + rep["rows_masked"]
    with pytest.raises(InputError, match=r"no data rows \(only a header"):
        import_table(_csv(tmp_path, "site,day,x,y,VV,SM\n"), cfg)
    with pytest.raises(InputError, match="every one of the 1 rows was rejected"):
        import_table(_csv(tmp_path, "site,day,x,y,VV,SM\na,2024-05-01,2,44,-10,1.5\n"), cfg)
    with pytest.raises(InputError, match=r"column 'NDVI' \(column 7\) \(for ndvi\): 2 of 2 values are not numbers"):
        import_table(_csv(tmp_path, "site,day,x,y,VV,SM,NDVI\na,2024-05-01,2,44,-10,0.2,x\nb,2024-05-01,2,44,-10,0.2,y\n"), cfg)
    # a water row of a table with land cover is masked (not given the default environment)
    out, rep = import_table(_csv(tmp_path, "site,day,x,y,VV,SM,lc\na,2024-05-01,2,44,-10,0.2,40\nb,2024-05-01,2,44,-10,0.2,80\n"),
                            TableConfig(columns={**MAP, "landcover": "lc"}))
    assert list(out["env"]) == ["cropland"] and rep["masked_by_reason"] == {"landcover 80 (MASKED_WATER)": 1}


def test_encodings_separators_and_duplicate_columns(tmp_path):
    cfg = TableConfig(columns=MAP)
    bom = _csv(tmp_path, "\ufeff" + _table(["2024-05-01"]))
    out, rep = import_table(bom, cfg)
    assert len(out) == 1 and rep["reading"]["bom"]
    semi = "site;day;x;y;VV;SM\na;2024-05-01;2,5;44,0;-10,5;0,25\n"
    with pytest.raises(InputError, match=r"decimal commas\? set table.decimal=','"):
        import_table(_csv(tmp_path, semi), cfg)
    out, rep = import_table(_csv(tmp_path, semi), TableConfig(columns=MAP, decimal=","))
    assert rep["reading"]["delimiter"] == ";" and out[["lon", "lat", "vv_db", "ssm"]].iloc[0].tolist() == [2.5, 44.0, -10.5, 0.25]
    latin = _csv(tmp_path, "site,day,x,y,VV,SM\nŁódź,2024-05-01,2,44,-10,0.2\n", encoding="cp1250")
    with pytest.raises(InputError, match=r"not valid UTF-8 text \(byte 0xa3 at offset 19\); name its encoding in table.encoding"):
        import_table(latin, cfg)
    assert import_table(latin, TableConfig(columns=MAP, encoding="cp1250"))[0]["station_id"].tolist() == ["Łódź"]
    dup = "site,day,x,y,VV,SM,VV\na,2024-05-01,2,44,-10,0.2,-10\n"
    out, rep = import_table(_csv(tmp_path, dup), cfg)
    assert rep["duplicate_column_names"] == [{"name": "VV", "columns": [5, 7], "identical": True}]
    with pytest.raises(InputError, match=r"column name 'VV' appears 2 times \(columns \[5, 7\]\) and columns 5 and 7 "
                                         r"differ \(first at data row 1: '-10' vs '-11'\)"):
        import_table(_csv(tmp_path, dup.replace(",-10\n", ",-11\n")), cfg)


def test_poland_fields_table_loads_with_its_config(tmp_path):
    raw = pd.read_csv(POLAND)
    cfg = load_config([DEFAULT_CONFIG, ROOT / "conf" / "poland_fields.yaml"])
    out, rep = import_table(POLAND, cfg.table)
    assert rep["rows_in"] == len(raw) == 826 and rep["rows_kept"] == 806
    assert rep["rejected_by_reason"] == {"exact duplicate of an earlier row": 20} and rep["rows_masked"] == 0
    assert {d["name"] for d in rep["duplicate_column_names"]} == {"projectedLocalIncidenceAngle", "assumed_clay_content"}
    assert all(d["identical"] for d in rep["duplicate_column_names"])
    assert "ndvi" not in out and "ndvi" in rep["absent_optional"] and not out["incidence_nominal"].any()
    assert rep["stations"] == 595 and rep["groups"] == 93 and out["env"].eq("cropland").all()
    assert out["network"].eq("POLAND").all() and out["group_id"].str.len().between(2, 4).all()
    first = out.iloc[0]  # KG01, 12.10.2024, 17.8 %
    assert (first["station_id"], str(first["date"]), first["group_id"]) == ("KG01", "2024-10-12", "KG")
    assert first["ssm"] == pytest.approx(0.178) and first["vv_db"] == -9.7 and first["incidence_deg"] == 36.95
    assert out["ssm"].between(0.04, 0.55).all() and out["date"].map(lambda d: d.year).isin([2024, 2025]).all()
    summary = table_matchups_run(cfg, POLAND, tmp_path / "m.parquet")  # no NDVI: the radar vegetation index
    assert summary["rows"] == 806 and len(pd.read_parquet(tmp_path / "m.parquet")) == 806


def test_values_that_contradict_their_unit_are_refused(tmp_path):
    text = "site,day,x,y,VV,SM,clay\n" + "".join(f"s{i},2024-05-01,2,44,{v},{m},{c}\n" for i, (v, m, c) in
                                                  enumerate([(-10, 25, 20), (-11, 30, 25), (-9, 18, 30)]))
    p = _csv(tmp_path, text)
    cols = {**MAP, "clay_pct": "clay"}
    with pytest.raises(InputError, match=r"column 'SM' \(column 6\) \(for ssm\): most values are above 1 .* set table.ssm_unit=percent"):
        import_table(p, TableConfig(columns=cols))
    assert import_table(p, TableConfig(columns=cols, ssm_unit="percent"))[0]["ssm"].tolist() == pytest.approx([0.25, 0.30, 0.18])
    with pytest.raises(InputError, match=r"every value is positive \(linear power\?\).*backscatter_unit=linear"):
        import_table(_csv(tmp_path, text.replace(",-10,", ",0.1,").replace(",-11,", ",0.08,").replace(",-9,", ",0.12,")),
                     TableConfig(columns=cols, ssm_unit="percent"))
    with pytest.raises(InputError, match=r"\(for clay_pct\): every value is at most 1 % .*texture_unit=fraction"):
        import_table(_csv(tmp_path, text.replace(",20\n", ",0.2\n").replace(",25\n", ",0.25\n").replace(",30\n", ",0.3\n")),
                     TableConfig(columns=cols, ssm_unit="percent"))


def test_ragged_lines_are_refused_and_local_midnights_stay_dates(tmp_path):
    cfg = TableConfig(columns=MAP)
    with pytest.raises(InputError, match=r"line 3 has 7 fields, the header 6 \(separator ','"):
        import_table(_csv(tmp_path, "site,day,x,y,VV,SM\na,2024-05-01,2,44,-9,0.2\nb,2024-05-01,2,44,-9,0,2\n"), cfg)
    day = pd.to_datetime(["2024-05-01", "2024-05-02"]).tz_localize("Europe/Warsaw")  # dates stored as local midnight
    p = tmp_path / "t.parquet"
    pd.DataFrame({"site": ["a", "b"], "day": day, "x": [2.0] * 2, "y": [44.0] * 2, "VV": [-9.0] * 2, "SM": [0.2] * 2}).to_parquet(p)
    assert [str(d) for d in import_table(p, cfg)[0]["date"]] == ["2024-05-01", "2024-05-02"]
    out, _ = import_table(_csv(tmp_path, _table(["2024-05-01T00:00:00+02:00", "2024-05-02T00:00+02:00"])), cfg)
    assert [str(d) for d in out["date"]] == ["2024-05-01", "2024-05-02"]
    pd.DataFrame({"site": ["a"], "day": pd.to_datetime(["2024-05-01T01:30"]).tz_localize("Europe/Warsaw"), "x": [2.0],
                  "y": [44.0], "VV": [-9.0], "SM": [0.2]}).to_parquet(p)
    assert [str(d) for d in import_table(p, cfg)[0]["date"]] == ["2024-04-30"]  # a time: its UTC date
