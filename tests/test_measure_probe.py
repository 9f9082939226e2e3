"""`bench measure` and `bench probe` as a user runs them, against the stand-in NVML."""

import json
import os
import subprocess
import sys

import pytest


def bench(fake_dir, spec, *args, timeout=120):
    env = dict(os.environ)
    if fake_dir is not None:
        env["LD_LIBRARY_PATH"] = str(fake_dir)
        env["FAKE_NVML_DEVICES"] = spec
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


SLEEP = [sys.executable, "-c", "import time; time.sleep(1.2)"]


def test_measure_reports_each_gpu_and_exits_with_the_commands_code(fake_nvml_dir):
    p = bench(fake_nvml_dir, "base_w=200,update_ms=100;base_w=350,counter=0,power_update_ms=0",
              "measure", "--json", "--", *SLEEP[:2], "import time, sys; time.sleep(1.2); "
              "sys.exit(3)")
    assert p.returncode == 3, p.stderr
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["exit_code"] == 3 and rep["duration_s"] >= 1.2
    g0, g1 = rep["devices"]
    # constant power: the true energy is P x the window
    assert g0["method"] == "counter"
    assert g0["energy_j"] == pytest.approx(200 * rep["duration_s"], rel=1e-3)
    assert g1["method"] == "power_integration"
    assert g1["energy_j"] == pytest.approx(350 * rep["duration_s"], rel=1e-2)
    for g in (g0, g1):
        assert set(g) >= {"index", "uuid", "name", "energy_j", "method", "samples",
                          "sample_rate_hz", "mean_power_w", "max_power_w"}
        assert g["sample_rate_hz"] >= 990
    assert rep["cpu"]["method"] in ("estimate", "counter")
    assert "gpu0" in p.stdout and "gpu1" in p.stdout


def test_measure_gpu_lost_mid_run_others_go_on(fake_nvml_dir):
    p = bench(fake_nvml_dir, "base_w=200;base_w=300,lost_after_s=0.5", "measure", "--json",
              "--", *SLEEP)
    assert p.returncode == 0, p.stderr
    g0, g1 = json.loads(p.stdout.strip().splitlines()[-1])["devices"]
    assert g0["energy_j"] == pytest.approx(200 * 1.2, rel=0.1)
    assert g1["energy_j"] is None and "lost" in g1["reason"].lower()


def test_measure_without_driver_measures_cpu(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    p = subprocess.run([sys.executable, "-m", "bench", "measure", "--json", "--", *SLEEP],
                       capture_output=True, text=True, timeout=120, env=env)
    if "no GPU to measure" not in p.stderr:
        pytest.skip("this machine has an NVIDIA driver")
    assert p.returncode == 0
    assert len([x for x in p.stderr.splitlines() if x.strip()]) == 1
    rep = json.loads(p.stdout.strip().splitlines()[-1])
    assert rep["devices"] == [] and rep["cpu"]["energy_j"] is not None


@pytest.mark.parametrize("args, fragment", [
    (["measure"], "no command"),
    (["measure", "--", "no-such-command-xyz"], "cannot run"),
    (["measure", "--rate-hz", "0", "--", "true"], "--rate-hz"),
    (["measure", "--gpu", "9", "--", "true"], "no GPU 9"),
])
def test_measure_bad_input(fake_nvml_dir, args, fragment):
    p = bench(fake_nvml_dir, "base_w=100", *args)
    assert p.returncode == 2 and "Traceback" not in p.stderr
    assert fragment in p.stderr.strip().splitlines()[-1]


def test_probe_finds_update_periods_and_support(fake_nvml_dir):
    p = bench(fake_nvml_dir, "base_w=300,amp_w=100,period_s=0.3,update_ms=100,"
              "power_update_ms=20,latency_us=50;base_w=300,counter=0,fields=0",
              "probe", "--json", "--duration-s", "1.0")
    assert p.returncode == 0, p.stderr
    d0, d1 = json.loads(p.stdout.strip().splitlines()[-1])["devices"]
    assert d0["energy_counter_update_period_s"] == pytest.approx(0.1, rel=0.05)
    assert d0["power_instant_update_period_s"] == pytest.approx(0.02, rel=0.1)
    assert d0["call_latency_p50_us"] >= 50
    assert d0["supported"] == {"energy_counter": True, "power_usage": True,
                               "power_instant_field": True, "power_average_field": True}
    assert d1["supported"]["energy_counter"] is False
    assert d1["supported"]["power_instant_field"] is False
    assert d1["energy_counter_update_period_s"] is None


def test_probe_without_gpu_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    p = subprocess.run([sys.executable, "-m", "bench", "probe"], capture_output=True,
                       text=True, timeout=60, env=env)
    if p.returncode == 0:
        pytest.skip("this machine has a GPU")
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1


def test_measure_passes_on_death_by_signal(tmp_path):
    p = subprocess.run([sys.executable, "-m", "bench", "measure", "--gpu", "none", "--json",
                        "--", sys.executable, "-c", "import os, signal; "
                        "os.kill(os.getpid(), signal.SIGTERM)"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 128 + 15
    assert json.loads(p.stdout.strip().splitlines()[-1])["exit_code"] == -15
