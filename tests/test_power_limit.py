"""The power-limit axis (issue 15) on the stand-in NVML: set, cap, refuse, and always restore."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.cli import main
from bench.devices import Device
from bench.errors import BenchError
from bench.sweep import SweepConfig, plan

from .conftest import FakeTruth, sigint_default

S = 1_000_000_000
SMALL = ["--batch", "1", "--input-len", "8", "--output-len", "4", "--dtype", "fp32",
         "--min-window-s", "0.4", "--repeats", "1", "--idle-s", "0.2", "--no-phases",
         "--quiet"]
UUID0 = "GPU-fa4e0000-0000-0000-0000-000000000000"


# -- the stand-in and nvml.py ----------------------------------------------------------

def test_stand_in_sets_within_constraints_and_caps_from_that_moment(fake_nvml, tmp_path,
                                                                     monkeypatch):
    import pynvml

    from bench.devices import nvml
    from bench.errors import NoSensor, SensorError

    state = tmp_path / "fake.state"
    monkeypatch.setenv("FAKE_NVML_STATE", str(state))
    fake_nvml("base_w=500,limit_w=600,min_limit_w=250,max_limit_w=650;base_w=500,perm=0")
    truth = FakeTruth(pynvml.nvmlLib)
    lim = nvml.power_limits(0)
    assert (lim.current_w, lim.default_w, lim.min_w, lim.max_w, lim.enforced_w) == \
        (600.0, 600.0, 250.0, 650.0, 600.0)
    nvml.init()  # held, so the stand-in keeps its power history between the calls below
    try:
        t_before = time.monotonic_ns()
        assert truth.true_power_w(0, t_before) == 500.0  # nothing capped before a set
        assert nvml.set_power_limit_w(0, 300) == 300.0
        t0 = time.monotonic_ns()
        time.sleep(0.05)
        t1 = time.monotonic_ns()
        assert truth.true_power_w(0, t0) == 300.0
        # the counter's truth integrates the capped power: 300 W x the interval
        assert truth.true_energy_j(0, t0, t1) == pytest.approx(300.0 * (t1 - t0) / S,
                                                               rel=1e-9)
        assert nvml.power_limits(0).enforced_w == 300.0
        assert state.read_text().split() == ["0", "300.000"]  # persists for other processes
        with pytest.raises(SensorError, match="invalid argument"):
            nvml.set_power_limit_w(0, 700)  # over max_limit_w
        with pytest.raises(NoSensor, match="needs root"):
            nvml.set_power_limit_w(1, 400)  # perm=0: NO_PERMISSION
        assert nvml.set_power_limit_w(0, 600) == 600.0
        time.sleep(0.01)
        assert truth.true_power_w(0, time.monotonic_ns()) == 500.0  # under the limit again
        assert state.read_text() == ""  # back at the default: nothing to keep
    finally:
        nvml.shutdown()


def test_a_limit_set_by_another_process_is_in_force_at_init(fake_nvml, tmp_path, monkeypatch):
    from bench.devices import nvml

    state = tmp_path / "fake.state"
    state.write_text("0 450.000\n")
    fake_nvml(f"base_w=500,state={state}")
    assert nvml.power_limits(0).current_w == 450.0
    assert nvml.power_limits(0).default_w == 700.0


# -- the sweep model ---------------------------------------------------------------------

def test_plan_groups_cells_by_limit_and_ids_carry_it():
    gpu = Device("cuda", 0, "G", "GPU-x")
    cfg = SweepConfig(batch_sizes=(4, 1), power_limit_w=(450, 300, 450), dtype="fp32")
    cells = plan(cfg, [gpu])
    assert [(c.power_limit_w, c.batch_size) for c in cells] == \
        [(450.0, 1), (450.0, 4), (300.0, 1), (300.0, 4)]
    assert cells[0].cell_id == "gpu0/tiny-llama/fp32/b1/i32/o32/pl450w"
    frac = plan(SweepConfig(batch_sizes=(1,), power_limit_frac=(0.5,), dtype="fp32"), [gpu])
    assert frac[0].cell_id.endswith("/pl0.5x") and frac[0].power_limit_w is None
    assert plan(SweepConfig(batch_sizes=(1,), dtype="fp32"), [gpu])[0].cell_id == \
        "gpu0/tiny-llama/fp32/b1/i32/o32"  # without the axis: ids as before


def test_the_axis_in_a_sweep_file(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("power_limit_frac = [0.5, 1.0]\n")
    assert SweepConfig.from_sources({}, str(f)).power_limit_frac == (0.5, 1.0)
    f.write_text("power_limit_w = ['x']\n")
    with pytest.raises(BenchError, match="power_limit_w must be a list of numbers"):
        SweepConfig.from_sources({}, str(f))


@pytest.mark.parametrize("args, fragment", [
    (["--power-limit-w", "300", "--power-limit-frac", "0.5"], "not both"),
    (["--power-limit-w", "0"], "positive"),
    (["--power-limit-w", "3x0"], "not a comma-separated list of numbers"),
    (["--endpoint", "http://127.0.0.1:1/v1", "--power-limit-w", "300"], "endpoint mode"),
    (["--gpu", "none", "--power-limit-w", "300"], "not on the CPU"),
])
def test_refusals_before_any_work(args, fragment, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("JOULEBENCH_LOCK_DIR", str(tmp_path / "locks"))
    out = tmp_path / "run"
    try:
        code = main(["run", *args, "--out", str(out)])
    except SystemExit as exc:  # argparse's own refusal
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("spec, args, fragment", [
    ("base_w=500", ["--power-limit-w", "150"], "outside its range 200-700 W"),
    ("base_w=500", ["--power-limit-w", "300,750"], "outside its range"),
    ("base_w=500,limit_w=600", ["--power-limit-frac", "1.25"], "1.25 x 600 W = 750 W"),
    ("base_w=500,perm=0", ["--power-limit-w", "300"], "needs root"),
])
def test_refused_on_the_gpu_before_any_work(spec, args, fragment, fake_nvml, tmp_path,
                                            monkeypatch, capsys):
    monkeypatch.setenv("JOULEBENCH_LOCK_DIR", str(tmp_path / "locks"))
    fake_nvml(spec)
    out = tmp_path / "run"
    assert main(["run", "--gpu", "0", *args, *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()
    assert not list((tmp_path / "locks").glob("*.power-limit.json"))  # nothing saved


# -- whole runs in subprocesses: the mean power follows the limit, and it always goes back --

def _env(fake_nvml_dir, tmp_path, spec="base_w=500"):
    state = tmp_path / "fake.state"
    return {**os.environ, "LD_LIBRARY_PATH": str(fake_nvml_dir),
            "FAKE_NVML_DEVICES": f"{spec},state={state}", "JOULEBENCH_MODEL_DEVICE": "cpu",
            "JOULEBENCH_LOCK_DIR": str(tmp_path / "locks")}


def _fake_limit(tmp_path) -> str:
    """The stand-in's limit of GPU 0 as every process sees it: '' is its default."""
    f = tmp_path / "fake.state"
    return f.read_text().strip() if f.exists() else ""


