"""The default run end to end, on a tiny sweep, and the CLI's handling of bad input."""

import json
import statistics
import subprocess
import sys

import pytest

from bench.cli import build_parser, main

SMALL = ["--batch", "1,2", "--input-len", "8", "--output-len", "4", "--min-window-s", "0.2",
         "--repeats", "2", "--quiet"]


def test_run_writes_document_and_prints_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--gpu", "none", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny-llama" in printed and "out tok/J" in printed and "estimate" in printed
    doc = json.loads((out / "result.json").read_text())
    assert doc["schema"] == "joulebench/result" and doc["schema_version"] == 2
    assert doc["status"] == "complete"
    assert doc["provenance"]["harness"]["version"]
    assert doc["provenance"]["libraries"]["torch"]
    assert doc["provenance"]["host"]["cpu"]["logical_cpus"] >= 1
    assert [c["batch_size"] for c in doc["cells"]] == [1, 2]
    for cell in doc["cells"]:
        assert cell["status"] == "ok" and cell["model"] == "tiny-llama"
        assert cell["scope"] == "cpu" and cell["energy_method"] == "estimate"
        assert len(cell["repeats"]) == 2
        for rep in cell["repeats"]:
            # exact lengths: every generate call made batch x output_len tokens
            assert rep["output_tokens"] == rep["generate_calls"] * cell["batch_size"] * 4
            assert rep["input_tokens"] == rep["generate_calls"] * cell["batch_size"] * 8
            assert rep["duration_s"] >= 0.2
            assert rep["energy"]["cpu"]["energy_j"] > 0
            assert rep["energy"]["dram"]["energy_j"] is None
        f = cell["figures"]
        assert f["output_tokens_per_j"] > 0
        # every figure is the median of its per-repeat values, recomputable from the repeats
        per = [r["energy"]["cpu"]["energy_j"] / r["output_tokens"] for r in cell["repeats"]]
        assert f["j_per_output_token"] == pytest.approx(statistics.median(per), rel=1e-12)
        per = [r["output_tokens"] / r["energy"]["cpu"]["energy_j"] for r in cell["repeats"]]
        assert f["output_tokens_per_j"] == pytest.approx(statistics.median(per), rel=1e-12)
    # the journal holds a header, the energy sources and one line per cell
    types = [json.loads(x)["type"] for x in (out / "journal.jsonl").read_text().splitlines()]
    assert types[0] == "run" and types.count("cell") == 2 and "source" in types


def test_run_refuses_an_existing_run_dir(tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / "result.json").write_text("{}")
    assert main(["run", *SMALL, "--out", str(out)]) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert (out / "result.json").read_text() == "{}"  # nothing already there is lost


def _bench(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, timeout=300, cwd=cwd)


@pytest.mark.parametrize("args, fragment", [
    (["run", "--batch", "abc"], "--batch"),
    (["run", "--batch", "0"], "--batch"),
    (["run", "--gpu", "7"], "no GPU 7"),
    (["run", "--gpu", "x"], "--gpu"),
    (["run", "--bogus"], "unrecognized"),
    (["run", "--model", "no-such-model"], "unknown model"),
    (["run", "--min-window-s", "-1"], "--min-window-s"),
    (["run", "--dtype", "int3"], "--dtype"),
    (["list", "nothing"], "invalid choice"),
])
def test_bad_input_is_one_line_and_exit_2(args, fragment):
    p = _bench(*args)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], p.stderr


def test_gpu_all_without_gpu_says_so_and_runs_on_cpu(tmp_path):
    p = _bench("run", *SMALL, "--batch", "1", "--gpu", "all", "--out", str(tmp_path / "r"))
    if "no CUDA GPU" not in p.stderr:
        pytest.skip("this machine has a GPU")
    assert p.returncode == 0, p.stderr
    notice = [x for x in p.stderr.splitlines() if "no CUDA GPU" in x]
    assert len(notice) == 1 and "running on the CPU" in notice[0]
    assert (tmp_path / "r" / "result.json").exists()


def test_json_line_ends_stdout(tmp_path):
    p = _bench("run", *SMALL, "--batch", "1", "--gpu", "none", "--json",
               "--out", str(tmp_path / "r"))
    assert p.returncode == 0, p.stderr
    last = json.loads(p.stdout.strip().splitlines()[-1])
    assert last["cells"][0]["figures"]["output_tokens_per_j"] > 0
    assert last["result"].endswith("result.json")


def test_list_models_and_devices(capsys):
    assert main(["list", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    tiny = [m for m in out["models"] if m["name"] == "tiny-llama"][0]
    assert 15e6 < tiny["parameters"] < 25e6  # "about 20M parameters"
    assert any(d["kind"] == "cpu" for d in out["devices"])


def test_every_command_has_help():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    for name, p in sub.choices.items():
        assert p.description, name
        assert all(a.help for a in p._actions), name
