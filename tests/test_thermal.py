"""Thermal and clock state per window, the throttled flag, and warm-up until steady (issue 17).

On the stand-in NVML (tests/fake_nvml/fake_nvml.c, its issue 17 block): temperature,
clocks and clock event reasons set by the test, read back into each window's ``thermal``
block; the flag and the count derived by ``figures.cell_record``; ``bench validate``
recomputing them; the warm-up ending ``steady`` under constant power and ``cap`` under a
sine that never settles.
"""

from __future__ import annotations

import ctypes
import json
import shutil
import time

import pytest

from bench import cells, runner
from bench.devices import Device
from bench.devices.nvml import NvmlEnergySource
from bench.meter import Meter
from bench.results import figures as F
from bench.results import table
from bench.results import validate as V
from bench.sampler import Sampler
from bench.sweep import Cell, SweepConfig
from bench.thermal import ThermalMonitor
from bench.workload import CallResult, Shape

from .conftest import install_fake_nvml

SW_POWER_CAP, HW_SLOWDOWN, GPU_IDLE = 0x4, 0x8, 0x1


def lib():
    import pynvml

    L = pynvml.nvmlLib
    L.fake_nvml_set_throttle.argtypes = [ctypes.c_int, ctypes.c_ulonglong]
    L.fake_nvml_set_temp_c.argtypes = [ctypes.c_int, ctypes.c_double]
    L.fake_nvml_set_clocks_mhz.argtypes = [ctypes.c_int, ctypes.c_double, ctypes.c_double]
    return L


def wait_for(monitor, pred, after_ns, timeout_s=10.0):
    """Block until the monitor's own thread has kept a reading after ``after_ns`` for which
    ``pred`` holds (deterministic: the test does not race the poll)."""
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if any(pred(r) for r in monitor.readings(after_ns, 2**62)):
            return
        time.sleep(0.005)
    raise AssertionError("the monitor never saw the change")


