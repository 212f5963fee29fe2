"""The one atomic writer: whole or nothing, one temporary scheme, temporaries removed on error."""

import json
import math

import pytest

from ssm_spark.io import (TEMP_RE, atomic_dir, atomic_path, remove_temporaries, temp_path, write_json_atomic,
                          write_text_atomic)


def test_temp_name_scheme(tmp_path):
    t = temp_path(tmp_path / "a.json")
    assert t.parent == tmp_path and TEMP_RE.match(t.name) and t.name.startswith(".a.json.")
    assert TEMP_RE.match(temp_path(tmp_path / "d", "old").name)
    assert not TEMP_RE.match(".hidden") and not TEMP_RE.match("a.json")


def test_json_is_strict_and_nothing_is_left(tmp_path):
    p = tmp_path / "x.json"
    write_json_atomic(p, {"a": 1})
    with pytest.raises(ValueError):
        write_json_atomic(p, {"a": math.nan})
    assert json.loads(p.read_text()) == {"a": 1}  # the old file is intact
    assert [q.name for q in tmp_path.iterdir()] == ["x.json"]


def test_failed_block_removes_temporary_and_keeps_target(tmp_path):
    p = tmp_path / "t.txt"
    write_text_atomic(p, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert p.read_text() == "old" and sorted(q.name for q in tmp_path.iterdir()) == ["t.txt"]


def test_dir_replace(tmp_path):
    d = tmp_path / "reg"
    for text in ("one", "two"):
        with atomic_dir(d) as tmp:
            tmp.mkdir()
            (tmp / "f").write_text(text)
    assert (d / "f").read_text() == "two" and sorted(q.name for q in tmp_path.iterdir()) == ["reg"]
    with pytest.raises(OSError):
        with atomic_dir(d) as tmp:
            tmp.mkdir()
            raise OSError("disk full")
    assert (d / "f").read_text() == "two" and sorted(q.name for q in tmp_path.iterdir()) == ["reg"]


def test_remove_temporaries(tmp_path):
    (tmp_path / ".a.0123abcd.tmp").write_text("x")
    (tmp_path / ".b.89abcdef.old").mkdir()
    (tmp_path / ".keep").write_text("x")
    (tmp_path / "c.tmp").write_text("x")
    assert remove_temporaries(tmp_path) == 2
    assert sorted(q.name for q in tmp_path.iterdir()) == [".keep", "c.tmp"]
