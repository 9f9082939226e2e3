"""Durable writes: strict JSON, atomic replace, journals that survive a torn last line."""

import json

import pytest

from bench.results import io


def test_nan_and_infinity_are_refused(tmp_path):
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError):
            io.write_json_atomic(tmp_path / "x.json", {"a": [1, {"b": bad}]})
        with pytest.raises(ValueError):
            io.append_journal(tmp_path / "j.jsonl", {"a": bad})
    assert not (tmp_path / "x.json").exists()


def test_atomic_write_leaves_no_temporary(tmp_path):
    io.write_json_atomic(tmp_path / "x.json", {"a": 1})
    io.write_json_atomic(tmp_path / "x.json", {"a": 2})
    assert json.loads((tmp_path / "x.json").read_text()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_journal_ignores_torn_last_line(tmp_path):
    j = tmp_path / "j.jsonl"
    io.append_journal(j, {"n": 1})
    io.append_journal(j, {"n": 2})
    with open(j, "a") as f:
        f.write('{"n": 3, "trunc')
    assert [r["n"] for r in io.read_journal(j)] == [1, 2]
