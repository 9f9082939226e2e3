"""The sampler and meter against the stand-in NVML: known answers through the real pynvml.

The machine running these may be busy: tolerances on energy come from the run's own
samples (tests/timing.py), and tests wait for what they need rather than sleeping a
fixed time.
"""

import math
import time

import numpy as np
import pytest

from bench.devices import nvml
from bench.devices.nvml import NvmlEnergySource
from bench.errors import NoSensor
from bench.meter import Meter
from bench.sampler import Sampler

from .conftest import true_energy_j
from .timing import (
    counter_window_error_j,
    fitted_counter_window_error_j,
    max_gap_s,
    wait_until,
)

RATE_HZ = 1000


def measure(sources, sampler, seconds, work=None):
    m = Meter(sources, sampler=sampler)
    with m.window("w") as w:
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            if work:
                work()
            else:
                time.sleep(0.01)
    return w.result


def sampled(seconds, gpus=(0,), rate_hz=RATE_HZ, sample=True):
    """One window over ``seconds`` with NVML sources (and a sampler) for ``gpus``.

    Returns:
        (measurement, which GPUs were lost, the traces), the last two None unsampled.
    """
    srcs = [NvmlEnergySource(i) for i in gpus]
    try:
        if not sample:
            return measure(srcs, None, seconds), None, None
        with Sampler(list(gpus), rate_hz=rate_hz) as s:
            r = measure(srcs, s, seconds)
        return r, s.lost(), s.traces()
    finally:
        for x in srcs:
            x.close()


def truth(r, **kw):
    return true_energy_j(r.t1_ns * 1e-9, **kw) - true_energy_j(r.t0_ns * 1e-9, **kw)


def counter_bound(tr, r, power_w, reading=None):
    """The interval (measured - true) must lie in, from this trace's gaps (constant power).

    For the estimator the reading says it used: refreshes at their fitted times (then the
    true energy must also lie in the reading's stated interval) or interpolated between
    the samples that saw them. A window opened ~1 ms after its sampler starts has a
    counter refresh before it only now and then; the fitted estimate then applies, and
    it can read high by up to the gap around an edge where the interpolated one cannot.
    """
    rd = reading if reading is not None else r.readings[0]
    t, e = tr.energy_valid()
    lat = tr.latency_ns[tr.energy_status == nvml.SUCCESS]
    if rd.stats.get("counter_edges") == "fitted":
        true_j = truth(r, base_w=power_w)
        assert rd.stats["energy_low_j"] <= true_j <= rd.stats["energy_high_j"], (
            true_j, rd.stats)
        return fitted_counter_window_error_j(t, e, lat, r.t0_ns, r.t1_ns, power_w)
    return counter_window_error_j(t, e, lat, r.t0_ns, r.t1_ns, power_w)


def test_discovery_through_real_pynvml(fake_nvml):
    fake_nvml("base_w=200;base_w=400,counter=0,limit_w=350")
    gpus = nvml.discover()
    assert [g.index for g in gpus] == [0, 1]
    assert gpus[0].has_energy_counter and not gpus[1].has_energy_counter
    assert gpus[1].power_limit_w == pytest.approx(350.0)
    assert gpus[0].uuid.startswith("GPU-") and gpus[0].driver == "999.99-fake"


def test_stale_counter_window_within_its_trace_bound(fake_nvml):
    fake_nvml("base_w=300,update_ms=100")
    r, _, (tr,) = sampled(2.05)
    assert r.method("gpu") == "counter"
    # Was a fixed 0.1%; the error is set by how late the sampler saw the counter updates
    # around each edge: ~1 ms of power (0.3 J, 0.05%) on an idle machine, more when the
    # thread waited. Reading the stale counter at the edges instead is off by up to 30 J.
    lo, hi = counter_bound(tr, r, 300.0)
    err = r.energy_j("gpu") - truth(r, base_w=300)
    assert lo <= err <= hi, (err, lo, hi, max_gap_s(tr.t_ns, r.t0_ns, r.t1_ns))
    st = r.readings[0].stats
    inside = int(((tr.t_ns >= r.t0_ns) & (tr.t_ns <= r.t1_ns)).sum())
    assert st["samples"] == inside
    # The loop never runs ahead of its 1 ms grid (one tick of slack at each end); a busy
    # machine only delays ticks, so the floor is loose: it catches a dead loop or a
    # period in the wrong unit, not a slow machine.
    assert RATE_HZ / 4 * r.duration_s <= inside <= RATE_HZ * r.duration_s + 2
    assert st["mean_power_w"] == pytest.approx(300, rel=1e-9)  # field 186 of constant power


