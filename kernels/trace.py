"""Numba kernels that turn raw samples into energy; NumPy twins are in kernels.reference.

Index and unit conventions, shared by every kernel here and its twin:

- ``t_ns``: int64 monotonic timestamps in ns, sorted non-decreasing (duplicates allowed).
- ``energy_j``: a cumulative energy counter in J, as sampled (stale repeats allowed; a
  negative step is a counter reset or wraparound and is unwrapped by adding the value
  before the step: a reset to zero then loses nothing but the part of one update period).
- ``power_w``: power samples in W.
- Query times (window edges, marks) are int64 ns and must be sorted.

The *cumulative energy at time q* is the quantity every window and segment is a
difference of, so splitting a window conserves energy by construction:

- From a counter: the counter's update points are the samples where its (unwrapped)
  value changes, at the time that change was first seen. Between update points the
  energy is interpolated linearly; before the first and after the last it is
  extrapolated with the slope of the nearest pair (with one update point: a step; with
  none: constant). A query outside [t_ns[0], t_ns[-1]] is NaN: the trace cannot say.
- From power: the trapezoid integral from t_ns[0], exact for power linear between
  samples, with linear interpolation inside the sample interval holding q. A query
  outside the trace is clamped to it (nothing is integrated where nothing was sampled;
  the gap statistics say how much of a window that was).
"""

from __future__ import annotations

import numba
import numpy as np

from bench.kernels import checks

NS = 1e-9


# The two cumulative kernels read every sample exactly once, checking order and NaN as
# they go (one pass over memory instead of three). They return (code, index): code 0 is
# success, 1 an unsorted timestamp at index, 2 a NaN value at index.


@numba.njit(cache=True, nogil=True)
def _counter_cumulative(t, e, q, out):
    n = t.shape[0]
    m = q.shape[0]
    for j in range(m):
        out[j] = np.nan
    if n == 0:
        return 0, 0
    if np.isnan(e[0]):
        return 2, 0
    t_first = t[0]
    t_last = t[n - 1]
    # the last two update points seen so far, (ua_t, ua_e) then (ub_t, ub_e); k counts them
    k = 0
    ua_t = 0.0
    ua_e = 0.0
    ub_t = 0.0
    ub_e = 0.0
    e_before = e[0]
    offset = 0.0
    prev_raw = e[0]
    prev_val = e[0]
    j = 0
    while j < m and q[j] < t_first:  # queries before the trace stay NaN
        j += 1
    for i in range(1, n):
        if t[i] < t[i - 1]:
            return 1, i
        raw = e[i]
        if np.isnan(raw):
            return 2, i
        if raw < prev_raw:  # reset or wraparound: continue from the value before it
            offset += prev_raw
        prev_raw = raw
        val = raw + offset
        if val == prev_val:
            continue
        prev_val = val
        tc = (t[i] - t_first) * 1e-9
        if k >= 1 and tc == ub_t:
            ub_e = val  # same timestamp as the last update point: keep the later value
            continue
        k += 1
        if k == 1:
            ub_t = tc
            ub_e = val
            continue
        ua_t = ub_t
        ua_e = ub_e
        ub_t = tc
        ub_e = val
        slope = (ub_e - ua_e) / (ub_t - ua_t)
        while j < m and q[j] <= t_last and (q[j] - t_first) * 1e-9 < ub_t:
            qs = (q[j] - t_first) * 1e-9
            # before the first point: extrapolate back (only when k == 2); else interpolate
            out[j] = ua_e + slope * (qs - ua_t)
            j += 1
    while j < m and q[j] <= t_last:
        qs = (q[j] - t_first) * 1e-9
        if k == 0:
            out[j] = e_before
        elif k == 1:
            out[j] = e_before if qs < ub_t else ub_e
        else:
            out[j] = ub_e + (ub_e - ua_e) / (ub_t - ua_t) * (qs - ub_t)
        j += 1
    return 0, 0


@numba.njit(cache=True, nogil=True)
def _power_cumulative(t, p, q, out):
    n = t.shape[0]
    m = q.shape[0]
    if n == 0:
        for j in range(m):
            out[j] = np.nan
        return 0, 0
    if np.isnan(p[0]):
        return 2, 0
    j = 0
    while j < m and q[j] <= t[0]:  # clamped to the first sample: nothing integrated yet
        out[j] = 0.0
        j += 1
    cum = 0.0
    for i in range(n - 1):
        if t[i + 1] < t[i]:
            return 1, i + 1
        if np.isnan(p[i + 1]):
            return 2, i + 1
        h = (t[i + 1] - t[i]) * 1e-9
        # queries in [t[i], t[i+1]): interval i is the last one starting at or before them
        while j < m and q[j] < t[i + 1]:
            d = (q[j] - t[i]) * 1e-9
            out[j] = cum + p[i] * d + 0.5 * (p[i + 1] - p[i]) * d * d / h
            j += 1
        cum += 0.5 * (p[i] + p[i + 1]) * h
    while j < m:  # at or after the last sample: clamped to it
        out[j] = cum
        j += 1
    return 0, 0


@numba.njit(cache=True, nogil=True)
def _gap_stats(t, t0, t1):
    """(largest gap in s, fraction of [t0, t1] inside the trace)."""
    n = t.shape[0]
    if n == 0 or t1 <= t0:
        return np.nan, 0.0
    span = (t1 - t0) * 1e-9
    lo = max(t0, t[0])
    hi = min(t1, t[n - 1])
    covered = max(0.0, (hi - lo) * 1e-9) / span
    largest = 0.0
    last = t0
    i = np.searchsorted(t, t0, side="right")  # first sample after t0
    while i < n and t[i] < t1:
        g = (t[i] - last) * 1e-9
        if g > largest:
            largest = g
        last = t[i]
        i += 1
    g = (t1 - last) * 1e-9
    if g > largest:
        largest = g
    return largest, covered