def _bench(env, *args, timeout=400):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _saved(tmp_path) -> list[Path]:
    return list((tmp_path / "locks").glob("*.power-limit.json"))


def test_a_sweep_over_two_limits_follows_them_and_restores(fake_nvml_dir, tmp_path):
    from bench.results import validate as V

    env = _env(fake_nvml_dir, tmp_path)
    out = tmp_path / "run"
    p = _bench(env, "run", "--gpu", "0", *SMALL, "--power-limit-w", "300,450",
               "--out", str(out))
    assert p.returncode == 0, p.stderr
    doc = json.loads((out / "result.json").read_text())
    got = {c["cell_id"]: c for c in doc["cells"]}
    for w in (300, 450):  # a 500 W device capped at w draws w (counter, 100 ms refresh)
        c = got[f"gpu0/tiny-llama/fp32/b1/i8/o4/pl{w}w"]
        assert c["power_limit_w"] == w and c["power_limit_set_w"] == w
        assert c["figures"]["mean_power_w"] == pytest.approx(w, rel=0.01)
    assert doc["config"]["power_limit_w"] == [300, 450]
    assert _fake_limit(tmp_path) == ""  # back to the default 700 W
    assert "power limit put back from 450 W to 700 W" in p.stderr
    assert not _saved(tmp_path) and not (out / "power-limits.json").exists()
    assert all(c.ok for c in V.validate(out)), [c.line() for c in V.validate(out)]
    # the plan check knows the axis; the fields are typed where present
    for mutate, rule in ((lambda c: c.update(power_limit_set_w=400.0), "plan"),
                         (lambda c: c.update(power_limit_w="300"), "schema")):
        bad = tmp_path / f"bad-{rule}"
        bad.mkdir()
        d = json.loads((out / "result.json").read_text())
        mutate(d["cells"][0])
        (bad / "result.json").write_text(json.dumps(d))
        (bad / "trace.parquet").write_bytes((out / "trace.parquet").read_bytes())
        assert rule in {c.rule for c in V.validate(bad) if not c.ok}
    table = _bench(env, "table", str(out), "--no-reference", "--format", "json")
    rows = json.loads(table.stdout)
    assert sorted(r["power_limit_w"] for r in rows) == [300, 450]


