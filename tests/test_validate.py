"""bench validate against a real run and a corpus of bad documents, one or more per rule."""

import json
import os
import shutil

import pytest

from bench.cli import main
from bench.results import figures, load, schema
from bench.results import validate as V


@pytest.fixture(scope="module")
def gpu_run(stand_in_run):
    """A real run through the GPU path (stand-in NVML, model on the CPU), with a trace."""
    return stand_in_run


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("cpu") / "run"
    assert main(["run", "--gpu", "none", "--batch", "1", "--input-len", "8", "--output-len",
                 "4", "--min-window-s", "0.2", "--repeats", "2", "--quiet", "--out",
                 str(out)]) == 0
    return out


def copy_run(src, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def failed_rules(path):
    return {c.rule for c in V.validate(path) if not c.ok}


def test_real_runs_pass_every_rule(gpu_run, cpu_run):
    for run in (gpu_run, cpu_run):
        checks = V.validate(run)
        assert [c.rule for c in checks] == ["schema", *V.RULES[1:]]
        assert all(c.ok for c in checks), [c.line() for c in checks if not c.ok]
    doc = json.loads((gpu_run / "result.json").read_text())
    assert doc["trace"]["file"] == "trace.parquet" and doc["trace"]["rows"] > 500


def test_cli_exit_codes(gpu_run, tmp_path, capsys):
    assert main(["validate", str(gpu_run)]) == 0
    assert "PASS figures" in capsys.readouterr().out
    bad = copy_run(gpu_run, tmp_path)
    (bad / "result.json").write_text("{")
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "FAIL load" in out and "Traceback" not in out


# -- the corpus: (name, mutation of the parsed document, rule expected to fail) ----------

def _cell(d):
    return d["cells"][0]


def _refigure(d):
    for c in d["cells"]:
        c["figures"], c["uncertainty"] = figures.cell_figures(c["repeats"], c["scope"])
    ok = [c for c in d["cells"] if c["status"] == "ok"]
    d["summary"]["max_output_tokens_per_j"] = max(
        c["figures"]["output_tokens_per_j"] for c in ok)


def _scale_energy(d, k):
    for c in d["cells"]:
        for r in c["repeats"]:
            for e in r["energy"].values():
                if e["energy_j"] is not None:
                    e["energy_j"] *= k
    _refigure(d)


def _more_tokens(d):
    c = _cell(d)
    c["model"], c["device_name"] = "llama-3.1-8b", "NVIDIA H100 80GB HBM3"
    for r in c["repeats"]:
        r["generate_calls"] *= 10 ** 7
        r["output_tokens"] = r["generate_calls"] * c["batch_size"] * c["output_len"]
        r["input_tokens"] = r["generate_calls"] * c["batch_size"] * c["input_len"]
    _refigure(d)


DOC_MUTATIONS = [
    ("wrong schema id", lambda d: d.update(schema="other/result"), "schema"),
    ("newer version", lambda d: d.update(schema_version=99), "schema"),
    ("no cells", lambda d: d.pop("cells"), "schema"),
    ("cells not a list", lambda d: d.update(cells={"a": 1}), "schema"),
    ("batch as text", lambda d: _cell(d).update(batch_size="4"), "schema"),
    ("batch as bool", lambda d: _cell(d).update(batch_size=True), "schema"),
    ("batch zero", lambda d: _cell(d).update(batch_size=0), "schema"),
    ("unknown status", lambda d: d.update(status="great"), "schema"),
    ("repeat lacks t0", lambda d: _cell(d)["repeats"][0].pop("t0_ns"), "schema"),
    ("energy as text", lambda d: _cell(d)["repeats"][0]["energy"]["gpu"].update(
        energy_j="12"), "schema"),
    ("unknown method", lambda d: _cell(d).update(energy_method="vibes"), "schema"),
    ("figure off by 1%", lambda d: _cell(d)["figures"].update(
        output_tokens_per_j=_cell(d)["figures"]["output_tokens_per_j"] * 1.01), "figures"),
    ("repeat energy changed", lambda d: _cell(d)["repeats"][0]["energy"]["gpu"].update(
        energy_j=_cell(d)["repeats"][0]["energy"]["gpu"]["energy_j"] * 0.9), "figures"),
    ("summary count", lambda d: d["summary"].update(ok=99), "figures"),
    ("roofline fraction", lambda d: _cell(d)["roofline"].update(fraction=0.5), "figures"),
    ("interval changed", lambda d: _cell(d)["uncertainty"].update(
        output_tokens_per_j_ci=[0.0, 1e9]), "figures"),
    ("reading disagrees with trace", lambda d: [
        rd.update(energy_j=rd["energy_j"] * 1.01) for rd in _cell(d)["repeats"][0]["readings"]
        if rd["scope"] == "gpu"], "trace"),
    ("scope energy not its readings' sum", lambda d: _scale_energy(d, 0.5), "energy"),
    ("cell not in the config", lambda d: d["config"].update(batch_sizes=[1, 3]), "plan"),
    ("label unlike repeats", lambda d: _cell(d).update(energy_method="estimate"), "labels"),
    ("power over 1.5x TDP", lambda d: _scale_energy(d, 10.0), "physics"),
    ("over the FLOP roofline", _more_tokens, "physics"),
    ("window ends first", lambda d: _cell(d)["repeats"][0].update(
        t1_ns=_cell(d)["repeats"][0]["t0_ns"] - 1), "physics"),
    ("duration mismatch", lambda d: _cell(d)["repeats"][0].update(duration_s=123.0), "physics"),
    ("window under minimum", lambda d: d["config"].update(min_window_s=100.0), "physics"),
    ("token count", lambda d: _cell(d)["repeats"][0].update(
        output_tokens=_cell(d)["repeats"][0]["output_tokens"] + 1), "physics"),
    ("source hash", lambda d: d["provenance"]["harness"].update(source_sha256="xyz"),
     "provenance"),
    ("finished first", lambda d: d.update(finished_utc="2000-01-01T00:00:00.000000Z"),
     "provenance"),
    ("no torch version", lambda d: d["provenance"]["libraries"].pop("torch"), "provenance"),
    ("trace reference ../", lambda d: d["trace"].update(file="../trace.parquet"), "hashes"),
    ("trace absolute path", lambda d: d["trace"].update(file="/etc/passwd"), "hashes"),
    ("trace hash", lambda d: d["trace"].update(sha256="0" * 64), "hashes"),
    ("trace missing", lambda d: d["trace"].update(file="nothere.parquet"), "hashes"),
]


@pytest.mark.parametrize("name, mutate, rule", DOC_MUTATIONS, ids=[m[0] for m in DOC_MUTATIONS])
def test_bad_document_is_rejected_by_its_rule(gpu_run, tmp_path, name, mutate, rule):
    run = copy_run(gpu_run, tmp_path)
    doc = json.loads((run / "result.json").read_text())
    mutate(doc)
    (run / "result.json").write_text(json.dumps(doc))
    assert rule in failed_rules(run), name


RAW_DOCUMENTS = [
    ("not json", b"{"),
    ("NaN", b'{"schema": NaN}'),
    ("Infinity", b'{"x": -Infinity}'),
    ("overflowing float", b'{"x": 1e999}'),
    ("huge integer", b'{"x": 1' + b"0" * 40 + b"}"),
    ("deep nesting", b'{"x": ' + b"[" * 100000 + b"]" * 100000 + b"}"),
    ("moderately deep", b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}"),
    ("top-level array", b"[1, 2]"),
    ("not utf-8", b'{"x": "\xff\xfe"}'),
]


@pytest.mark.parametrize("name, raw", RAW_DOCUMENTS, ids=[r[0] for r in RAW_DOCUMENTS])
def test_hostile_bytes_fail_to_load(tmp_path, name, raw):
    (tmp_path / "result.json").write_bytes(raw)
    (check,) = V.validate(tmp_path)
    assert check.rule == "load" and not check.ok


def test_oversized_document(tmp_path, monkeypatch):
    monkeypatch.setattr(load, "MAX_DOCUMENT_BYTES", 1000)
    (tmp_path / "result.json").write_text(json.dumps({"pad": "x" * 2000}))
    (check,) = V.validate(tmp_path)
    assert "cap" in check.reason


def test_trace_link_and_tampered_bytes(gpu_run, tmp_path):
    run = copy_run(gpu_run, tmp_path)
    (run / "trace.parquet").rename(tmp_path / "elsewhere.parquet")
    os.symlink(tmp_path / "elsewhere.parquet", run / "trace.parquet")
    assert "hashes" in failed_rules(run)
    (run / "trace.parquet").unlink()
    data = bytearray((tmp_path / "elsewhere.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (run / "trace.parquet").write_bytes(bytes(data))
    assert "hashes" in failed_rules(run)


def test_estimate_must_be_labelled(cpu_run, tmp_path):
    run = copy_run(cpu_run, tmp_path)
    doc = json.loads((run / "result.json").read_text())
    _cell(doc)["energy_method"] = "counter"
    (run / "result.json").write_text(json.dumps(doc))
    assert "labels" in failed_rules(run)


def test_old_version_is_upgraded(cpu_run, tmp_path):
    run = copy_run(cpu_run, tmp_path)
    doc = json.loads((run / "result.json").read_text())
    doc["schema_version"] = 1
    for k in ("idle", "trace"):
        doc.pop(k)
    (run / "result.json").write_text(json.dumps(doc))
    assert all(c.ok for c in V.validate(run))
    loaded, _ = V.load_document(run)
    assert loaded["schema_version"] == schema.SCHEMA_VERSION and loaded["upgraded_from"] == 1


def test_published_json_schema_matches_the_checker():
    from pathlib import Path

    import bench.results
    from bench.results.schema_spec import CELL, TOP, json_schema

    published = json.loads((Path(bench.results.__file__).parent / "result.schema.json")
                           .read_text())
    assert published == json_schema()
    assert set(published["required"]) == set(TOP)
    cell = published["properties"]["cells"]["items"]
    assert set(cell["required"]) == set(CELL)


def test_submit_signs_and_validate_checks(gpu_run, tmp_path, capsys):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = tmp_path / "key.pem"
    key.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption()))
    dest = tmp_path / "subs"
    assert main(["submit", str(gpu_run), "--vendor", "acme", "--system", "box-1",
                 "--key", str(key), "--dest", str(dest)]) == 0
    (sub,) = list((dest / "acme" / "box-1").iterdir())
    assert {p.name for p in sub.iterdir()} >= {"result.json", "trace.parquet",
                                               "manifest.json", "signature.json"}
    assert all(c.ok for c in V.validate(sub))
    # a file changed after signing
    tampered = copy_run(sub, tmp_path / "t1")
    with open(tampered / "journal.jsonl", "a") as f:
        f.write("\n")
    assert "hashes" in failed_rules(tampered)
    # the manifest changed and re-hashed, but the signature no longer matches
    forged = copy_run(sub, tmp_path / "t2")
    m = json.loads((forged / "manifest.json").read_text())
    m["vendor"] = "evil"
    (forged / "manifest.json").write_text(json.dumps(m))
    assert "hashes" in failed_rules(forged)
    capsys.readouterr()
    assert main(["submit", str(gpu_run), "--vendor", "../x", "--system", "s"]) == 2
    assert main(["submit", str(gpu_run), "--vendor", "acme", "--system", "box-1",
                 "--key", str(key), "--dest", str(dest)]) == 2  # already there
    bad = copy_run(gpu_run, tmp_path / "t3")
    (bad / "result.json").write_text("{")
    assert main(["submit", str(bad), "--vendor", "a", "--system", "b", "--dest",
                 str(dest)]) == 2
    assert "does not validate" in capsys.readouterr().err


def test_compare_thresholds_and_warnings(gpu_run, cpu_run, tmp_path, capsys):
    b = copy_run(gpu_run, tmp_path)
    doc = json.loads((b / "result.json").read_text())
    _scale_energy(doc, 1.10)  # 10% more energy: tokens/J about 9% worse
    (b / "result.json").write_text(json.dumps(doc))
    assert main(["compare", str(gpu_run), str(b)]) == 0
    assert main(["compare", str(gpu_run), str(b), "--fail", "tokens_per_j:5%"]) == 1
    assert "FAIL" in capsys.readouterr().out
    assert main(["compare", str(gpu_run), str(b), "--fail", "tokens_per_j:20%"]) == 0
    capsys.readouterr()
    assert main(["compare", str(gpu_run), str(cpu_run), "--json"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert any("devices" in w for w in out["warnings"])
    assert main(["compare", str(gpu_run), str(b), "--fail", "bogus:5%"]) == 2


def test_corpus_is_large_enough():
    assert len(DOC_MUTATIONS) + len(RAW_DOCUMENTS) >= 30
    assert {r for *_, r in DOC_MUTATIONS} >= set(V.RULES)



def test_idle_baseline_must_be_one_of_the_devices(gpu_run, tmp_path):
    run = copy_run(gpu_run, tmp_path)
    doc = json.loads((run / "result.json").read_text())
    # a resumed run: a second session's baseline is appended; both stay valid
    doc["idle"].append(dict(doc["idle"][0], power_w=doc["idle"][0]["power_w"] * 2))
    (run / "result.json").write_text(json.dumps(doc))
    assert "figures" not in failed_rules(run)
    for i in doc["idle"]:
        i["power_w"] = 1.0
    (run / "result.json").write_text(json.dumps(doc))
    assert "figures" in failed_rules(run)