@numba.njit(cache=True, nogil=True)
def _change_period(t, x):
    n = t.shape[0]
    count = 0
    for i in range(1, n):
        if x[i] != x[i - 1]:
            count += 1
    if count < 2:
        return np.nan
    d = np.empty(count - 1, np.float64)
    last = -1
    k = 0
    for i in range(1, n):
        if x[i] != x[i - 1]:
            if last >= 0:
                d[k] = (t[i] - t[last]) * 1e-9
                k += 1
            last = i
    return np.median(d)


@numba.njit(cache=True, nogil=True)
def _steady_run(x, lo, hi):
    best_i = 0
    best_len = 0
    start = 0
    for i in range(x.shape[0] + 1):
        inside = i < x.shape[0] and lo <= x[i] <= hi
        if not inside:
            if i - start > best_len:
                best_len = i - start
                best_i = start
            start = i + 1
    return best_i, best_i + best_len


def _queries(q) -> np.ndarray:
    return checks.times(np.atleast_1d(np.asarray(q)), "query times")


def _raise(code: int, i: int, name: str) -> None:
    if code == 1:
        raise checks.unsorted_error("t_ns", i)
    if code == 2:
        raise checks.nan_error(name, i)


def _cumulative(kernel, t_ns, values, q_ns, name: str) -> np.ndarray:
    # The kernels check order and NaN as they read, so the inputs are not scanned here.
    t = checks.times(t_ns, scan=False)
    v = checks.values(values, t.shape[0], name, scan=False)
    q = _queries(q_ns)
    out = np.empty(q.shape[0], np.float64)
    _raise(*kernel(t, v, q, out), name)
    return out


def counter_cumulative_j(t_ns, energy_j, q_ns) -> np.ndarray:
    """Cumulative counter energy (J, unwrapped) at each sorted query time; NaN outside."""
    return _cumulative(_counter_cumulative, t_ns, energy_j, q_ns, "energy_j")


def counter_energy_j(t_ns, energy_j, t0_ns: int, t1_ns: int) -> float:
    """Energy in J over [t0, t1] from a sampled cumulative counter (NaN if outside the trace).

    The counter is interpolated between its actual update times, so a counter that
    updates only every 100 ms still gives an accurate window at any edges.
    """
    if t1_ns < t0_ns:
        raise ValueError("t1_ns is before t0_ns")
    c = counter_cumulative_j(t_ns, energy_j, [t0_ns, t1_ns])
    return float(c[1] - c[0])


def power_cumulative_j(t_ns, power_w, q_ns) -> np.ndarray:
    """Trapezoid integral of power (J) from the first sample to each sorted query time."""
    return _cumulative(_power_cumulative, t_ns, power_w, q_ns, "power_w")


def power_energy_j(t_ns, power_w, t0_ns: int, t1_ns: int) -> tuple[float, float, float]:
    """Integrated power over [t0, t1].

    Returns:
        (energy_j, largest_gap_s, covered_fraction): the trapezoid integral with linear
        interpolation at the edges; the largest interval without a sample inside the
        window (edges count); the fraction of the window inside the trace. NaN energy if
        the window and the trace do not overlap.
    """
    if t1_ns < t0_ns:
        raise ValueError("t1_ns is before t0_ns")
    t = checks.times(t_ns, scan=False)
    c = power_cumulative_j(t, power_w, [t0_ns, t1_ns])  # checks order and NaN
    gap, covered = _gap_stats(t, np.int64(t0_ns), np.int64(t1_ns))
    energy = float(c[1] - c[0]) if covered > 0 or t1_ns == t0_ns else float("nan")
    return energy, float(gap), float(covered)


def segment_energy_j(t_ns, values, marks_ns, kind: str = "power") -> np.ndarray:
    """Energy of each of the m-1 segments between m sorted marks, in one O(n + m) pass.

    Args:
        t_ns: sample times.
        values: power in W (``kind="power"``) or a cumulative counter in J
            (``kind="counter"``).
        marks_ns: sorted segment edges (phase marks, per-step times).
    """
    if kind == "power":
        c = power_cumulative_j(t_ns, values, marks_ns)
    elif kind == "counter":
        c = counter_cumulative_j(t_ns, values, marks_ns)
    else:
        raise ValueError("kind must be 'power' or 'counter'")
    return np.diff(c)


def update_period_s(t_ns, values) -> float:
    """Effective update period (s) of a sampled stream: median time between value changes.

    NaN with fewer than two changes.
    """
    t = checks.times(t_ns)
    x = checks.values(values, t.shape[0], "values")
    return float(_change_period(t, x))


def steady_window(t_ns, rate, rel_tolerance: float) -> tuple[int, int, float]:
    """The longest run of samples whose rate stays within rel_tolerance of the median.

    Returns:
        (i0, i1, duration_s): samples [i0, i1) and the time they span. (0, 0, 0.0) if
        none qualifies.
    """
    if not rel_tolerance >= 0:
        raise ValueError("rel_tolerance must be 0 or more")
    t = checks.times(t_ns)
    x = checks.values(rate, t.shape[0], "rate")
    if x.size == 0:
        return 0, 0, 0.0
    med = float(np.median(x))
    band = abs(med) * rel_tolerance
    i0, i1 = _steady_run(x, med - band, med + band)
    dur = (t[i1 - 1] - t[i0]) * NS if i1 > i0 else 0.0
    return int(i0), int(i1), float(dur)