def test_a_failing_run_restores(fake_nvml_dir, tmp_path):
    bad = {"name": "bad-act", "model_type": "llama", "config": {
        "vocab_size": 256, "hidden_size": 64, "intermediate_size": 128,
        "num_hidden_layers": 1, "num_attention_heads": 2, "hidden_act": "no_such_act"}}
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(bad))
    env = _env(fake_nvml_dir, tmp_path)
    p = _bench(env, "run", "--gpu", "0", "--model", f"tiny-llama,{f}", *SMALL,
               "--power-limit-w", "300", "--out", str(tmp_path / "run"))
    assert p.returncode == 1, p.stderr
    assert _fake_limit(tmp_path) == "" and not _saved(tmp_path)
    assert "put back from 300 W to 700 W" in p.stderr


def _start_and_wait_for_limit(env, tmp_path, out, limit="300.000"):
    p = subprocess.Popen([sys.executable, "-m", "bench", "run", "--gpu", "0", *SMALL,
                          "--batch", "1,2,3,4", "--power-limit-w", "300", "--out", str(out)],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                         preexec_fn=sigint_default)
    deadline = time.monotonic() + 300
    while _fake_limit(tmp_path) != f"0 {limit}":
        assert time.monotonic() < deadline and p.poll() is None, p.stderr.read()  # type: ignore[union-attr]
        time.sleep(0.05)
    assert _saved(tmp_path)  # the original was saved before the set
    return p


@pytest.mark.parametrize("sig, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_ctrl_c_restore(sig, code, fake_nvml_dir, tmp_path):
    env = _env(fake_nvml_dir, tmp_path)
    p = _start_and_wait_for_limit(env, tmp_path, tmp_path / "run")
    p.send_signal(sig)
    _, err = p.communicate(timeout=240)
    assert p.returncode == code, err
    assert _fake_limit(tmp_path) == "" and not _saved(tmp_path), err
    assert "put back from 300 W to 700 W" in err


def test_sigkill_then_resume_puts_it_back_and_says_so(fake_nvml_dir, tmp_path):
    env = _env(fake_nvml_dir, tmp_path)
    out = tmp_path / "run"
    p = _start_and_wait_for_limit(env, tmp_path, out)
    p.kill()
    p.wait(timeout=60)
    time.sleep(0.5)  # the worker dies with its parent
    assert _fake_limit(tmp_path) == "0 300.000" and _saved(tmp_path)  # left as it was
    saved = json.loads(_saved(tmp_path)[0].read_text())
    assert saved["uuid"] == UUID0 and saved["original_w"] == 700.0
    r = _bench(env, "run", "--resume", str(out), "--quiet")
    assert r.returncode == 0, r.stderr
    assert "GPU 0: power limit put back from 300 W to 700 W (left by run" in r.stderr
    assert _fake_limit(tmp_path) == "" and not _saved(tmp_path)
    doc = json.loads((out / "result.json").read_text())
    assert doc["status"] == "complete" and len(doc["cells"]) == 4
    assert {c["power_limit_w"] for c in doc["cells"]} == {300.0}


def test_sigkill_then_restore_power_and_a_plain_run(fake_nvml_dir, tmp_path):
    env = _env(fake_nvml_dir, tmp_path)
    out = tmp_path / "run"
    p = _start_and_wait_for_limit(env, tmp_path, out)
    p.kill()
    p.wait(timeout=60)
    time.sleep(0.5)
    assert _fake_limit(tmp_path) == "0 300.000"
    r = _bench(env, "restore-power", str(out))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "GPU 0: power limit put back from 300 W to 700 W"
    assert _fake_limit(tmp_path) == "" and not _saved(tmp_path)
    r = _bench(env, "restore-power")
    assert r.returncode == 0 and r.stdout.strip() == "no power limit to put back"
    # killed again: a plain run (no power-limit option) puts it back and says so
    p = _start_and_wait_for_limit(env, tmp_path, tmp_path / "run2")
    p.kill()
    p.wait(timeout=60)
    time.sleep(0.5)
    r = _bench(env, "run", "--gpu", "0", *SMALL, "--out", str(tmp_path / "run3"))
    assert r.returncode == 0, r.stderr
    assert "GPU 0: power limit put back from 300 W to 700 W (left by run" in r.stderr
    assert _fake_limit(tmp_path) == ""
    doc = json.loads((tmp_path / "run3" / "result.json").read_text())
    assert "power_limit_w" not in doc["cells"][0]  # nothing set without the option


def test_device_check_never_sets_a_power_limit():
    script = (Path(__file__).resolve().parent.parent / "scripts" / "device_check.sh")
    assert "power-limit" not in script.read_text()
    assert "restore-power" not in script.read_text()
