"""Atomic writes and tables."""

from __future__ import annotations

import json

import pytest

from vislang.utils.io import atomic_open, atomic_write_json, format_table


def test_atomic_write_replaces_whole_file(tmp_path):
    p = tmp_path / "sub" / "x.json"
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert json.loads(p.read_text()) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["x.json"]


def test_crash_inside_block_keeps_old_file_and_no_temp(tmp_path):
    p = tmp_path / "x.txt"
    p.write_text("old")
    with pytest.raises(RuntimeError), atomic_open(p) as f:
        f.write("half of the new conte")
        raise RuntimeError("crash")
    assert p.read_text() == "old"
    assert [f.name for f in tmp_path.iterdir()] == ["x.txt"]


def test_format_table_aligns_numbers():
    out = format_table([["a", 1, 0.5], ["bbb", 100, 0.25]], ("name", "n", "score"))
    lines = out.splitlines()
    assert lines[0].split() == ["name", "n", "score"]
    assert lines[2] == "a       1  0.5000"
    assert lines[3] == "bbb   100  0.2500"
