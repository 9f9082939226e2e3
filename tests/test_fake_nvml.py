"""The stand-in NVML itself: step histories integrate exactly, refreshes land on the period."""

import time

import numpy as np
import pynvml
import pytest

from bench.devices import nvml

from .conftest import true_energy_j

MS = 1_000_000  # ns per ms
S = 1_000_000_000  # ns per s


@pytest.fixture
def nvml_on(fake_truth):
    """(configure, truth) with NVML held for the test (the spec is read at init)."""
    configure, truth = fake_truth
    held = []

    def start(spec):
        configure(spec)
        nvml.init()
        held.append(1)

    yield start, truth
    if held:
        nvml.shutdown()


def test_step_history_integrates_exactly(nvml_on):
    start, truth = nvml_on
    start("base_w=100")
    t0 = time.monotonic_ns() + 50 * MS
    ta = truth.set_power_w(0, 600.0, t0 + 300 * MS)
    tb = truth.set_power_w(0, 250.0, t0 + 1_300 * MS)
    assert (ta, tb) == (t0 + 300 * MS, t0 + 1_300 * MS)
    # by hand: 0.3 s at 100 W, 1.0 s at 600 W, 0.7 s at 250 W
    assert truth.true_energy_j(0, t0, t0 + 2 * S) == pytest.approx(30 + 600 + 175, abs=1e-6)
    # inside one step: 0.25 s at 600 W; a step after the query changes nothing before it
    assert truth.true_energy_j(0, ta + 100 * MS, ta + 350 * MS) == pytest.approx(150, abs=1e-6)
    assert truth.true_power_w(0, ta - 1) == 100.0 and truth.true_power_w(0, ta) == 600.0
    assert truth.true_power_w(0, tb + S) == 250.0
    t, w = truth.history(0)
    assert list(t) == [ta, tb] and list(w) == [500.0, 150.0]  # steps above base_w
    with pytest.raises(ValueError):  # the history only grows forward
        truth.set_power_w(0, 100.0, ta)
    with pytest.raises(ValueError):
        truth.set_power_w(5, 100.0)


def test_truth_of_the_sine_level_plus_a_step(nvml_on):
    start, truth = nvml_on
    start("base_w=300,amp_w=50,period_s=0.4")
    t0 = time.monotonic_ns() + 10 * MS
    ts = truth.set_power_w(0, 400.0, t0 + 500 * MS)  # the level moves up by 100 W
    t1 = t0 + S
    want = (true_energy_j(t1 * 1e-9, 300, 50, 0.4) - true_energy_j(t0 * 1e-9, 300, 50, 0.4)
            + 100 * 0.5)
    assert truth.true_energy_j(0, t0, t1) == pytest.approx(want, rel=1e-12)
    assert truth.true_energy_j(0, t0, ts) == pytest.approx(
        true_energy_j(ts * 1e-9, 300, 50, 0.4) - true_energy_j(t0 * 1e-9, 300, 50, 0.4),
        rel=1e-12)


def _poll_counter(h, seconds):
    """(poll time before, poll time after, value in mJ) for every read over ``seconds``."""
    out = []
    end = time.monotonic_ns() + int(seconds * S)
    while True:
        a = time.monotonic_ns()
        v = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        b = time.monotonic_ns()
        out.append((a, b, v))
        if b > end:
            return out
        time.sleep(0.0005)


def test_counter_refreshes_land_on_the_period_with_the_exact_integral(nvml_on):
    start, truth = nvml_on
    start("base_w=100,counter_period_ms=50,counter_phase_ms=7")
    h = nvml.handle(0)
    t_step = truth.set_power_w(0, 700.0, time.monotonic_ns() + 120 * MS)
    polls = _poll_counter(h, 0.4)
    changes = 0
    for (_, b0, v0), (a1, b1, v1) in zip(polls, polls[1:], strict=False):
        u = truth.counter_refresh_ns(0, a1)
        assert (u - 7 * MS) % (50 * MS) == 0  # on the grid: phase + k x period
        if v1 != v0:
            changes += 1
            # the refresh that changed it happened between the two reads
            assert b0 - 50 * MS < u <= b1
        if truth.counter_refresh_ns(0, b1) == u:  # the read saw refresh u, exactly
            assert v1 == np.floor(truth.true_energy_j(0, 0, u) * 1000)
    assert 6 <= changes <= 9  # 0.4 s at 50 ms
    # the slope of the counter after the step is 700 W: 35 J per refresh
    assert truth.true_energy_j(0, t_step + 50 * MS, t_step + 100 * MS) == pytest.approx(35.0)


def test_instant_power_is_a_window_mean_at_its_own_refresh(nvml_on):
    start, truth = nvml_on
    start("base_w=100,power_period_ms=100,power_window_ms=25")
    h = nvml.handle(0)
    r = (time.monotonic_ns() // (100 * MS) + 3) * 100 * MS  # a refresh 0.2-0.3 s ahead
    truth.set_power_w(0, 600.0, r - 10 * MS)
    for _ in range(3):  # a busy machine may read late; then the next refresh is checked
        time.sleep(max(0.0, (r + 20 * MS - time.monotonic_ns()) * 1e-9))
        a = time.monotonic_ns()
        (f,) = pynvml.nvmlDeviceGetFieldValues(h, [186])
        b = time.monotonic_ns()
        if a // (100 * MS) == b // (100 * MS):
            break
    u = (a // (100 * MS)) * 100 * MS
    assert f.value.uiVal * 1e-3 == pytest.approx(
        truth.true_energy_j(0, u - 25 * MS, u) / 0.025, abs=1e-3)
    if u == r:  # by hand: 15 ms at 100 W and 10 ms at 600 W over 25 ms
        assert f.value.uiVal == 300_000


def test_power_follows_this_process_cpu_use(nvml_on):
    start, truth = nvml_on
    start("base_w=50,busy_w=400")
    time.sleep(0.3)
    t0 = time.monotonic_ns()
    time.sleep(0.3)  # idle: only the library's own thread and noise run
    t1 = time.monotonic_ns()
    x = 0
    cpu0 = time.thread_time()
    while time.monotonic_ns() < t1 + 300 * MS:  # one core busy
        x += 1
    t2 = time.monotonic_ns()
    busy_frac = (time.thread_time() - cpu0) / ((t2 - t1) * 1e-9)  # what the core gave us
    idle_w = truth.true_energy_j(0, t0, t1) / ((t1 - t0) * 1e-9)
    busy_w = truth.true_energy_j(0, t1, t2) / ((t2 - t1) * 1e-9)
    assert 50 <= idle_w < 150
    # power follows the CPU this process got (a busy machine takes part of the core):
    # 50 W + 400 W x that share, less the 1 ms lag at the start and rounding (10%)
    assert busy_w >= 50 + 0.9 * 400 * min(busy_frac, 1.0), (busy_w, busy_frac)
    assert busy_w > idle_w
    t, w = truth.history(0)
    assert t.size > 100 and np.all(np.diff(t) > 0) and w.min() >= 0 and w.max() <= 400
