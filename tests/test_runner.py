"""The sweep as a user drives it: resume after kill -9, SIGTERM, out-of-memory, the GPU lock,
one worker per GPU over two stand-in devices, contention, and sweep files."""

import json
import os
import signal
import subprocess
import sys
import time

from bench import runner
from bench.results import io

from .timing import assert_cell_power_within_trace_bound, wait_until

SMALL = ["--input-len", "8", "--output-len", "4", "--min-window-s", "0.3", "--repeats", "2",
         "--quiet"]


def bench(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def start(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "bench", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})


def wait_for_cells(journal, n, proc, timeout=120):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        cells = [r for r in io.read_journal(journal) if r.get("type") == "cell"]
        if len(cells) >= n:
            return cells
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    raise AssertionError("the run did not get that far")


def process_alive(pid):
    """Whether ``pid`` runs (a zombie, dead but not reaped by an adopting parent, has not)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_resume_after_kill_9_loses_at_most_the_cell_in_flight(tmp_path):
    out = tmp_path / "run"
    p = start("run", "--gpu", "none", "--batch", "1,2,3,4", *SMALL, "--out", str(out))
    first = wait_for_cells(out / "journal.jsonl", 1, p)
    p.send_signal(signal.SIGKILL)
    p.wait()
    assert not (out / "result.json").exists()
    done_before = [r for r in io.read_journal(out / "journal.jsonl") if r["type"] == "cell"]
    r = bench("run", "--resume", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "complete"
    assert sorted(c["batch_size"] for c in doc["cells"]) == [1, 2, 3, 4]
    # what was measured before the kill is kept as it was
    kept = {c["cell_id"]: c for c in doc["cells"]}
    for c in done_before:
        assert kept[c["cell_id"]]["repeats"][0]["t0_ns"] == c["repeats"][0]["t0_ns"]
    assert first[0]["cell_id"] in kept
    assert bench("validate", str(out)).returncode == 0
    again = bench("run", "--resume", str(out))
    assert again.returncode == 0 and "nothing to resume" in again.stdout


def test_sigterm_writes_the_finished_cells(tmp_path):
    out = tmp_path / "run"
    p = start("run", "--gpu", "none", "--batch", "1,2,3,4,5,6", *SMALL, "--out", str(out))
    wait_for_cells(out / "journal.jsonl", 1, p)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    assert "Traceback" not in err and "--resume" in err
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "interrupted" and 1 <= len(doc["cells"]) < 6


def test_out_of_memory_cell_and_larger_batches_skipped(tmp_path):
    from bench import models
    from bench.models import arithmetic

    a = arithmetic.of(models.get("tiny-llama"), "fp32")
    cap = (a.memory_bytes(2, 8, 4) + a.memory_bytes(4, 8, 4)) / 2  # batch 2 fits, 4 not
    out = tmp_path / "run"
    r = bench("run", "--gpu", "none", "--batch", "1,2,4,8", *SMALL, "--no-phases",
              "--out", str(out), env={"JOULEBENCH_MEMORY_CAP_BYTES": str(cap)})
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "result.json").read_text())
    status = {c["batch_size"]: c["status"] for c in doc["cells"]}
    assert status == {1: "ok", 2: "ok", 4: "oom", 8: "skipped"}
    assert "pre-check" in [c for c in doc["cells"] if c["batch_size"] == 4][0]["error"]


GPU_ENV = {"JOULEBENCH_MODEL_DEVICE": "cpu"}


def gpu_env(fake_nvml_dir, spec, tmp_path):
    return {**GPU_ENV, "LD_LIBRARY_PATH": str(fake_nvml_dir), "FAKE_NVML_DEVICES": spec,
            "JOULEBENCH_LOCK_DIR": str(tmp_path / "locks")}


def test_one_worker_per_gpu_over_two_devices_and_contention(fake_nvml_dir, tmp_path):
    env = gpu_env(fake_nvml_dir, "base_w=200;base_w=300,procs=2", tmp_path)
    out = tmp_path / "run"
    r = bench("run", "--gpu", "all", "--batch", "1", *SMALL, "--dtype", "fp32", "--no-phases",
              "--idle-s", "0.3", "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "result.json").read_text())
    by_dev = {c["device"]: c for c in doc["cells"]}
    assert set(by_dev) == {"gpu0", "gpu1"}
    for dev, power_w in (("gpu0", 200.0), ("gpu1", 300.0)):
        # was a fixed 1% (303.4 W was seen for 300 W on a busy machine): now the bound
        # this run's own sampling allows, see tests/timing.py
        assert_cell_power_within_trace_bound(out, by_dev[dev], power_w)
    assert not by_dev["gpu0"]["contended"]
    assert by_dev["gpu1"]["contended"] and by_dev["gpu1"]["other_pids"] == [4000000, 4000001]
    # one worker process per GPU
    assert by_dev["gpu0"]["pid"] != by_dev["gpu1"]["pid"]
    assert {i["device"] for i in doc["idle"]} == {"gpu0", "gpu1"}
    assert bench("validate", str(out), env=env).returncode == 0


def test_a_gpu_being_measured_is_locked(fake_nvml_dir, tmp_path):
    import fcntl

    env = gpu_env(fake_nvml_dir, "base_w=200", tmp_path)
    (tmp_path / "locks").mkdir()
    uuid = "GPU-fa4e0000-0000-0000-0000-000000000000"
    with open(tmp_path / "locks" / f"joulebench-{uuid}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        f.write("pid 1234")
        f.flush()
        r = bench("run", "--gpu", "0", "--batch", "1", *SMALL, "--out", str(tmp_path / "r"),
                  env=env)
    assert r.returncode == 2, r.stderr
    assert "being measured by another bench run" in r.stderr and "Traceback" not in r.stderr


def test_sweep_file(tmp_path, capsys):
    from bench.cli import main

    f = tmp_path / "sweep.toml"
    f.write_text('models = ["tiny-llama"]\nbatch_sizes = [1, 2]\ninput_lens = [8]\n'
                 'output_lens = [4]\nmin_window_s = 0.2\nrepeats = 2\nphases = false\n')
    out = tmp_path / "run"
    assert main(["run", "--config", str(f), "--gpu", "none", "--batch", "3", "--quiet",
                 "--out", str(out)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert [c["batch_size"] for c in doc["cells"]] == [3]  # the flag overrides the file
    assert doc["config"]["min_window_s"] == 0.2 and doc["config"]["phases"] is False
    f.write_text("bogus = 1\n")
    assert main(["run", "--config", str(f), "--gpu", "none"]) == 2
    assert "unknown key 'bogus'" in capsys.readouterr().err
    f.write_text("batch_sizes = [1, \n")
    assert main(["run", "--config", str(f)]) == 2


def test_resume_refuses_a_directory_without_journal(tmp_path, capsys):
    from bench.cli import main

    assert main(["run", "--resume", str(tmp_path)]) == 2
    assert "no run journal" in capsys.readouterr().err
    assert main(["run", "--resume", str(tmp_path), "--batch", "4"]) == 2
    assert "drop --batch" in capsys.readouterr().err


def test_config_round_trip():
    cfg = runner.SweepConfig(batch_sizes=(1, 8), dtype="bf16", phases=False)
    assert runner.SweepConfig.from_dict(cfg.to_dict()) == cfg


def test_gpu_run_killed_and_resumed_keeps_its_trace(fake_nvml_dir, tmp_path):
    env = gpu_env(fake_nvml_dir, "base_w=220,update_ms=50", tmp_path)
    out = tmp_path / "run"
    p = start("run", "--gpu", "0", "--batch", "1,2,3", *SMALL, "--dtype", "fp32",
              "--no-phases", "--idle-s", "0.3", "--out", str(out), env=env)
    (first,) = wait_for_cells(out / "journal.jsonl", 1, p)[:1]
    p.send_signal(signal.SIGKILL)  # the parent; its worker follows when the queue breaks
    p.wait()
    # Was a fixed 1 s sleep: wait until the worker has really gone, however busy the CPU
    assert wait_until(lambda: not process_alive(first["pid"]), timeout_s=60)
    r = bench("run", "--resume", str(out), "--quiet", env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "result.json").read_text())
    assert sorted(c["batch_size"] for c in doc["cells"]) == [1, 2, 3]
    assert len(doc["idle"]) == 2  # one baseline per session
    v = bench("validate", str(out), env=env)
    assert v.returncode == 0, v.stdout  # earlier cells recompute from the kept trace parts


def test_sigterm_with_gpu_workers(fake_nvml_dir, tmp_path):
    env = gpu_env(fake_nvml_dir, "base_w=220", tmp_path)
    out = tmp_path / "run"
    t_start = time.monotonic()
    p = start("run", "--gpu", "0", "--batch", "1,2,3,4,5", *SMALL, "--dtype", "fp32",
              "--no-phases", "--idle-s", "0.3", "--out", str(out), env=env)
    wait_for_cells(out / "journal.jsonl", 1, p)
    t = time.monotonic()
    startup_s = t - t_start  # start-up, idle baseline and one cell, on this machine now
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 143, err
    # Stopping finishes at most the cell in flight and writes the document: it must not
    # take longer than starting up and measuring the first cell took in the same
    # conditions (15 s as before where start-up was quicker; ~4 s seen beside a CPU hog)
    assert time.monotonic() - t < max(15.0, startup_s), startup_s
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "interrupted" and doc["trace"]["file"] == "trace.parquet"
    assert len(doc["cells"]) < 5  # stopped early, not after the sweep
    assert bench("validate", str(out), env=env).returncode == 0
