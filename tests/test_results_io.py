"""Durable io: strict JSON, one atomic write, torn journal lines, the trace reader."""

import json

import pytest

from bench.errors import BenchError
from bench.results import io, load


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


# -- the one atomic write ---------------------------------------------------------------

def test_atomic_path_renames_on_success_only(tmp_path):
    target = tmp_path / "t.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with io.atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("writer died")
    assert target.read_bytes() == b"old"  # untouched, and no temporary left behind
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]
    with io.atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp != target
        tmp.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # nothing visible until the block ends
    assert target.read_bytes() == b"new"
    assert [p.name for p in tmp_path.iterdir()] == ["t.bin"]


def test_atomic_path_fsyncs_file_then_folder(tmp_path, monkeypatch):
    import os

    calls = []
    real = os.fsync

    def spy(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    io.write_text_atomic(tmp_path / "a.txt", "x")
    assert len(calls) == 2
    assert calls[0].startswith(str(tmp_path / ".a.txt.tmp-"))  # the file, before rename
    assert calls[1] == str(tmp_path)  # then the folder, after it


def test_atomic_writers_and_their_errors(tmp_path):
    assert io.write_bytes_atomic(tmp_path / "b", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert io.write_text_atomic(tmp_path / "t", "h\u00e9").read_text("utf-8") == "h\u00e9"
    assert json.loads(io.write_json_atomic(tmp_path / "j", [1, None]).read_text()) == [1, None]
    (tmp_path / "file").write_text("")
    for bad in (tmp_path / "nope" / "x.json", tmp_path / "file" / "x.json", tmp_path):
        with pytest.raises(BenchError, match="cannot write"):
            io.write_json_atomic(bad, {"a": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "file", "j", "t"]


# -- the one trace reader ---------------------------------------------------------------

def _trace_table(n=3, drop=None):
    import pyarrow as pa

    cols = {"device_index": [0] * n, "t_ns": list(range(0, n * 10, 10)),
            "energy_j": [1.0 * i for i in range(n)], "power_w": [250.0] * n,
            "latency_ns": [5] * n, "energy_status": [0] * n, "power_status": [0] * n}
    cols.pop(drop, None)
    return pa.table(cols)


def test_read_trace_gives_named_arrays(tmp_path):
    import pyarrow.parquet as pq

    p = tmp_path / "trace.parquet"
    pq.write_table(_trace_table(), p)
    cols = io.read_trace(p)
    assert tuple(cols) == io.TRACE_COLUMNS
    assert cols["t_ns"].tolist() == [0, 10, 20]
    assert cols["energy_j"].tolist() == [0.0, 1.0, 2.0]


def test_read_trace_refuses_junk_and_missing_columns(tmp_path):
    import pyarrow.parquet as pq

    junk = tmp_path / "junk.parquet"
    junk.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(load.Invalid, match="not a readable Parquet"):
        io.read_trace(junk)
    half = tmp_path / "half.parquet"
    pq.write_table(_trace_table(), half)
    half.write_bytes(half.read_bytes()[:100])
    with pytest.raises(load.Invalid, match="not a readable Parquet"):
        io.read_trace(half)
    thin = tmp_path / "thin.parquet"
    pq.write_table(_trace_table(drop="power_w"), thin)
    with pytest.raises(load.Invalid, match="lacks column power_w"):
        io.read_trace(thin)
    assert issubclass(load.Invalid, BenchError)


def test_a_resumed_run_keeps_the_samples_of_its_earlier_cells(tmp_path):
    """finish() merges the trace parts into trace.parquet and deletes them; a run resumed
    after that writes new parts, and the next merge must keep the earlier samples."""
    import numpy as np
    import pyarrow.parquet as pq

    from bench.rundir import PARTS, merge_trace_parts, write_trace_part
    from bench.sampler import Trace

    def trace(index, t):
        n = len(t)
        return Trace(index, np.array(t, np.int64), np.arange(n, dtype=np.float64),
                     np.full(n, 100.0), np.zeros(n, np.int64), np.zeros(n, np.int32),
                     np.zeros(n, np.int32))

    write_trace_part(tmp_path, trace(0, [1, 2, 3]), 0, 10)
    write_trace_part(tmp_path, trace(1, [1, 2]), 0, 10)
    first = merge_trace_parts(tmp_path)
    assert first["rows"] == 5
    import shutil

    shutil.rmtree(tmp_path / PARTS)  # as Run.finish does
    write_trace_part(tmp_path, trace(0, [3, 7, 8]), 0, 20)  # the resumed session; 3 again
    again = merge_trace_parts(tmp_path)
    t = pq.read_table(tmp_path / "trace.parquet").to_pandas()
    assert again["rows"] == 7 == len(t)  # 3 + 2 before, 7 and 8 new, 3 once
    assert list(t["device_index"]) == [0, 0, 0, 0, 0, 1, 1]
    assert list(t["t_ns"]) == [1, 2, 3, 7, 8, 1, 2]
