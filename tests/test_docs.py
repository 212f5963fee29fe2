"""docs/ keeps up with the code: links resolve, and the lists the pages give (product modules, jobs,
QC bits, metric keys, grid sizes) are the code's own. A change to any of them fails here until the
page says so."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))


def _text(name: str) -> str:
    return (DOCS / name).read_text()


def test_every_page_is_in_the_index_and_every_link_resolves():
    index = _text("README.md")
    assert {p.name for p in PAGES} - {"README.md"} == set(re.findall(r"\]\(([a-z_]+\.md)\)", index))
    for page in [*PAGES, ROOT / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: broken link {target}"


def test_the_pipeline_page_names_every_module_of_the_product_package():
    text = _text("pipeline.md")
    modules = sorted(p.name for p in (ROOT / "ssm_spark" / "product").glob("*.py") if p.name != "__init__.py")
    assert modules and [m for m in modules if f"`{m}`" not in text] == []


def test_every_job_of_the_command_line_is_in_the_contracts():
    from ssm_spark.cli import JOBS

    text = _text("contracts.md")
    assert [j for j in JOBS if f"| `{j}` |" not in text] == []


def test_qc_bits_in_the_contracts_are_the_code_s():
    from ssm_spark.physics.qc import QC

    rows = dict(re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", _text("contracts.md"), re.M))
    assert {int(v): n for v, n in rows.items()} == {int(q): q.name for q in QC}


def test_cv_metrics_keys_in_the_contracts_are_the_code_s():
    from ssm_spark.models.metrics_report import CONTRACT_ENV_KEYS, CONTRACT_METRIC_KEYS

    text = _text("contracts.md")
    assert "{" + ", ".join(CONTRACT_METRIC_KEYS) + "}" in text
    env_block = text[text.index('"environments": {env:') + len('"environments"'):]
    found = re.findall(r'"([a-z_0-9]+)"', env_block[: env_block.index("}}}")])
    assert found[: len(CONTRACT_ENV_KEYS)] == list(CONTRACT_ENV_KEYS)


@pytest.mark.parametrize("km", [1, 3, 9, 36])
def test_grid_table_is_the_code_s(km: int):
    from ssm_spark.grid import EASE2_CELL_M

    cell, cols, rows = EASE2_CELL_M[km]
    assert f"| {km} | {cell!r} | {cols} | {rows} |" in _text("grids.md")


def test_product_columns_in_outputs_are_the_code_s():
    from ssm_spark.product.schema import PRODUCT

    rows = re.findall(r"^\| `([a-z_0-9]+)`(?:, `([a-z_0-9]+)`)? \| (\w+) \|", _text("outputs.md"), re.M)
    cols = [c for a, b, _ in rows for c in (a, b) if c]
    assert cols == list(PRODUCT.names)
