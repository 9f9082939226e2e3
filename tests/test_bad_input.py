"""Bad invocations of the results commands, as a new user types them: one line, exit 2."""

import json
import os
import shutil

import pytest

from bench.cli import main
from bench.errors import BenchError
from bench.results import load


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A real (CPU) run to point commands at."""
    out = tmp_path_factory.mktemp("bad") / "run"
    assert main(["run", "--gpu", "none", "--batch", "1", "--input-len", "8", "--output-len",
                 "4", "--min-window-s", "0.2", "--idle-s", "0.2", "--repeats", "2", "--quiet",
                 "--out", str(out)]) == 0
    return out


@pytest.fixture
def junk(tmp_path):
    """Named junk files and folders in tmp_path."""
    d = tmp_path / "junk"
    d.mkdir()
    (d / "random.parquet").write_bytes(os.urandom(4096))
    (d / "random.csv").write_bytes(os.urandom(4096))
    (d / "garbage.json").write_text('{"schema": "joulebench/result", "cells": [')
    (d / "list.json").write_text("[1, 2, 3]")
    (d / "deep.json").write_text("[" * 100000 + "]" * 100000)
    (d / "empty").mkdir()
    (d / "afile").write_text("not a folder")
    from bench.results.table import COLUMN_NAMES

    header = ",".join(COLUMN_NAMES)
    (d / "truncated.csv").write_text(header + '\n1,joulebench,"r1,gpu0/m')
    (d / "notatable.csv").write_text("a,b\n1,2\n")
    return d


def one_error_line(capsys, command: str) -> str:
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"bench {command}: error: "), lines[0]
    return lines[0]


def usage_error(capsys, argv) -> str:
    assert main(argv) == 2
    return one_error_line(capsys, argv[0])


@pytest.mark.parametrize("argv, says", [
    (["validate", "{j}/missing.json"], "no such file"),
    (["validate", "{j}/empty"], "without result.json"),
    (["compare", "{j}/missing", "{j}/missing"], "no such file"),
    (["compare", "{j}/empty", "{j}/empty"], "without result.json"),
    (["compare", "{j}/garbage.json", "{j}/garbage.json"], "not valid JSON"),
    (["compare", "{j}/list.json", "{j}/list.json"], "not a JSON object"),
    (["table", "{j}/random.parquet"], "not a readable Parquet table"),
    (["table", "{j}/random.csv"], "random.csv"),
    (["table", "{j}/truncated.csv"], "truncated.csv"),
    (["table", "{j}/notatable.csv"], "not a joulebench table"),
    (["table", "{j}/garbage.json"], "not valid JSON"),
    (["table", "{j}/missing"], "no such file"),
    (["table", "{j}/empty", "--format", "parquet"], "parquet needs --out"),
    (["import", "mlenergy", "{j}/missing.json"], "missing.json"),
    (["import", "mlenergy", "{j}/random.parquet"], "random.parquet"),
    (["import", "mlenergy", "{j}/deep.json"], "nesting too deep"),
    (["import", "mlenergy", "{j}/list.json"], "not an ML.ENERGY model file"),
    (["econ", "check-claim", "{j}/random.parquet"], "not a readable Parquet table"),
    (["econ", "check-claim", "{j}/notatable.csv"], "not a joulebench table"),
    (["submit", "{j}/empty", "--vendor", "a", "--system", "b"], "does not validate"),
    (["submit", "{j}/missing", "--vendor", "a", "--system", "b"], "does not validate"),
])
def test_junk_gives_one_line_and_exit_2(junk, capsys, argv, says):
    argv = [a.format(j=junk) for a in argv]
    assert says in usage_error(capsys, argv)


def test_validate_of_a_broken_document_fails_rule_load(junk, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    shutil.copy(junk / "garbage.json", run / "result.json")
    assert main(["validate", str(run)]) == 1
    out, err = capsys.readouterr()
    assert err == "" and "Traceback" not in out
    assert [ln.strip().split(":")[0] for ln in out.splitlines()[1:]] == ["FAIL load"]


def test_unwritable_out(run_dir, junk, tmp_path, capsys):
    for out in (junk / "afile" / "t.csv", junk / "nofolder" / "t.parquet", junk / "empty"):
        line = usage_error(capsys, ["table", str(run_dir), "--out", str(out)])
        assert "cannot write" in line
    line = usage_error(capsys, ["submit", str(run_dir), "--vendor", "a", "--system", "b",
                                "--dest", str(junk / "afile")])
    assert "cannot write" in line
    assert sorted(p.name for p in junk.iterdir()) == sorted(
        ["random.parquet", "random.csv", "garbage.json", "list.json", "deep.json", "empty",
         "afile", "truncated.csv", "notatable.csv"])  # nothing half-written left behind
    assert list((junk / "empty").iterdir()) == []


def test_bad_key_and_names(run_dir, junk, tmp_path, capsys):
    dest = str(tmp_path / "subs")
    assert "private key" in usage_error(capsys, [
        "submit", str(run_dir), "--vendor", "a", "--system", "b", "--key",
        str(junk / "garbage.json"), "--dest", dest])
    assert "vendor" in usage_error(capsys, [
        "submit", str(run_dir), "--vendor", "../up", "--system", "b", "--dest", dest])
    assert not (tmp_path / "subs").exists()


def test_a_good_run_still_works(run_dir, tmp_path, capsys):
    assert main(["validate", str(run_dir)]) == 0
    assert main(["table", str(run_dir), "--out", str(tmp_path / "t.parquet")]) == 0
    assert main(["table", str(tmp_path / "t.parquet")]) == 0
    assert main(["compare", str(run_dir), str(run_dir)]) == 0
    assert main(["econ", "check-claim", str(tmp_path / "t.parquet")]) == 0
    assert "Traceback" not in "".join(capsys.readouterr())


# -- the loader's own guarantees ---------------------------------------------------------

def test_safe_member_refuses_what_leaves_the_folder(tmp_path):
    (tmp_path / "ok.parquet").write_bytes(b"")
    assert load.safe_member(tmp_path, "ok.parquet") == tmp_path / "ok.parquet"
    os.symlink(tmp_path / "ok.parquet", tmp_path / "link.parquet")
    for bad in ("../x", "/etc/passwd", "a/b", "..", ".", "", "~root", "a\\b", "x\x00y", 5,
                None, "link.parquet"):
        with pytest.raises(load.Invalid):
            load.safe_member(tmp_path, bad)


def test_caps_and_errors_are_bench_errors(tmp_path, monkeypatch):
    (tmp_path / "result.json").write_text(json.dumps({"pad": "x" * 2000}))
    monkeypatch.setattr(load, "MAX_DOCUMENT_BYTES", 1000)
    with pytest.raises(BenchError, match="cap"):
        load.load_document(tmp_path)
    monkeypatch.setattr(load, "MAX_TABLE_BYTES", 5)
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(BenchError, match="cap"):
        load.read_table_file(tmp_path / "t.csv")
    with pytest.raises(BenchError, match=r"\.csv or \.parquet"):
        load.read_table_file(tmp_path / "result.json")
    f, d = load.resolve(tmp_path)
    assert (f, d) == (tmp_path / "result.json", tmp_path)


HOSTILE_SHAPES = [
    {"cells": 5},
    {"provenance": 5, "cells": []},
    {"devices": 5, "cells": []},
    {"idle": 5, "cells": []},
    {"cells": [5]},
    {"cells": [{"figures": 5, "uncertainty": 5, "roofline": 5, "phases": 5}]},
    {"cells": [{"uncertainty": {"output_tokens_per_j_ci": [1]}}]},
    {"cells": [{"figures": {"output_tokens_per_j": "x"}}]},
    {"cells": [{"phases": {"ttft_s": [1]}}]},
    {"cells": [{"model": {"a": 1}}]},
]


@pytest.mark.parametrize("shape", HOSTILE_SHAPES, ids=[json.dumps(s)[:40] for s in HOSTILE_SHAPES])
def test_documents_of_odd_shapes_never_crash(tmp_path, capsys, shape):
    doc = {"schema": "joulebench/result", "schema_version": 2, **shape}
    (tmp_path / "result.json").write_text(json.dumps(doc))
    assert main(["compare", str(tmp_path), str(tmp_path)]) == 2
    assert "not a result document to compare" in one_error_line(capsys, "compare")
    rc = main(["table", str(tmp_path)])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert rc == 0 or (rc == 2 and err.startswith("bench table: error: ")
                       and len(err.strip().splitlines()) == 1)
    assert main(["validate", str(tmp_path)]) == 1
    out, err = capsys.readouterr()
    assert "FAIL schema" in out and err == ""


def test_import_to_an_unwritable_out(junk, capsys):
    conf = {"gpu_model": "H100", "num_gpus": 1, "max_num_seqs": 8,
            "energy_per_token_joules": 0.5, "output_throughput_tokens_per_sec": 100.0,
            "avg_power_watts": 50.0}
    src = junk / "m.json"
    src.write_text(json.dumps({"model_id": "m", "configurations": [conf]}))
    line = usage_error(capsys, ["import", "mlenergy", str(src), "--out",
                                str(junk / "afile" / "x.parquet")])
    assert "cannot write" in line


def test_submission_with_junk_manifest_or_signature(run_dir, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from bench.results import manifest

    key = tmp_path / "key.pem"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    assert main(["submit", str(run_dir), "--vendor", "v", "--system", "s", "--key", str(key),
                 "--dest", str(tmp_path / "subs")]) == 0
    capsys.readouterr()
    (sub,) = (tmp_path / "subs" / "v" / "s").iterdir()
    assert manifest.verify(sub) == []
    (sub / "signature.json").write_text('{"algorithm": "ed25519", "public_key": "zz"}')
    assert manifest.verify(sub) == ["signature.json is malformed"]
    (sub / "signature.json").write_bytes(os.urandom(64))
    (msg,) = manifest.verify(sub)
    assert "signature.json" in msg
    (sub / "signature.json").unlink()
    (sub / "manifest.json").rename(tmp_path / "m.json")
    os.symlink(tmp_path / "m.json", sub / "manifest.json")
    assert manifest.verify(sub) == ["manifest.json is a link or not a file"]
    assert main(["validate", str(sub)]) == 1
    assert "FAIL hashes: manifest.json is a link" in capsys.readouterr().out


def test_table_file_with_text_in_a_number_column(run_dir, tmp_path, capsys):
    from bench.results.table import COLUMN_NAMES

    bad = tmp_path / "bad.csv"
    bad.write_text(",".join(COLUMN_NAMES) + "\n" + ",".join(["x"] * len(COLUMN_NAMES)) + "\n")
    line = usage_error(capsys, ["table", str(bad), str(run_dir), "--out",
                                str(tmp_path / "t.parquet")])
    assert "column table_schema_version holds 'x', not a number" in line
    assert not (tmp_path / "t.parquet").exists()
    doc = json.loads((run_dir / "result.json").read_text())
    doc["cells"][0]["batch_size"] = "1"
    (tmp_path / "result.json").write_text(json.dumps(doc))
    assert "batch_size is not a number" in usage_error(capsys, ["table", str(tmp_path)])
