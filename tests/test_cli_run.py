"""The default run end to end, on a tiny sweep, and the CLI's handling of bad input."""

import json
import statistics
import subprocess
import sys

import pytest

from bench.cli import build_parser, main

from .conftest import sigint_default

SMALL = ["--batch", "1,2", "--input-len", "8", "--output-len", "4", "--min-window-s", "0.2",
         "--repeats", "2", "--quiet"]


def test_run_writes_document_and_prints_table(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", *SMALL, "--gpu", "none", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "tiny-llama" in printed and "out tok/J" in printed and "estimate" in printed
    doc = json.loads((out / "result.json").read_text())
    assert doc["schema"] == "joulebench/result" and doc["schema_version"] == 3
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


@pytest.mark.parametrize("args, fragment", [
    (["run", "--batch", "1,,2"], "empty item"),
    (["run", "--batch", ","], "empty item"),
    (["run", "--model", "tiny-llama,"], "empty item"),
    (["run", "--model", "gpt2", "--input-len", "1000", "--output-len", "100"],
     "at most 1024 positions"),
])
def test_more_bad_input_is_one_line_and_exit_2(args, fragment):
    p = _bench(*args)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], p.stderr


@pytest.mark.parametrize("config, fragment", [
    ({"hidden_size": -5}, "hidden_size = -5"),
    ({"num_hidden_layers": 1.5}, "num_hidden_layers = 1.5"),
    ({"num_attention_heads": 3}, "not a multiple of"),
    ({"num_key_value_heads": 3}, "not a multiple of num_key_value_heads"),
])
def test_an_impossible_model_file_is_refused_before_the_run(tmp_path, config, fragment):
    cfg = {"vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
           "num_hidden_layers": 1, "num_attention_heads": 4, "num_key_value_heads": 2,
           **config}
    f = tmp_path / "m.json"
    f.write_text(json.dumps({"name": "m", "model_type": "llama", "config": cfg}))
    out = tmp_path / "run"
    p = _bench("run", "--gpu", "none", "--model", str(f), "--out", str(out))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], p.stderr
    assert not out.exists()  # refused before anything was created


def test_a_workload_failing_mid_sweep_exits_1_and_keeps_the_cells_before(tmp_path):
    # passes every check before the run, then fails when transformers builds it
    bad = {"name": "bad-act", "model_type": "llama", "config": {
        "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_act": "no_such_act"}}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    out = tmp_path / "run"
    p = _bench("run", "--gpu", "none", "--model", f"tiny-llama,{f}", *SMALL, "--batch", "1",
               "--out", str(out))
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr and "no_such_act" in p.stderr
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "failed"
    assert [c["model"] for c in doc["cells"]] == ["tiny-llama"]
    assert doc["cells"][0]["status"] == "ok"


def test_ctrl_c_exits_130_and_writes_the_finished_cells(tmp_path):
    import signal
    import time

    out = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-m", "bench", "run", "--gpu", "none", *SMALL,
                          "--batch", "1,2,3,4,5,6", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=sigint_default)
    journal = out / "journal.jsonl"
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        if journal.exists() and '"type": "cell"' in journal.read_text():
            break
        assert p.poll() is None, p.stderr.read()
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=240)
    assert p.returncode == 130, err
    assert "Traceback" not in err and "--resume" in err
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "interrupted" and 1 <= len(doc["cells"]) < 6


def test_runtime_out_of_memory_is_recorded_and_larger_batches_skipped(tmp_path, monkeypatch):
    import torch

    from bench import runner
    from bench.sweep import SweepConfig
    from bench.workload import HfWorkload

    real = HfWorkload.call

    def call(self, shape):  # batches of 2 or more run out of memory inside a window
        if shape.batch_size >= 2:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self, shape)

    monkeypatch.setattr(HfWorkload, "call", call)
    monkeypatch.setattr(HfWorkload, "warm_up", lambda self, shape, calls: None)
    cfg = SweepConfig(batch_sizes=(1, 2, 4), input_lens=(8,), output_lens=(4,),
                      min_window_s=0.1, repeats=1, phases=False)
    events = []
    starts = []
    outcome = runner.run(cfg, "none", tmp_path / "run", on_start=lambda r, todo:
                         starts.append(len(todo)), on_event=events.append)
    assert starts == [3] and outcome.measured == 3
    status = {c["batch_size"]: (c["status"], c["error"]) for c in outcome.run.cells}
    assert status == {1: ("ok", None), 2: ("oom", "out of memory"),
                      4: ("skipped", "batch 2 ran out of memory")}
    assert [e["type"] for e in events].count("cell") == 3
    assert any(e["type"] == "progress" for e in events)
    doc = json.loads(outcome.result_path.read_text())
    assert doc["status"] == "complete" and doc["config"]["min_window_s"] == 0.1
    assert doc["config"]["dtype"] == "fp32" and doc["config"]["warmup"] == 1  # resolved
    # resuming a finished run measures nothing and leaves it as it is
    again = runner.resume(tmp_path / "run")
    assert again.measured == 0


def test_a_child_to_ctrl_c_gets_the_default_even_where_the_suite_ignores_sigint():
    """The suite started in the background ignores SIGINT; the Ctrl-C tests' children must not."""
    import signal

    code = "import signal; print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)"
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)  # as a background job of a script has it
    try:
        inherited = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                   text=True, timeout=60).stdout.strip()
        reset = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                               timeout=60, preexec_fn=sigint_default).stdout.strip()
    finally:
        signal.signal(signal.SIGINT, old)
    assert (inherited, reset) == ("False", "True")
