"""No import circle in the product package and the jobs that chain it (module-level or lazy imports)."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ssm_spark"
#: The modules whose imports must form no circle (each with every module it reaches).
GUARDED = ("ssm_spark.product", "ssm_spark.pipeline", "ssm_spark.demo", "ssm_spark.cli", "ssm_spark.parquet")


def _graph() -> dict[str, set[str]]:
    mods = {}
    for p in PKG.rglob("*.py"):
        rel = p.relative_to(PKG.parent).with_suffix("")
        mods[".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)] = p
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            else:
                continue
            for t in names:
                while t.startswith("ssm_spark.") and t not in mods:
                    t = t.rpartition(".")[0]
                if t in mods and t not in (m, "ssm_spark"):
                    edges[m].add(t)
    return edges


def _reaches(edges: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        m = todo.pop()
        for n in edges[m]:
            if n == goal:
                return True
            if n not in seen:
                seen.add(n)
                todo.append(n)
    return False


def test_no_module_imports_one_that_imports_it_back():
    edges = _graph()
    assert "ssm_spark.product.run" in edges and edges["ssm_spark.product.run"]  # the graph is read
    guarded = [m for m in edges if m.startswith(GUARDED)]
    circles = sorted(m for m in guarded if _reaches(edges, m, m))
    assert circles == []


def test_the_demo_is_not_in_the_pipeline():
    edges = _graph()
    assert "ssm_spark.demo" in edges["ssm_spark.cli"]
    assert not any(m.startswith("ssm_spark.product") for m in edges["ssm_spark.pipeline"])