def sleep_call(seconds=0.01):
    def call():
        t0 = time.monotonic_ns()
        time.sleep(seconds)
        t1 = time.monotonic_ns()
        return CallResult(2, 8, t0, (t0 + t1) // 2, t1)
    return call


GPU = Device("cuda", 0, "Fake GPU 0", "GPU-fake")


def test_window_records_the_configured_temperature_and_clocks(fake_nvml):
    fake_nvml("base_w=300,temp_c=61,sm_mhz=1755,mem_mhz=2619")
    L = lib()
    src = NvmlEnergySource(0)
    try:
        with Sampler([0]) as s, ThermalMonitor(0, period_s=0.02) as mon:
            meter = Meter([src], sampler=s, thermal=mon)
            with meter.window("w") as w:
                t = time.monotonic_ns()
                L.fake_nvml_set_temp_c(0, 75.0)
                wait_for(mon, lambda r: r.temp_c == 75, t)
                t = time.monotonic_ns()
                L.fake_nvml_set_temp_c(0, 66.0)
                L.fake_nvml_set_clocks_mhz(0, 1600.0, 2619.0)
                wait_for(mon, lambda r: r.sm_mhz == 1600, t)
    finally:
        src.close()
    th = w.result.thermal
    assert th["temp_c_start"] == 61 and th["temp_c_end"] == 66
    assert th["temp_c_min"] == 61 and th["temp_c_max"] == 75
    assert th["sm_mhz_start"] == 1755 and th["sm_mhz_end"] == 1600
    assert (th["sm_mhz_min"], th["sm_mhz_max"]) == (1600, 1755)
    assert th["mem_mhz_min"] == th["mem_mhz_max"] == th["mem_mhz_start"] == 2619
    assert th["throttle_mask"] == 0 and th["throttle_reasons"] == []
    assert th["readings"] >= 4  # start, end and the two polls waited for


def test_throttle_set_mid_window_flags_that_window_only(fake_nvml):
    fake_nvml("base_w=300")
    L = lib()
    src = NvmlEnergySource(0)
    state = {"window": 0, "calls": 0}

    def call():
        # the third call inside window 2: power cap on until a poll has seen it, then off
        state["calls"] += 1
        if state["window"] == 2 and state["calls"] == 3:
            t = time.monotonic_ns()
            L.fake_nvml_set_throttle(0, SW_POWER_CAP)
            wait_for(mon, lambda r: r.reasons == SW_POWER_CAP, t)
            L.fake_nvml_set_throttle(0, 0)
        return sleep_call(0.01)()

    reps = []
    try:
        with Sampler([0]) as s, ThermalMonitor(0, period_s=0.02) as mon:
            meter = Meter([src], sampler=s, thermal=mon)
            for k in (1, 2, 3):
                state.update(window=k, calls=0)
                if k == 3:
                    L.fake_nvml_set_throttle(0, GPU_IDLE)  # idle: not throttling
                reps.append(cells.measure_window(meter, f"c#{k}", call, 0.1, None))
    finally:
        src.close()
    assert [r["thermal"]["throttle_reasons"] for r in reps] == [
        [], ["sw_power_cap"], ["gpu_idle"]]
    # the cap was off again at both edges of window 2: only a poll inside saw it
    assert [r["thermal"]["throttle_mask"] for r in reps] == [0, 4, 1]
    rec = F.cell_record(F.CellRaw(Cell(GPU, "tiny-llama", "fp32", 1, 8, 4), "ok",
                                  repeats=reps))
    assert [r["throttled"] for r in rec["repeats"]] == [False, True, False]
    assert rec["throttled_windows"] == 1


def test_flag_and_count_worked_by_hand():
    def win(names):
        return {"thermal": {"throttle_reasons": names}}

    cases = [(["hw_slowdown"], True), (["sw_thermal_slowdown"], True),
             (["hw_thermal_slowdown", "gpu_idle"], True), (["hw_power_brake_slowdown"], True),
             (["applications_clocks_setting", "gpu_idle", "sync_boost"], False), ([], False),
             (None, None)]
    for names, want in cases:
        assert F.flag_throttled(win(names))["throttled"] is want, names
    # a CPU window (no thermal block) has no flag, even a stale one
    assert "throttled" not in F.flag_throttled({"throttled": True, "duration_s": 1.0})
    flagged = [F.flag_throttled(win(n)) for n, _ in cases]
    assert F.throttled_windows(flagged) == 4
    assert F.throttled_windows([F.flag_throttled(win(None))]) is None
    assert F.throttled_windows([{"duration_s": 1.0}]) is None


def test_not_supported_gives_nulls_and_old_drivers_answer_the_throttle_call(fake_nvml):
    fake_nvml("base_w=300,thermal=0;base_w=300,event_reasons=0,throttle=8")
    src = NvmlEnergySource(0)
    try:
        with Sampler([0]) as s, ThermalMonitor(0) as mon, ThermalMonitor(1) as old:
            assert mon.supported == {"temp_c": False, "sm_mhz": False, "mem_mhz": False,
                                     "reasons": False}
            meter = Meter([src], sampler=s, thermal=mon)
            rep = cells.measure_window(meter, "c#0", sleep_call(), 0.05, None)
            r = old.sample_now()
    finally:
        src.close()
    th = rep["thermal"]
    assert th["throttle_reasons"] is None and th["throttle_mask"] is None
    for k in ("temp_c", "sm_mhz", "mem_mhz"):
        for end in ("start", "end", "min", "max"):
            assert th[f"{k}_{end}"] is None
    assert rep["energy"]["gpu"]["energy_j"] > 0  # the energy is measured all the same
    rec = F.cell_record(F.CellRaw(Cell(GPU, "tiny-llama", "fp32", 1, 8, 4), "ok",
                                  repeats=[rep]))
    assert rec["repeats"][0]["throttled"] is None and rec["throttled_windows"] is None
    assert r.reasons == HW_SLOWDOWN and r.temp_c == 45  # the stand-in's defaults


class SleepWorkload:
    """A workload whose calls sleep: the stand-in's power is what the test configures."""

    def __init__(self, call_s=0.02):
        self.calls = 0
        self.call_s = call_s

    def warm_up(self, shape, calls):
        for _ in range(calls):
            self.call(shape)

    def call(self, shape):
        self.calls += 1
        return sleep_call(self.call_s)()


def warm(spec, fake_nvml, cap_s, call_s=0.02):
    fake_nvml(spec)
    cfg = SweepConfig(min_window_s=0.5, warmup=1, warmup_cap_s=cap_s).resolved("cuda")
    wl = SleepWorkload(call_s)
    with Sampler([0]) as s:
        out = cells.warm_up(wl, Shape(1, 8, 4), cfg, s)
    assert out["calls"] == wl.calls
    return out


def test_warm_up_ends_steady_under_constant_power(fake_nvml):
    out = warm("base_w=300,power_update_ms=20", fake_nvml, 10.0)
    assert out["ended"] == "steady"
    assert out["steady_span_s"] == 0.25  # half the 0.5 s window (under 1 s)
    # four spans of samples after the warm-up began, well before the cap
    assert 1.0 <= out["seconds"] < 10.0, out
    assert out["cap_s"] == 10.0 and out["calls"] >= 2


def test_warm_up_spans_hold_a_whole_call_where_calls_are_longer(fake_nvml):
    out = warm("base_w=300,power_update_ms=20", fake_nvml, 10.0, call_s=0.4)
    assert out["ended"] == "steady" and out["steady_span_s"] >= 0.4, out
    assert out["seconds"] >= 4 * 0.4


def test_warm_up_ends_at_the_cap_under_power_that_never_settles(fake_nvml):
    # 300 +/- 150 W with a 4 s period: any 1 s of it spans a quarter period, so the
    # four 0.25 s means differ by far more than 1%
    out = warm("base_w=300,amp_w=150,period_s=4,power_update_ms=20", fake_nvml, 2.5)
    assert out["ended"] == "cap" and out["seconds"] >= 2.5 and out["calls"] > 10


def test_warm_up_on_the_cpu_is_the_calls_alone():
    cfg = SweepConfig(min_window_s=0.5, warmup=2).resolved("cpu")
    assert cfg.warmup_cap_s == 0.0
    wl = SleepWorkload()
    out = cells.warm_up(wl, Shape(1, 8, 4), cfg, None)
    assert (out["ended"], out["calls"], wl.calls, out["cap_s"]) == ("calls", 2, 2, None)
    assert SweepConfig().resolved("cuda").warmup_cap_s == 30.0


def test_power_steady_by_hand():
    S = 1_000_000_000
    t = [int(i * S / 100) for i in range(401)]  # 100 Hz for 4 s
    flat = [100.0] * 401
    assert cells.power_steady(t, flat, 0, 4 * S, 1.0)
    assert not cells.power_steady(t, flat, 1, 4 * S, 1.0)  # not 4 s of warm-up yet
    # the last 1 s 2% higher: 2% off the median of the four means (100), not within 1%
    step = [100.0] * 300 + [102.0] * 101
    assert not cells.power_steady(t, step, 0, 4 * S, 1.0)
    small = [100.0] * 300 + [100.9] * 101  # 0.9% off: within
    assert cells.power_steady(t, small, 0, 4 * S, 1.0)
    gap = [100.0] * 401
    t_gap = t[:100] + [x + 2 * S for x in t[:1]]  # the second span holds no sample
    assert not cells.power_steady(t_gap, gap[:101], 0, 4 * S, 1.0)


@pytest.fixture(scope="module")
def throttled_run(fake_nvml_dir, tmp_path_factory):
    """A run through the GPU path with the stand-in power-capped the whole time."""
    from bench.devices import nvml

    install_fake_nvml(fake_nvml_dir)
    out = tmp_path_factory.mktemp("thermal") / "run"
    spec = "base_w=250,update_ms=100,temp_c=58,sm_mhz=1410,throttle=4"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_NVML_DEVICES", spec)
        mp.setenv("LD_LIBRARY_PATH", str(fake_nvml_dir))
        mp.setenv("JOULEBENCH_MODEL_DEVICE", "cpu")
        mp.setenv("JOULEBENCH_LOCK_DIR", str(fake_nvml_dir))
        dev = Device("cuda", 0, "Fake GPU 0", "GPU-fake", {"power_limit_w": 700.0})
        cfg = runner.SweepConfig(batch_sizes=(1,), input_lens=(8,), output_lens=(4,),
                                 dtype="fp32", min_window_s=0.3, repeats=2, idle_s=0.3,
                                 warmup_cap_s=20.0)  # steady ends it: a cap costs nothing
        run = runner.start_run(cfg, [dev], out)
        runner.execute(run)
    assert nvml._init_count == 0
    return out


def test_run_records_thermal_warmup_and_throttled_windows(throttled_run):
    doc = json.loads((throttled_run / "result.json").read_text())
    assert all(c.ok for c in V.validate(throttled_run)), \
        [c.line() for c in V.validate(throttled_run) if not c.ok]
    (cell,) = doc["cells"]
    windows = [*cell["repeats"], cell["phases"]["subtraction"]["prefill_window"]]
    for w in windows:
        assert w["thermal"]["temp_c_start"] == 58 and w["thermal"]["sm_mhz_max"] == 1410
        assert w["thermal"]["throttle_reasons"] == ["sw_power_cap"] and w["throttled"] is True
    assert cell["throttled_windows"] == 3  # two repeats and the prefill window
    assert cell["warmup"]["ended"] == "steady" and cell["warmup"]["cap_s"] == 20.0
    assert cell["warmup"]["calls"] >= 1 and cell["warmup"]["seconds"] > 0
    (row,) = table.rows_from_document(doc)
    assert row["throttled_windows"] == 3


def tampered(src, tmp_path, edit):
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    p = dst / "result.json"
    doc = json.loads(p.read_text())
    edit(doc["cells"][0])
    p.write_text(json.dumps(doc))
    return {c.rule for c in V.validate(dst) if not c.ok}


def test_validate_catches_a_tampered_flag(throttled_run, tmp_path):
    def flag(c):
        c["repeats"][0]["throttled"] = False

    def reasons(c):  # the reasons changed, the flag left: no longer follows
        c["repeats"][1]["thermal"]["throttle_reasons"] = ["gpu_idle"]

    def prefill(c):
        c["phases"]["subtraction"]["prefill_window"]["throttled"] = False

    def count(c):
        c["throttled_windows"] = 0

    def typed(c):
        c["repeats"][0]["throttled"] = "no"

    for i, edit in enumerate((flag, reasons, prefill, count)):
        assert "figures" in tampered(throttled_run, tmp_path / str(i), edit), edit.__name__
    assert "schema" in tampered(throttled_run, tmp_path / "t", typed)


def test_a_bad_warmup_cap_is_one_line_and_exit_2(tmp_path, capsys):
    from bench.cli import main

    for v in ("-1", "nan", "x"):
        try:
            rc = main(["run", "--gpu", "none", "--warmup-cap-s", v, "--quiet", "--out",
                       str(tmp_path / v)])
        except SystemExit as exc:  # argparse's own refusal of a non-number
            rc = exc.code
        assert rc == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "warm" in err[0] and "Traceback" not in err[0], err


def test_stand_in_temperature_follows_power(fake_truth):
    configure, truth = fake_truth
    configure("base_w=300,temp_c=40,temp_c_per_w=0.1")
    with ThermalMonitor(0, period_s=1.0) as mon:
        assert mon.sample_now().temp_c == 40  # at base power
        truth.set_power_w(0, 500.0)
        assert mon.sample_now().temp_c == 60  # 40 + 0.1 C/W x 200 W