class TimedSource:
    """Wraps an energy source and notes when each read finished (monotonic ns)."""

    def __init__(self, src):
        self.src, self.done_ns = src, []
        self.name, self.device, self.scope = src.name, src.device, src.scope
        self.method, self.description = src.method, src.description

    def read_j(self):
        v = self.src.read_j()
        self.done_ns.append(time.monotonic_ns())
        return v


def test_edge_reads_alone_are_off_by_the_update_period(fake_nvml):
    # Without the sampler the counter's staleness shows: the reason the sampler exists.
    fake_nvml("base_w=300,update_ms=100")
    src = NvmlEnergySource(0)
    timed = TimedSource(src)
    try:
        r = measure([timed], None, 0.35)
    finally:
        src.close()
    # Each edge reads a value up to one update period (100 ms) old, read up to `late`
    # after the edge's timestamp (the thread can be preempted in between on a busy
    # machine), so the error is within 300 W x (100 ms + late), plus the mJ flooring.
    late_s = max(timed.done_ns[0] - r.t0_ns, timed.done_ns[1] - r.t1_ns) * 1e-9
    assert abs(r.energy_j("gpu") - truth(r)) <= 300 * (0.1 + late_s) + 2e-3


def test_power_integration_within_its_curvature_bound_without_counter(fake_nvml):
    base, amp, period = 300.0, 150.0, 0.7
    fake_nvml(f"base_w={base:g},amp_w={amp:g},period_s={period:g},counter=0,"
              "power_update_ms=0")
    r, _, (tr,) = sampled(2.0)
    assert r.method("gpu") == "power_integration"
    assert r.readings[0].stats["covered_fraction"] == 1.0
    # Was a fixed 1%. Power is exact at each read, so the error is the trapezoid's on a
    # sine: at most h^3/8 x max|P''| per interval h (/8, not /12: the edge intervals are
    # interpolated), plus max|P'| x half a call for the stamp at the call's middle, plus
    # 0.5 mW of rounding. From this run's gaps: ~0.01 J on an idle machine. 1e-4 of the
    # energy covers what this leaves out; a wrong rule (rectangles, no edge
    # interpolation, a unit slip) is off by far more.
    t, _ = tr.power_valid()
    lat = tr.latency_ns[tr.power_status == nvml.SUCCESS]
    i0 = max(int(np.searchsorted(t, r.t0_ns)) - 1, 0)
    i1 = int(np.searchsorted(t, r.t1_ns)) + 1
    h = np.diff(t[i0:i1]) * 1e-9
    w = 2 * math.pi / period
    true_j = truth(r, base_w=base, amp_w=amp, period_s=period)
    tol = ((h ** 3).sum() / 8 * amp * w * w + r.duration_s * amp * w * lat.max() * 1e-9 / 2
           + 0.5e-3 * r.duration_s + 1e-4 * true_j)
    assert abs(r.energy_j("gpu") - true_j) <= tol, (r.energy_j("gpu") - true_j, tol, h.max())


def test_counter_reset_inside_window(fake_nvml):
    fake_nvml("base_w=250,update_ms=50,reset_at_s=1.0")
    r, _, (tr,) = sampled(2.0)
    # unwrapped: at most the energy of one update period (50 ms x 250 W) is lost at a
    # reset, plus the edges' error from this run's sampling gaps
    lo, hi = counter_bound(tr, r, 250.0)
    err = r.energy_j("gpu") - truth(r, base_w=250)
    assert lo - 250 * 0.05 <= err <= hi + 250 * 0.05, (err, lo, hi)


def test_gpu_lost_mid_run_is_null_and_others_go_on(fake_nvml):
    fake_nvml("base_w=200;base_w=300,lost_after_s=0.8")
    r, lost, (tr, _) = sampled(1.5, gpus=(0, 1), rate_hz=500)
    good, bad = r.readings
    lo, hi = counter_bound(tr, r, 200.0, good)  # was a fixed 0.1%: see above
    assert lo <= good.energy_j - truth(r, base_w=200) <= hi
    assert bad.energy_j is None and "lost" in bad.reason.lower()
    assert lost == {0: False, 1: True}


def test_missing_library_symbol_becomes_no_sensor(fake_nvml):
    fake_nvml("base_w=100")
    nvml.init()
    try:
        with pytest.raises(NoSensor, match="lacks"):
            nvml.function_addresses(["nvmlDeviceGetNothing"])
    finally:
        nvml.shutdown()


