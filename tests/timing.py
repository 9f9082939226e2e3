"""Test helpers for a busy machine: waiting on conditions, and error bounds from a run's trace.

On a loaded 2-core machine the sampling thread wakes late now and then, so a fixed
tolerance on a quantity measured in real time fails at random. These helpers let a test
wait for what it needs instead of sleeping a fixed time, and bound the error of a window
from the same run's own samples, so the tolerance is as tight as the run allowed.
"""

from __future__ import annotations

import time

import numpy as np

COUNTER_QUANTUM_J = 1e-3  # NVML's counter is in whole mJ (the stand-in floors to them)


def wait_until(predicate, timeout_s: float = 60.0, poll_s: float = 0.01) -> bool:
    """Poll ``predicate`` until it is true (True) or ``timeout_s`` passes (False)."""
    end = time.monotonic() + timeout_s
    while True:
        if predicate():
            return True
        if time.monotonic() >= end:
            return False
        time.sleep(poll_s)


def _edge_error_s(s_ns, lo_d_ns, hi_d_ns, q_ns: int) -> tuple[float, float, float]:
    """Interval of (interpolated - true) counter at ``q_ns``, in seconds of constant power.

    The counter value E(u) of an update at time u is first seen at the sample after u,
    stamped s = u + d. Interpolating between the two update points a, b that the kernel
    uses for q (w = (q - s_a) / (s_b - s_a); w outside [0, 1] is extrapolation) gives an
    error of -P * (d_a * (1 - w) + d_b * w) for constant power P, linear in each d, so
    its extremes are at the ends of each d's range [lo_d, hi_d].

    Returns:
        (lo_s, hi_s, weight): the interval, and |1 - w| + |w| (how much of each value's
        own error reaches the edge).
    """
    k = int(np.searchsorted(s_ns, q_ns, side="right"))  # first update point after q
    b = min(max(k, 1), len(s_ns) - 1)  # the pair the kernel uses: (b - 1, b)
    a = b - 1
    w = (q_ns - s_ns[a]) / (s_ns[b] - s_ns[a])
    lo = hi = 0.0
    for i, coef in ((a, 1.0 - w), (b, w)):
        ends = (-coef * lo_d_ns[i], -coef * hi_d_ns[i])
        lo += min(ends)
        hi += max(ends)
    return lo * 1e-9, hi * 1e-9, abs(1.0 - w) + abs(w)


def counter_window_error_j(t_ns, energy_j, latency_ns, t0_ns: int, t1_ns: int,
                           power_w: float) -> tuple[float, float]:
    """Interval that (window energy from the interpolated counter - true energy) lies in.

    For a device of constant power ``power_w`` whose counter updates in steps, from the
    samples the sampler actually took (valid energy reads only, sorted by time). The
    bound follows the sampler's real gaps around each edge: about a millisecond of power
    on an idle machine, more where the sampling thread was kept waiting.

    Returns:
        (lo_j, hi_j), lo_j <= 0 <= hi_j.
    """
    t = np.asarray(t_ns, np.int64)
    e = np.asarray(energy_j, np.float64)
    lat = np.asarray(latency_ns, np.float64)
    # samples where a new counter value was first seen (the kernel's update points)
    points = np.flatnonzero(np.diff(e) != 0) + 1
    if points.size < 2:
        raise ValueError("fewer than two counter updates in the trace")
    # the update happened after the previous read began and before this read ended;
    # a sample is stamped at the middle of its NVML calls (latency_ns spans them all)
    lo_d = -lat[points] / 2.0
    hi_d = (t[points] - t[points - 1]) + lat[points - 1] / 2.0
    lo0, hi0, n0 = _edge_error_s(t[points], lo_d, hi_d, t0_ns)
    lo1, hi1, n1 = _edge_error_s(t[points], lo_d, hi_d, t1_ns)
    # window error = error(t1) - error(t0); each edge also carries the mJ flooring of the
    # two counter values it is interpolated from
    quantum = COUNTER_QUANTUM_J * (n0 + n1)
    return power_w * (lo1 - hi0) - quantum, power_w * (hi1 - lo0) + quantum


