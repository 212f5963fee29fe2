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


def test_scan_hawaii_results_end_to_end(shared_data, tmp_path):
    csv = shared_data / "scan_hawaii" / "results.csv"
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
    assert rep["rejected_by_reason"] == {"vv_db out of range [-40.0, 5.0]": 1, "missing date": 1,
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
