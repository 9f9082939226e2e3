"""Window edges on power steps and under contention, against the stand-in's exact truth.

The real path (bench.sampler.Sampler + bench.meter.Meter) on the stand-in NVML whose power
steps up when the work starts and down when it ends, as a GPU's does; the stand-in's
``fake_nvml_true_energy_j`` gives the true energy of each window.
"""

import os
import subprocess
import sys
import time

import numpy as np
import pytest

from bench.devices.nvml import NvmlEnergySource
from bench.kernels import trace as K
from bench.meter import Meter
from bench.sampler import Sampler

MS = 1_000_000
S = 1_000_000_000

# H100-like: counter and instant power refresh every 100 ms, the power a 25 ms mean
H100_LIKE = "base_w={idle},counter_period_ms=100,power_period_ms=100,power_window_ms=25"


def run_windows(truth, n, seconds, idle_w=100.0, busy_w=600.0, rate_hz=1000):
    """``n`` meter windows of ``seconds``; power steps to busy_w inside each edge.

    Returns one row per window: t0/t1, the meter's energy (today's interpolation), the
    bounded estimate and its interval (from the same trace) and the true energy.
    """
    src = NvmlEnergySource(0)
    rows = []
    try:
        with Sampler([0], rate_hz=rate_hz) as s:
            meter = Meter([src], sampler=s)
            time.sleep(0.3)
            for _ in range(n):
                with meter.window("w") as w:
                    truth.set_power_w(0, busy_w)  # the kernels start
                    time.sleep(seconds)
                    truth.set_power_w(0, idle_w)  # and stop before the edge is taken
                m = w.result
                (tr,) = s.traces(since_ns=m.t0_ns - 2 * S)
                ok = tr.energy_status == 0
                tp, pw = tr.power_valid()
                est, lo, hi, period = K.counter_window_bounds_j(
                    tr.t_ns[ok], tr.energy_j[ok], m.t0_ns, m.t1_ns, tp, pw,
                    tr.latency_ns[ok])
                sure = K.counter_window_sure_bounds_j(tr.t_ns[ok], tr.energy_j[ok],
                                                      m.t0_ns, m.t1_ns, tr.latency_ns[ok])
                rows.append({"t0": m.t0_ns, "t1": m.t1_ns, "meter_j": m.energy_j("gpu"),
                             "est_j": est, "lo_j": lo, "hi_j": hi, "period_s": period,
                             "sure_lo_j": sure[0], "sure_hi_j": sure[1],
                             "true_j": truth.true_energy_j(0, m.t0_ns, m.t1_ns)})
    finally:
        src.close()
    return rows


def summary(rows):
    true = np.array([r["true_j"] for r in rows])
    old = np.array([r["meter_j"] for r in rows]) - true
    new = np.array([r["est_j"] for r in rows]) - true
    width = np.array([r["hi_j"] - r["lo_j"] for r in rows])
    return {"windows": len(rows), "mean_true_j": true.mean(),
            "meter_bias_pct": 100 * (old / true).mean(),
            "meter_abs_max_pct": 100 * np.abs(old / true).max(),
            "new_bias_pct": 100 * (new / true).mean(),
            "bound_width_pct": 100 * (width / true).mean(),
            "contained": int(sum(r["lo_j"] <= r["true_j"] <= r["hi_j"] for r in rows)),
            "sure_width_pct": 100 * np.mean([(r["sure_hi_j"] - r["sure_lo_j"]) / r["true_j"]
                                             for r in rows])}


def test_steps_at_the_edges_bias_the_meter_low_and_the_bound_holds(fake_truth, capsys):
    configure, truth = fake_truth
    configure(H100_LIKE.format(idle=100))
    rows = run_windows(truth, 5, 1.0)
    s = summary(rows)
    with capsys.disabled():
        print("\nsteps 100->600 W at the edges, 1 s windows:", s)
    # finding 1: low by about T x step / 3 per window (100 ms x 500 W / 3 = 16.7 J);
    # each window's error is between 0 and T x step / 2 = 25 J low
    for r in rows:
        assert -25.5 <= r["meter_j"] - r["true_j"] <= 0.5
        assert r["lo_j"] <= r["true_j"] <= r["hi_j"], r  # the bound holds on every window
        assert r["sure_lo_j"] <= r["lo_j"] and r["hi_j"] <= r["sure_hi_j"], r  # and is inside
        # each edge is within T x step / 4 plus the gaps' share: about 2 x 12.5 J wide
        assert r["hi_j"] - r["lo_j"] < 2 * 2 * 12.5 + 10, r
    assert s["meter_bias_pct"] < -0.5