def fitted_counter_window_error_j(t_ns, energy_j, latency_ns, t0_ns: int, t1_ns: int,
                                  power_w: float) -> tuple[float, float]:
    """Interval of (window energy from the counter with fitted refresh times - true).

    The meter's ``counter_edges="fitted"`` estimate interpolates between the refreshes
    placed on a fitted grid, not at the samples that first saw them. Whatever the fit,
    each placed time stays inside the interval its reads allow, (earliest, latest]: the
    read before still showed the old value, the read at latest the new one (half each
    call's latency added on either side; intervals that cross are widened to keep them
    sorted). The true refresh time lies in the same interval, so each placed time is off
    by at most the interval's width, d. Interpolating at q between refreshes a and b
    (weight w in [0, 1]) at constant power P is off by -P (d_a (1 - w) + d_b w), at most
    P max(|d_a|, |d_b|) either way: early placement reads high, late placement low
    (the interpolated bound above allows only late stamps). The pair around q is among
    the refreshes from one before the last one surely at or before q (latest <= q) to
    one after the last one possibly before it (earliest <= q). Each edge also carries the
    mJ flooring of the two counter values it is interpolated from.

    Returns:
        (lo_j, hi_j) = (-b, b).
    """
    t = np.asarray(t_ns, np.int64)
    e = np.asarray(energy_j, np.float64)
    lat = np.asarray(latency_ns, np.int64)
    points = np.flatnonzero(np.diff(e) != 0) + 1
    if points.size < 2:
        raise ValueError("fewer than two counter updates in the trace")
    lo = t[points - 1] - (lat[points - 1] + 1) // 2
    hi = t[points] + (lat[points] + 1) // 2
    lo = np.minimum.accumulate(lo[::-1])[::-1]
    hi = np.maximum.accumulate(hi)
    width_ns = hi - lo
    bound_s = 0.0
    for q in (t0_ns, t1_ns):
        surely = int(np.searchsorted(hi, q, side="right")) - 1
        maybe = int(np.searchsorted(lo, q, side="right")) - 1
        near = width_ns[max(surely - 1, 0):min(maybe + 2, width_ns.size)]
        bound_s += float(near.max()) * 1e-9
    b = power_w * bound_s + 2 * COUNTER_QUANTUM_J
    return -b, b


def max_gap_s(t_ns, t0_ns: int, t1_ns: int) -> float:
    """The longest interval without a sample that overlaps [t0, t1] (for messages)."""
    t = np.asarray(t_ns, np.int64)
    i0 = max(int(np.searchsorted(t, t0_ns)) - 1, 0)
    i1 = min(int(np.searchsorted(t, t1_ns)) + 1, t.size)
    seg = t[i0:i1]
    return float(np.diff(seg).max() * 1e-9) if seg.size > 1 else float("inf")


def read_counter_trace(run_dir, index: int):
    """(t_ns, energy_j, latency_ns) of GPU ``index``'s valid counter samples in a run."""
    import pyarrow.parquet as pq

    tab = pq.read_table(run_dir / "trace.parquet").to_pandas()
    tr = tab[(tab.device_index == index) & (tab.energy_status == 0)].sort_values(
        "t_ns", kind="stable")
    return tr.t_ns.to_numpy(), tr.energy_j.to_numpy(), tr.latency_ns.to_numpy()


def max_counter_lag_s(t_ns, energy_j, latency_ns) -> float:
    """The latest any counter update in the trace can have been seen: bounds every window.

    For a window whose edges are not recorded (the idle baseline): with interpolation
    each edge is off by at most power x this, so the window by twice that.
    """
    t = np.asarray(t_ns, np.int64)
    points = np.flatnonzero(np.diff(np.asarray(energy_j, np.float64)) != 0) + 1
    lat = np.asarray(latency_ns, np.float64)
    return float(((t[points] - t[points - 1]) + lat[points - 1] / 2).max() * 1e-9)


def assert_cell_power_within_trace_bound(run_dir, cell, power_w: float) -> tuple:
    """A constant-power cell's repeat energies and mean power, against its trace's bound.

    Under CPU contention the sampling thread wakes late, sees each counter update late by
    its gap, and the edge interpolation is off by up to power x that delay. The bound is
    computed from the run's own trace (:func:`counter_window_error_j`): about 1 ms of
    power per edge on an idle machine (a stale-counter bug is off by up to 100 ms).

    Returns:
        (lo, hi): the range of P x duration / energy over the repeats (the factor by
        which a tokens-per-joule figure can differ from tokens-per-second / P).
    """
    t, e, lat = read_counter_trace(run_dir, int(cell["device"].removeprefix("gpu")))
    power, factor = [], []
    for rep in cell["repeats"]:
        t0, t1 = rep["t0_ns"], rep["t1_ns"]
        (gpu,) = [r for r in rep["readings"] if r["scope"] == "gpu"]
        st = gpu["stats"]
        assert st["counter_edges"] in ("fitted", "interpolated")
        if st["counter_edges"] == "fitted":
            # refreshes on their fitted grid: the reading states an interval that holds
            # the truth where power between the power readings stays in their range (it
            # is constant here), so the error lies in [energy - high, energy - low]
            lo = gpu["energy_j"] - st["energy_high_j"]
            hi = gpu["energy_j"] - st["energy_low_j"]
        else:
            lo, hi = counter_window_error_j(t, e, lat, t0, t1, power_w)
        true_j = power_w * (t1 - t0) * 1e-9
        err = rep["energy"]["gpu"]["energy_j"] - true_j
        gaps = (max_gap_s(t, t0, t0), max_gap_s(t, t1, t1))
        assert lo <= err <= hi, (cell["device"], err, (lo, hi), "sample gaps at edges", gaps)
        power.append((lo / rep["duration_s"], hi / rep["duration_s"]))
        factor.append((true_j / (true_j + hi), true_j / (true_j + lo)))
    # a figure is the median over repeats, so it lies within the repeats' joint range
    got = cell["figures"]["mean_power_w"]
    lo_w, hi_w = min(x for x, _ in power), max(x for _, x in power)
    assert power_w + lo_w - 1e-9 <= got <= power_w + hi_w + 1e-9, (got, lo_w, hi_w)
    return min(x for x, _ in factor), max(x for _, x in factor)
