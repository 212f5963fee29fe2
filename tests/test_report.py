"""HTML validation report: self-contained, the expected sections and images, missing inputs omitted."""

from __future__ import annotations

import base64
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from ssm_spark.errors import InputError
from ssm_spark.validation import metrics
from ssm_spark.validation.report import SECTION_TITLES, write_report

ENVS = ("cropland_C", "forest_D", "shrubgrass_B")
CANDIDATES = ("physics", "xgb_raw", "xgb_coupled", "xgb_residual", "global")
IMG = re.compile(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"')


def _predictions(n_st: int = 9, n_t: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2021-04-01", periods=n_t, freq="6D")
    frames = []
    for i in range(n_st):
        obs = 0.22 + 0.08 * np.sin(np.arange(n_t) / 7.0 + i) + rng.normal(0, 0.02, n_t)
        est = obs + 0.01 * (i % 3 - 1) + rng.normal(0, 0.035, n_t)
        frames.append(pd.DataFrame({
            "station_id": f"ST{i:02d}", "network": "SCAN" if i % 2 else "REMEDHUS", "date": dates.date,
            "lon": -100.0 + i, "lat": 38.0 + 0.5 * i, "env": ENVS[i % 3], "ssm": obs, "ssm_est": est,
            "ssm_p05": est - 0.06, "ssm_p95": est + 0.06, "xgb_raw": est + rng.normal(0, 0.01, n_t)}))
    return pd.concat(frames, ignore_index=True)


def _m(r: float, u: float, b: float, n: int = 120, st: int = 3) -> dict:
    return {"R": r, "ubRMSE": u, "bias": b, "RMSE": float(np.hypot(u, b)), "n": n, "stations": st}


def _cv() -> dict:
    cands = {c: _m(0.70 + 0.03 * i, 0.050 - 0.002 * i, 0.004) for i, c in enumerate(CANDIDATES)}
    envs = {e: {"framework": _m(0.812, 0.0413, 0.002), "candidates": cands, "selected": "global",
                "runner_up": "xgb_residual", "level": "env", "n": 120, "stations": 3,
                "coverage_p05_p95": 0.87 + 0.01 * i} for i, e in enumerate(ENVS)}
    return {"overall": {"framework": _m(0.8, 0.042, 0.003, 360, 9), "candidates": cands}, "environments": envs}


def _sections(doc: str) -> set[str]:
    return set(re.findall(r'<section id="([a-z_]+)">', doc))


def _assert_self_contained(doc: str) -> None:
    assert doc.startswith("<!DOCTYPE html>") and doc.rstrip().endswith("</html>")
    srcs = re.findall(r'\bsrc="([^"]*)"', doc)
    assert all(s.startswith("data:image/png;base64,") for s in srcs), "only embedded images"
    assert not re.search(r"<(link|script|iframe|object|embed)\b", doc, re.I)
    assert "href=" not in doc and "url(" not in doc and "@import" not in doc
    assert not re.search(r"https?://", doc)


@pytest.fixture(scope="module")
def full_report(tmp_path_factory) -> tuple[Path, str, pd.DataFrame]:
    pred = _predictions()
    path = tmp_path_factory.mktemp("rep") / "sub" / "report.html"
    out = write_report(path, pred, _cv(), title="CV report <test>",
                       provenance={"config_hash": "0123abcd4567ef89", "manifest_id": "manifest-42"},
                       notes=["no incidence angle in the table: nominal 39 deg used"], candidate_cols=["xgb_raw"])
    return out, out.read_text(encoding="utf-8"), pred


def test_training_report_has_every_section(full_report) -> None:
    path, doc, pred = full_report
    assert path.is_file() and path.stat().st_size > 10_000
    _assert_self_contained(doc)
    assert _sections(doc) == set(SECTION_TITLES)
    for heading in SECTION_TITLES.values():
        assert f"<h2>{heading}</h2>" in doc
    images = IMG.findall(doc)
    assert len(images) == 4          # scatter, time series, map, coverage
    for b64 in images:
        assert base64.b64decode(b64).startswith(b"\x89PNG\r\n\x1a\n")
    assert "0123abcd4567ef89" in doc and "manifest-42" in doc
    assert "CV report &lt;test&gt;" in doc and "<test>" not in doc
    assert "nominal 39 deg" in doc
    assert not [p for p in path.parent.iterdir() if p.name != "report.html"], "no temporary file left"


def test_metrics_tables_and_paper_reference(full_report) -> None:
    _, doc, pred = full_report
    # the paper's figures, labelled as such, in both metrics tables
    assert doc.count("Li et al. (2025), paper&#x27;s figures on their data") == 2
    assert doc.count("<td>0.851</td><td>0.058</td>") == 2 and doc.count('<tr class="ref">') == 2
    # cv_metrics rows: every candidate of every environment, the selection and the runner-up
    cv = doc[doc.index('<section id="cv_table">'):doc.index('<section id="insitu_table">')]
    assert cv.count('<td class="l">xgb_residual</td>') == 1 + len(ENVS) and cv.count("runner-up") == len(ENVS)
    assert "framework (selected: global, level: env)" in cv and "0.812" in cv
    # pooled metrics against in situ are the real ones
    ins = doc[doc.index('<section id="insitu_table">'):doc.index('<section id="timeseries">')]
    m = metrics(pred["ssm_est"], pred["ssm"])
    assert f"<td>{m['R']:.3f}</td><td>{m['ubRMSE']:.3f}</td>" in ins
    assert "SCAN" in ins and "forest_D" in ins


def test_validate_report_omits_sections_without_inputs(tmp_path) -> None:
    pred = _predictions(n_st=4).drop(columns=["ssm_p05", "ssm_p95", "xgb_raw"])
    pred = pred.rename(columns={"ssm_est": "ssm_product"})
    doc = write_report(tmp_path / "v.html", pred, columns={"est": "ssm_product"},
                       provenance={"product": "/data/prod"}).read_text()
    _assert_self_contained(doc)
    assert _sections(doc) == {"provenance", "scatter", "insitu_table", "timeseries"}
    assert len(IMG.findall(doc)) == 2
    for absent in ("cv_table", "map", "coverage", "notes"):
        assert SECTION_TITLES[absent] not in doc
    caption = re.sub(r'<img [^>]*>', "", doc.split('<section id="timeseries">')[1])
    assert "p05" not in caption and "Estimate and in situ at 4 station(s)" in caption   # no band claimed


def test_cv_only_and_selection_map_inputs(tmp_path) -> None:
    doc = write_report(tmp_path / "cv.html", cv_metrics=_cv()).read_text()
    assert _sections(doc) == {"provenance", "cv_table", "coverage"}   # coverage from cv_metrics
    assert len(IMG.findall(doc)) == 1 and "cv_metrics (held-out" in doc
    sel = pd.DataFrame({"lon": [1.0, 2.0, 3.0], "lat": [40.0, 41.0, 42.0], "env": list(ENVS),
                        "selected": ["global", "physics", "global"]})
    doc = write_report(tmp_path / "map.html", selected_map=sel).read_text()
    assert _sections(doc) == {"provenance", "map"} and len(IMG.findall(doc)) == 1


def test_empty_report_and_input_errors(tmp_path) -> None:
    doc = write_report(tmp_path / "e.html").read_text()
    assert _sections(doc) == {"provenance"} and not IMG.findall(doc)
    pred = _predictions(n_st=2, n_t=5)
    with pytest.raises(InputError, match="ssm_est"):
        write_report(tmp_path / "x.html", pred.drop(columns=["ssm_est"]))
    with pytest.raises(InputError, match="nope"):
        write_report(tmp_path / "x.html", pred, candidate_cols=["nope"])
    with pytest.raises(InputError, match="selected"):
        write_report(tmp_path / "x.html", selected_map=pd.DataFrame({"lon": [0.0], "lat": [0.0]}))
    assert not (tmp_path / "x.html").exists()


def test_write_is_atomic(tmp_path, monkeypatch) -> None:
    path = tmp_path / "r.html"
    path.write_text("previous report")

    def boom(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="disk full"):
        write_report(path)
    assert path.read_text() == "previous report"
    assert [p.name for p in tmp_path.iterdir()] == ["r.html"]