def test_buffers_grow_across_chunks(fake_nvml):
    fake_nvml("base_w=100,update_ms=10")
    chunk = 256
    with Sampler([0], rate_hz=2000, chunk=chunk) as s:
        # wait for samples, not for time: four chunks' worth, however slow the machine
        assert wait_until(lambda: len(s.traces()[0]) > 3 * chunk, timeout_s=60)
    (tr,) = s.traces()
    assert len(tr) > 3 * chunk
    assert np.all(np.diff(tr.t_ns) > 0)  # nothing repeated or reordered at chunk joins
    assert not s.running


def gil_free_busy(seconds):
    """CPU work that releases the GIL (hashing large buffers): the control."""
    import hashlib

    buf = b"x" * (1 << 20)
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        hashlib.sha256(buf).digest()


def gil_heavy(seconds):
    """Pure-Python work that holds the GIL."""
    x = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        for i in range(1000):
            x += i * i
    return x


def samples_during(s, work, seconds):
    t0 = time.monotonic_ns()
    work(seconds)
    t1 = time.monotonic_ns()
    assert s.wait_past(t1, timeout_s=30)
    return [int(((tr.t_ns >= t0) & (tr.t_ns <= t1)).sum()) for tr in s.traces()]


def test_sampler_holds_rate_under_gil_heavy_main_thread(fake_nvml):
    # Was: >= 95% of the nominal rate. Other processes on a busy machine delay the
    # thread's wake-ups whatever the code does, so the test compares the loop with itself:
    # the main thread busy holding the GIL vs. equally busy with the GIL released, back to
    # back. A thread that needs the GIL for each tick falls to ~36-40% (a Python polling
    # thread, shared/notes/measurement.md); the numba loop is unaffected, and phases
    # beside a CPU hog were seen to differ by up to 17%, hence 0.75. Up to three attempts
    # for a burst of outside load; the 99% goal is measured by tests/perf.
    fake_nvml("base_w=100;base_w=100")
    ratios = []
    with Sampler([0, 1], rate_hz=1000) as s:
        time.sleep(0.2)
        for _ in range(3):
            control = samples_during(s, gil_free_busy, 1.0)
            heavy = samples_during(s, gil_heavy, 1.0)
            ratios.append(min(h / max(c, 1) for h, c in zip(heavy, control, strict=True)))
            if ratios[-1] >= 0.75 and min(control) >= 250:
                break
    assert ratios[-1] >= 0.75 and min(control) >= 250, (ratios, control, heavy)


def test_traces_since_leaves_out_old_chunks(fake_nvml):
    fake_nvml("base_w=100")
    chunk = 200
    with Sampler([0], rate_hz=2000, chunk=chunk) as s:
        # at least two whole chunks before `mid`, and samples after it, however slow
        assert wait_until(lambda: len(s.traces()[0]) > 2 * chunk, timeout_s=60)
        mid = time.monotonic_ns()
        assert s.wait_past(mid, timeout_s=30)
        (whole,) = s.traces()
        (recent,) = s.traces(since_ns=mid)
    assert len(recent) < len(whole)
    assert recent.t_ns[0] <= mid  # the chunk holding `mid` is kept whole
    assert recent.t_ns[-1] >= whole.t_ns[-1]  # taken later: nothing recent is lost


def test_traces_since_keeps_a_sample_before_it_when_it_falls_between_chunks():
    # `since` between the last sample of one chunk and the first of the next: the earlier
    # chunk must stay, or a window starting there has no sample before its edge
    s = Sampler([0], rate_hz=1000, chunk=3)

    def chunk(times):
        t = np.array([times], np.int64)
        n = t.shape[1]
        return (t, np.zeros((1, n)), np.zeros((1, n)), np.zeros((1, n), np.int64),
                np.zeros((1, n), np.int32), np.zeros((1, n), np.int32))

    s._chunks = [chunk([1, 2, 3]), chunk([4, 5, 6]), chunk([7, 8, 9])]
    assert list(s.traces(since_ns=6)[0].t_ns) == [4, 5, 6, 7, 8, 9]
    assert list(s.traces(since_ns=6.5)[0].t_ns) == [4, 5, 6, 7, 8, 9]  # between chunks
    assert list(s.traces(since_ns=7)[0].t_ns) == [7, 8, 9]  # 7 itself is at or before
    assert list(s.traces(since_ns=10)[0].t_ns) == [7, 8, 9]
    assert list(s.traces(since_ns=0)[0].t_ns) == list(range(1, 10))  # nothing before