def _hogs(n):
    """n busy processes (pure Python loops), to take the 2 cores from the sampler."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def _stop(procs):
    for p in procs:
        p.kill()
        p.wait()


def contention_errors(truth, seconds=6.0, hogs=4, window_s=1.0, power_w=400.0):
    """Sample under CPU hogs at constant power; errors (J) of sliding windows' energy.

    Returns (today's errors, the bounded estimate's errors, lows, highs, true energies)
    of windows starting every 10 ms.
    """
    procs = _hogs(hogs)
    try:
        with Sampler([0], rate_hz=1000) as s:
            time.sleep(seconds)
        (tr,) = s.traces()
    finally:
        _stop(procs)
    ok = tr.energy_status == 0
    t, e, lat = tr.t_ns[ok], tr.energy_j[ok], tr.latency_ns[ok]
    tp, pw = tr.power_valid()
    t0 = np.arange(t[0] + 500 * MS, t[-1] - int(window_s * S) - 500 * MS, 10 * MS)
    old, new, lo, hi, true = [], [], [], [], []
    for a in t0:
        b = int(a + window_s * S)
        tj = truth.true_energy_j(0, a, b)
        old.append(K.counter_energy_j(t, e, int(a), b) - tj)
        est, low, high, _ = K.counter_window_bounds_j(t, e, int(a), b, tp, pw, lat)
        new.append(est - tj)
        lo.append(low)
        hi.append(high)
        true.append(tj)
        sure_lo, sure_hi = K.counter_window_sure_bounds_j(t, e, int(a), b, lat)
        assert sure_lo <= tj <= sure_hi, (a, b, sure_lo, tj, sure_hi)
    return tuple(np.array(x) for x in (old, new, lo, hi, true))


@pytest.mark.slow
def test_under_contention_the_fitted_edges_are_closer_and_bounded(fake_truth, capsys):
    configure, truth = fake_truth
    configure("base_w=400,counter_period_ms=100,power_period_ms=100")
    old, new, lo, hi, true = contention_errors(truth)
    rms_old, rms_new = np.sqrt(np.mean(old**2)), np.sqrt(np.mean(new**2))
    with capsys.disabled():
        print(f"\ncontention, 400 W, 1 s windows ({old.size}): max |err| today "
              f"{100 * np.abs(old / true).max():.3f}% rms {rms_old:.3f} J; fitted "
              f"{100 * np.abs(new / true).max():.3f}% rms {rms_new:.3f} J; bound width "
              f"{np.mean(hi - lo):.3f} J; load {os.getloadavg()[0]:.1f}")
    assert np.all((lo <= true) & (true <= hi))
    # The fitted error stays near the counter's resolution whatever the contention (rms
    # 7-20 mJ in 18 runs beside a hog); today's is larger when an edge read is late and
    # as small when none was, so a plain rms_new <= rms_old + 10 mJ failed 1 run in 18
    # (20 mJ against 8 mJ). 10 mJ: the counter's resolution, twice.
    assert rms_new <= max(rms_old, 0.025) + 0.01


def test_a_reset_inside_a_short_window_stays_inside_its_bound(fake_truth, capsys):
    """The stand-in's counter restarts from 0 one second after NVML starts, while power
    steps 100 <-> 600 W every 250 ms (the work starting and stopping). The unwrapping
    loses the energy between the last refresh before the reset and the reset; every
    0.3 s window across it still holds its true energy inside its stated bound."""
    configure, truth = fake_truth
    configure(H100_LIKE.format(idle=100) + ",reset_at_s=1.0")
    with Sampler([0], rate_hz=1000):  # compiles the sampler first (seconds on a cold
        time.sleep(0.05)              # cache), before the stand-in's clock starts
    src = NvmlEnergySource(0)  # NVML starts again here: the reset comes 1 s later
    try:
        start = time.monotonic_ns()
        for i in range(1, 13):  # 3 s of steps, scheduled at exact times ahead
            truth.set_power_w(0, 600.0 if i % 2 else 100.0, start + i * 250 * MS)
        with Sampler([0], rate_hz=1000) as s:
            # and a meter window from 0.6 to 1.5 s, across the reset
            time.sleep(max(0.0, (start + 600 * MS - time.monotonic_ns()) * 1e-9))
            with Meter([src], sampler=s).window("w") as w:
                time.sleep(max(0.0, (start + 1500 * MS - time.monotonic_ns()) * 1e-9))
            time.sleep(max(0.0, (start + 3 * S - time.monotonic_ns()) * 1e-9))
        (tr,) = s.traces()
    finally:
        src.close()
    ok = tr.energy_status == 0
    t, e, lat = tr.t_ns[ok], tr.energy_j[ok], tr.latency_ns[ok]
    tp, pw = tr.power_valid()
    (step,) = np.flatnonzero(np.diff(e) < 0) + 1  # the sampler saw the one reset
    t_seen = int(t[step])
    rows = []
    for a in range(t_seen - 350 * MS, t_seen + 60 * MS, 10 * MS):
        b = a + 300 * MS
        est, lo, hi, _ = K.counter_window_bounds_j(t, e, a, b, tp, pw, lat)
        true = truth.true_energy_j(0, a, b)
        rows.append((est, lo, hi, true, K.counter_window_resets(t, e, a, b, lat)))
    est, lo, hi, true, resets = (np.array(c) for c in zip(*rows, strict=True))
    with capsys.disabled():
        print(f"\nreset inside 0.3 s windows ({est.size}): error {(est - true).min():.2f}.."
              f"{(est - true).max():.2f} J of {true.min():.0f}..{true.max():.0f} J; bound "
              f"width {(hi - lo).min():.1f}..{(hi - lo).max():.1f} J")
    assert not np.isnan(lo).any() and not np.isnan(hi).any()
    assert np.all(lo <= true) and np.all(true <= hi), (lo - true, hi - true)
    # windows that hold the refresh after the reset say so; the last ones start after it
    assert resets[0] == 1 and resets[-1] == 0 and set(resets) == {0, 1}
    # the estimate misses the lost energy (or, with an edge between the refreshes around
    # the reset, interpolates there too low): at most about a refresh interval at 600 W
    # (0.1 s x 600 W) and the edges' share
    assert np.all(np.abs(est - true) <= 60 + 30)
    # the meter's reading says its window holds the reset, and its interval holds the truth
    m = w.result
    st = m.readings[0].stats
    assert st["counter_edges"] == "fitted" and st["counter_resets"] == 1, st
    assert st["energy_low_j"] <= truth.true_energy_j(0, m.t0_ns, m.t1_ns) <= st["energy_high_j"]
    # the sure interval keeps its bottom across the reset, and has no top (a reset may
    # have lost any energy)
    assert st["energy_sure_low_j"] <= truth.true_energy_j(0, m.t0_ns, m.t1_ns)
    assert st["energy_sure_high_j"] is None
