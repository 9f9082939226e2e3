"""Numba kernels that turn raw samples into energy; NumPy twins are in kernels.reference.

Index and unit conventions, shared by every kernel here and its twin:

- ``t_ns``: int64 monotonic timestamps in ns, sorted non-decreasing (duplicates allowed).
- ``energy_j``: a cumulative energy counter in J, as sampled (stale repeats allowed; a
  negative step is a counter reset or wraparound and is unwrapped by adding the value
  before the step: a reset to zero then loses the energy between the last refresh before
  it and the reset, up to one update period's; the bounded estimate widens the upper
  bound of a window holding a reset by as much, see :func:`counter_window_bounds_j`).
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

Edges on power steps (:func:`counter_cumulative_bounds_j`): power follows the work, so a
window's edges sit on steps, where linear interpolation of a counter that refreshes every
T is biased (by about T x step / 6 per edge). The bounded estimate places each refresh at
its likely true time and returns an interval that contains the true cumulative energy.
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
    code, i = kernel(t, v, q, out)
    _raise(code, i, name)
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


# --- edges on power steps: refresh times, bounded interpolation -------------------------


@numba.njit(cache=True, nogil=True)
def _counter_updates(t, e, lat, lo, hi, v, rs):
    """Refreshes of a sampled counter: (code, index, count); lo/hi/v/rs filled up to count.

    Refresh k was seen first at sample i: it happened after the read of sample i-1 and
    no later than the read of sample i. A read lies within half its call's latency of
    its timestamp (the call's midpoint), so lo = t[i-1] - lat[i-1]/2, hi = t[i] + lat[i]/2.
    rs[k] is True where the counter stepped down (a reset) since refresh k-1.
    """
    n = t.shape[0]
    if n == 0:
        return 0, 0, 0
    if np.isnan(e[0]):
        return 2, 0, 0
    offset = 0.0
    prev_raw = e[0]
    prev_val = e[0]
    k = 0
    reset = False
    for i in range(1, n):
        if t[i] < t[i - 1]:
            return 1, i, 0
        raw = e[i]
        if np.isnan(raw):
            return 2, i, 0
        if raw < prev_raw:  # reset or wraparound, unwrapped as in _counter_cumulative
            offset += prev_raw
            reset = True
        prev_raw = raw
        val = raw + offset
        if val == prev_val:
            continue
        prev_val = val
        lo[k] = t[i - 1] - (lat[i - 1] + 1) // 2
        hi[k] = t[i] + (lat[i] + 1) // 2
        v[k] = val
        rs[k] = reset
        reset = False
        k += 1
    return 0, 0, k


@numba.njit(cache=True, nogil=True)
def _slope(x, y, keep, default):
    """Least-squares slope of y over x on the kept points (default if x does not vary)."""
    n = 0
    mx = 0.0
    my = 0.0
    for i in range(x.shape[0]):
        if keep[i]:
            n += 1
            mx += x[i]
            my += y[i]
    if n < 2:
        return default
    mx /= n
    my /= n
    sxy = 0.0
    sxx = 0.0
    for i in range(x.shape[0]):
        if keep[i]:
            sxy += (x[i] - mx) * (y[i] - my)
            sxx += (x[i] - mx) * (x[i] - mx)
    return sxy / sxx if sxx > 0 else default


@numba.njit(cache=True, nogil=True)
def _lower_half_slope(num, y, keep, default):
    """The slope over the points on or below the median residual of a fit over all."""
    for i in range(num.shape[0]):
        keep[i] = True
    r = y - num * _slope(num, y, keep, default)
    cut = np.median(r)
    for i in range(num.shape[0]):
        keep[i] = r[i] <= cut
    fit = _slope(num, y, keep, default)
    return fit if fit > 0 else default


@numba.njit(cache=True, nogil=True)
def _grid_numbers(y, p0, num):
    """Grid numbers of refreshes seen at times y (ns, from the first) on a period p0.

    Reads are late, never early: each is numbered from a read seen promptly (a reference),
    as the refresh at or up to 0.9 period before it. The first reference is the earliest
    read of the densest cluster of the first 64 reads' phases (most reads are prompt);
    later, any read as prompt as the reference (within 5% of a period) becomes it, so an
    error in p0 never accumulates. A read late by a stall keeps the number of the refresh
    it saw, and the reads after it theirs (numbering from the gaps alone, a read 82 ms
    late after a missed refresh counts 3 steps, and every later number is off by one).
    """
    k = y.shape[0]
    m = min(k, 64)
    r = np.empty(m, np.float64)
    for i in range(m):
        r[i] = y[i] - np.floor(y[i] / p0) * p0
    s = np.sort(r)
    best = -1
    phi = s[0]
    for j in range(m):  # count phases in [s[j], s[j] + 0.1 p0], around the circle
        top = s[j] + 0.1 * p0
        c = 0
        for i in range(m):
            if (s[i] >= s[j] and s[i] <= top) or s[i] + p0 <= top:
                c += 1
        if c > best:
            best = c
            phi = s[j]
    ref = 0
    for i in range(m):
        dphi = r[i] - phi
        dphi -= np.floor(dphi / p0) * p0
        if dphi < 0.1 * p0 or dphi > 0.99 * p0:
            ref = i
            break
    num[ref] = 0.0
    for i in range(ref - 1, -1, -1):  # before the first reference: from it, backwards
        num[i] = np.floor((y[i] - y[ref]) / p0 + 0.1)
    cur = ref
    for i in range(ref + 1, k):
        x = (y[i] - y[cur]) / p0
        n = np.floor(x + 0.1)
        num[i] = num[cur] + n
        if x - n < 0.05:
            cur = i


@numba.njit(cache=True, nogil=True)
def _fit_refresh_times(lo, hi, neighbours, out):
    """Likely refresh times (ns): a regular period fitted to the latest times, each
    refresh placed at the earliest time its neighbours' latest times allow, within [lo, hi].

    A refresh is seen late by up to the sampler's gap, never early, so on a regular grid
    the neighbour seen soonest after its refresh pins the grid's phase from above.
    """
    k = hi.shape[0]
    for i in range(k):
        out[i] = hi[i]
    if k < 3:
        return np.nan
    d = np.empty(k - 1, np.float64)
    for i in range(k - 1):
        d[i] = hi[i + 1] - hi[i]
    p0 = np.median(d)
    if not p0 > 0:
        return np.nan
    y = np.empty(k, np.float64)  # latest times relative to the first, ns
    for i in range(k):
        y[i] = hi[i] - hi[0]
    num = np.zeros(k, np.float64)
    _grid_numbers(y, p0, num)
    keep = np.ones(k, np.bool_)
    period = _slope(num, y, keep, p0)
    if not period > 0:
        period = p0
    # Renumber from the grid: a read up to 0.9 period late keeps its number (counting
    # from the gaps alone, one 60 ms stall would shift every later refresh by one).
    r = y - num * period
    phase = np.median(r)
    for i in range(k):
        num[i] = np.floor((y[i] - phase) / period + 0.1)
    # refit on the reads seen soonest (the lower half of the residuals): late reads
    # only ever lie above the grid, and would tilt a fit over all of them
    period = _lower_half_slope(num, y, keep, period)
    # Then number each read by the refresh it saw: the latest one at or before it, so
    # the floor from the phase the soonest reads pin (residuals near the median only:
    # a read numbered wrongly above lies a period off), which holds for any stall.
    r = y - num * period
    med = np.median(r)
    phase = np.inf
    for i in range(k):
        if abs(r[i] - med) < 0.5 * period and r[i] < phase:
            phase = r[i]
    for i in range(k):
        num[i] = np.floor((y[i] - phase) / period + 0.02)
    period = _lower_half_slope(num, y, keep, period)
    for i in range(k):
        # a neighbour whose grid time for i falls at or before lo[i] contradicts the
        # read before i's refresh (it was numbered wrongly, or the grid drifts): skipped
        floor_i = lo[i] - hi[0]
        best = np.inf
        for j in range(max(0, i - neighbours), min(k, i + neighbours + 1)):
            c = (hi[j] - hi[0]) + (num[i] - num[j]) * period
            if floor_i < c < best:
                best = c
        x = hi[i] if best == np.inf else hi[0] + np.int64(np.floor(best + 0.5))
        out[i] = min(max(x, lo[i]), hi[i])
        if i > 0 and out[i] < out[i - 1]:
            out[i] = out[i - 1]  # the grid keeps its order
    return period * 1e-9


@numba.njit(cache=True, nogil=True)
def _reset_losses(u, lo, hi, v, rs, pt, pw, p_period_ns, res_j, out):
    """The most energy (J) each reset refresh k can have lost (0 where none; inf where
    nothing bounds the power): the reset fell between refresh k-1 and k, so the energy
    from refresh k-1 to the reset, at most P_max (hi[k] - lo[k-1]), is not in the
    unwrapped counter, plus one resolution step (the value before the reset is floored).
    P_max is the highest power reading from lo[k-1] to two power periods after hi[k] and
    the counter's mean power over the refresh intervals beside it that hold no reset."""
    k = u.shape[0]
    npw = pt.shape[0]
    for m in range(k):
        out[m] = 0.0
        if not rs[m]:
            continue
        out[m] = np.inf
        if m == 0:
            continue  # no refresh before it: the lost interval is unbounded
        p_max = -np.inf
        i = np.searchsorted(pt, lo[m - 1], side="left")
        while i < npw and pt[i] <= hi[m] + 2 * p_period_ns:
            p_max = max(p_max, pw[i])
            i += 1
        for a in (m - 2, m):  # the intervals (m-2, m-1) and (m, m+1)
            if a >= 0 and a + 1 < k and not rs[a + 1] and u[a + 1] > u[a]:
                p_max = max(p_max, (v[a + 1] - v[a]) / ((u[a + 1] - u[a]) * 1e-9))
        if p_max > -np.inf:
            out[m] = max(p_max, 0.0) * (hi[m] - lo[m - 1]) * 1e-9 + res_j


@numba.njit(cache=True, nogil=True)
def _bounded_cumulative(u, lo, hi, v, rs, loss, pt, pw, q, p_period_ns, res_j, est, e_lo,
                        e_hi, before):
    """Interpolated cumulative energy at each query and an interval holding the truth.

    The interval is on the scale of the last refresh provably before the query
    (before[j], -1 where none): a reset after it lowers the later refreshes' values by
    up to its loss, which widens their upper bounds."""
    k = u.shape[0]
    npw = pt.shape[0]
    for j in range(q.shape[0]):
        est[j] = np.nan
        e_lo[j] = np.nan
        e_hi[j] = np.nan
        before[j] = -1
        x = q[j]
        if k < 2 or x < u[0] or x > u[k - 1]:
            continue
        a = np.searchsorted(u, x, side="right") - 1
        if a >= k - 1:
            a = k - 2
        while a > 0 and u[a + 1] == u[a]:
            a -= 1
        est[j] = v[a] + (v[a + 1] - v[a]) * (x - u[a]) / (u[a + 1] - u[a])
        # refreshes provably before (hi <= x) and after (lo >= x) the query, and between
        ka = np.searchsorted(hi, x, side="right") - 1
        kb = np.searchsorted(lo, x, side="left")
        before[j] = ka
        if ka < 0 or kb >= k:
            continue
        # the power range around the edge: readings that can describe [lo[ka], hi[kb]]
        # (a reading shows a refresh up to one power period old), and the counter's own
        # mean power over each refresh interval touching it, which the range must hold
        p_min = np.inf
        p_max = -np.inf
        i = np.searchsorted(pt, lo[ka], side="left")
        while i < npw and pt[i] <= hi[kb] + 2 * p_period_ns:
            p_min = min(p_min, pw[i])
            p_max = max(p_max, pw[i])
            i += 1
        for m in range(max(ka - 1, 0), min(kb + 1, k - 1)):
            if u[m + 1] > u[m]:
                mean = (v[m + 1] - v[m]) / ((u[m + 1] - u[m]) * 1e-9)
                p_min = min(p_min, mean)
                p_max = max(p_max, mean)
        p_min = max(p_min, 0.0)
        if not p_max >= p_min:
            continue
        low = -np.inf
        high = np.inf
        lost = 0.0  # the most the resets after refresh ka and up to m can have lost
        for m in range(ka, kb + 1):
            if m > ka and rs[m]:
                lost += loss[m]
            # E(refresh m) is in [v, v + res]; power in [p_min, p_max] between it and x
            dl = (x - lo[m]) * 1e-9  # time from the earliest refresh to x
            dh = (x - hi[m]) * 1e-9  # time from the latest refresh to x
            if dh >= 0:  # refreshed before x
                c_lo = v[m] + p_min * dh
                c_hi = v[m] + res_j + p_max * dl
            elif dl <= 0:  # refreshed after x
                c_lo = v[m] + p_max * dh
                c_hi = v[m] + res_j + p_min * dl
            else:  # it may have refreshed on either side of x
                c_lo = v[m] + p_max * dh
                c_hi = v[m] + res_j + p_max * dl
            low = max(low, c_lo)
            high = min(high, c_hi + lost)
        e_lo[j] = low
        e_hi[j] = high


def _refreshes(t_ns, energy_j, latency_ns=None) -> tuple[np.ndarray, np.ndarray,
                                                         np.ndarray, np.ndarray]:
    """:func:`counter_refreshes` and, per refresh, whether a reset came before it."""
    t = checks.times(t_ns, scan=False)
    e = checks.values(energy_j, t.shape[0], "energy_j", scan=False)
    lat = (np.zeros(t.shape[0], np.int64) if latency_ns is None
           else checks.times(np.maximum(np.asarray(latency_ns), 0), "latency_ns", scan=False))
    if lat.shape[0] != t.shape[0]:
        raise ValueError("latency_ns must have one value per sample")
    lo = np.empty(max(t.shape[0] - 1, 0), np.int64)
    hi = np.empty_like(lo)
    v = np.empty(lo.shape[0], np.float64)
    rs = np.zeros(lo.shape[0], np.bool_)
    code, i, k = _counter_updates(t, e, lat, lo, hi, v, rs)
    _raise(code, i, "energy_j")
    # latencies can make neighbouring bounds cross; widening keeps them true and sorted
    lo = np.minimum.accumulate(lo[:k][::-1])[::-1].copy()
    hi = np.maximum.accumulate(hi[:k])
    return lo, hi, v[:k], rs[:k].copy()


def counter_refreshes(t_ns, energy_j, latency_ns=None) -> tuple[np.ndarray, np.ndarray,
                                                                np.ndarray]:
    """The counter's refreshes as the trace shows them.

    Returns:
        (earliest_ns, latest_ns, value_j): refresh k happened in (earliest, latest]
        (the read before it still showed the old value, the read at latest the new one;
        half each call's ``latency_ns`` is added on either side) and set the unwrapped
        counter to value_j[k].
    """
    return _refreshes(t_ns, energy_j, latency_ns)[:3]


def refresh_times_ns(earliest_ns, latest_ns, neighbours: int = 8) -> tuple[np.ndarray, float]:
    """Likely true refresh times (ns) of a counter that refreshes on a regular period.

    A late read bounds a refresh from one side only: it happened at or before the read
    that saw it. So a regular period is fitted to the latest times: grid numbers from the
    gaps (a missed refresh counts two), a least-squares period, numbers again from that
    grid (a read up to 0.9 period late keeps its number), the period refitted on the
    half of the reads that lie lowest against the grid (those seen soonest), and then
    each read numbered by the refresh it saw (the floor from the phase the soonest read
    pins, right after any stall) and the period refitted once more. Each refresh
    is then placed at the earliest time that its ``neighbours`` on either side allow on
    that grid, leaving out times at or before its own earliest (a neighbour numbered
    wrongly after a long stall), and clamped into its own (earliest, latest] interval:
    a time the trace contradicts is never returned.

    Returns:
        (times_ns, period_s): the times, non-decreasing; NaN period with fewer than three
        refreshes (then the times are the latest ones).
    """
    lo = checks.times(earliest_ns, "earliest_ns", scan=False)
    hi = checks.times(latest_ns, "latest_ns")
    if lo.shape != hi.shape:
        raise ValueError("earliest_ns and latest_ns differ in length")
    out = np.empty_like(hi)
    period = _fit_refresh_times(lo, hi, int(neighbours), out)
    return out, float(period)


def counter_cumulative_bounds_j(t_ns, energy_j, q_ns, power_t_ns=None, power_w=None,
                                latency_ns=None, resolution_j: float = 1e-3,
                                neighbours: int = 8) -> tuple[np.ndarray, np.ndarray,
                                                              np.ndarray, float]:
    """Cumulative counter energy at each query time, and an interval that holds the truth.

    The estimate interpolates the counter linearly between its refreshes placed at their
    likely true times (:func:`refresh_times_ns`), not at the times they were first seen,
    so a sampler that falls behind under contention does not drag the edges late.

    The bound. Refresh m happened at some u_m in (lo_m, hi_m] (the trace's reads) and set
    the counter to C_m, with E(u_m) in [C_m, C_m + resolution_j] (NVML floors to mJ). If
    the true power between the refreshes around a query x stays within [P_min, P_max],
    E(x) = E(u_m) + integral of power from u_m to x, so each refresh bounds E(x):
    refreshed before x (hi_m <= x): [C_m + P_min (x - hi_m), C_m + res + P_max (x - lo_m)];
    refreshed after x (lo_m >= x): [C_m - P_max (hi_m - x), C_m + res - P_min (lo_m - x)];
    either side: [C_m - P_max (hi_m - x), C_m + res + P_max (x - lo_m)]. The interval is the
    intersection over the last refresh provably before x, the first provably after it and
    any between. For exact refresh times (hi = lo = u_a <= x < u_b = u_a + T, x = u_a + fT)
    the linear interpolation's error is then within
    [f D - min(P_max f T, D - P_min (1 - f) T), f D - max(P_min f T, D - P_max (1 - f) T)]
    with D = C_b - C_a, at most f (1 - f) T (P_max - P_min) <= T (P_max - P_min) / 4 on
    either side, and the sampler's gaps and call latency widen it by P_max x (hi - lo).
    P_min, P_max are the extremes of the power readings from lo of the first refresh to
    two power periods after hi of the last (a reading can show power up to one power
    period old), widened to hold the counter's own mean power over every refresh interval
    touching the edge (the truth must), P_min at least 0. The interval is provable for
    any power that the readings' range holds; a power excursion between the power
    readings' refreshes that none of them shows is outside that premise (NVML's instant
    power averages about 25 ms of each 100 ms on H100). ``true`` here is the counter's own
    integral; the sensor's accuracy against a wall meter is a separate matter.

    Resets. A reset between refresh k-1 and k loses the energy from refresh k-1 to the
    reset (the unwrapping adds the value before it), at most P_max (hi_k - lo_(k-1)) plus
    one resolution step, P_max the highest power reading over that span (to two power
    periods after) and the counter's mean power over the refresh intervals beside it.
    Each query's interval is on the scale of its last refresh provably before it: later
    refreshes past a reset have their upper bounds raised by that reset's loss. A window
    across a reset adds the losses of the resets between its edges' scales to its upper
    bound (:func:`counter_window_bounds_j`).

    Args:
        t_ns, energy_j: the counter's samples (as for :func:`counter_cumulative_j`).
        q_ns: sorted query times (window edges).
        power_t_ns, power_w: the power readings (W) sampled with it; None for none.
        latency_ns: each sample's NVML call time (ns); None for 0.
        resolution_j: the counter's resolution (NVML: 1 mJ).
        neighbours: refreshes on either side used to place each refresh.

    Returns:
        (estimate_j, low_j, high_j, period_s): per query, the estimate and the interval
        [low_j, high_j] holding the true cumulative energy on the same (unwrapped) scale;
        NaN where the trace has no refresh on either side of the query (the estimate
        needs two refreshes around it; the bound one provably before and one after). A
        window's energy is estimate[1] - estimate[0], within
        [low[1] - high[0], high[1] - low[0]]; period_s is the fitted refresh period.
    """
    est, low, high, period_s, _, _ = _bounds(t_ns, energy_j, q_ns, power_t_ns, power_w,
                                             latency_ns, resolution_j, neighbours)
    return est, low, high, period_s


def _bounds(t_ns, energy_j, q_ns, power_t_ns, power_w, latency_ns, resolution_j,
            neighbours) -> tuple[np.ndarray, np.ndarray, np.ndarray, float, np.ndarray,
                                 np.ndarray]:
    """:func:`counter_cumulative_bounds_j`, and per query the index of its last refresh
    provably before it (-1: none), and per refresh the most its reset lost (0: none)."""
    lo, hi, v, rs = _refreshes(t_ns, energy_j, latency_ns)
    u, period_s = refresh_times_ns(lo, hi, neighbours)
    q = _queries(q_ns)
    if power_t_ns is None:
        pt, pw = np.zeros(0, np.int64), np.zeros(0, np.float64)
    else:
        pt = checks.times(power_t_ns, "power_t_ns")
        pw = checks.values(power_w, pt.shape[0], "power_w")
    p_period = update_period_s(pt, pw) if pt.size else float("nan")
    p_period_ns = np.int64(round(p_period * 1e9)) if p_period == p_period else np.int64(0)
    est, low, high = (np.empty(q.shape[0], np.float64) for _ in range(3))
    loss = np.empty(u.shape[0], np.float64)
    before = np.empty(q.shape[0], np.int64)
    _reset_losses(u, lo, hi, v, rs, pt, pw, p_period_ns, float(resolution_j), loss)
    _bounded_cumulative(u, lo, hi, v, rs, loss, pt, pw, q, p_period_ns,
                        float(resolution_j), est, low, high, before)
    return est, low, high, period_s, before, loss


def counter_window_bounds_j(t_ns, energy_j, t0_ns: int, t1_ns: int, power_t_ns=None,
                            power_w=None, latency_ns=None,
                            resolution_j: float = 1e-3) -> tuple[float, float, float, float]:
    """A window's counter energy with refreshes at their likely times, and its bound.

    Returns:
        (energy_j, low_j, high_j, period_s): the estimate, an interval that holds the
        true energy (see :func:`counter_cumulative_bounds_j` for the premise), and the
        fitted refresh period. The edge bound of the window is
        max(energy_j - low_j, high_j - energy_j). NaN where the trace does not bracket
        both edges with refreshes. A window across a counter reset: the estimate misses
        the energy the reset lost, and high_j holds it (the most each reset between the
        edges' last refreshes can have lost is added; see
        :func:`counter_cumulative_bounds_j`); NaN where no power reading or counter
        slope bounds the power around the reset.
    """
    if t1_ns < t0_ns:
        raise ValueError("t1_ns is before t0_ns")
    est, low, high, period_s, before, loss = _bounds(
        t_ns, energy_j, [t0_ns, t1_ns], power_t_ns, power_w, latency_ns, resolution_j, 8)
    lost = float(loss[before[0] + 1:before[1] + 1].sum()) if before[0] >= 0 else 0.0
    high_j = float(high[1] - low[0] + lost) if lost < np.inf else float("nan")
    return float(est[1] - est[0]), float(low[1] - high[0]), high_j, period_s


def counter_window_sure_bounds_j(t_ns, energy_j, t0_ns: int, t1_ns: int, latency_ns=None,
                                 resolution_j: float = 1e-3) -> tuple[float, float]:
    """The least and the most energy a window can hold on the counter's reads alone.

    No premise on the power's shape, only that it is not negative: the counter never
    goes down between resets, and refresh m, which happened in (earliest_m, latest_m]
    (:func:`counter_refreshes`) and set the counter to C_m, had E(u_m) in
    [C_m, C_m + resolution_j]. So E(x) >= C_a for the last refresh a with latest_a <= x,
    and E(x) <= C_b + resolution_j for the first refresh b with earliest_b >= x. The
    window [t0, t1] holds between max(0, C_a(t1) - C_b(t0) - res) and
    C_b(t1) + res - C_a(t0): each edge adds up to one refresh interval of energy plus the
    sampler's gap around it, where :func:`counter_window_bounds_j` assumes the power
    readings' range. A reset after refresh a(t0) and up to b(t1) may have lost any
    energy (the unwrapping adds only the last value before it), so the top is NaN there;
    the bottom holds across resets (what they lose only adds to the truth).

    Returns:
        (low_j, high_j); both NaN where no refresh is provably before t0 or provably
        after t1.
    """
    if t1_ns < t0_ns:
        raise ValueError("t1_ns is before t0_ns")
    lo, hi, v, rs = _refreshes(t_ns, energy_j, latency_ns)
    a0, a1 = np.searchsorted(hi, [t0_ns, t1_ns], side="right") - 1
    b0, b1 = np.searchsorted(lo, [t0_ns, t1_ns], side="left")
    if a0 < 0 or b1 >= v.shape[0]:
        return float("nan"), float("nan")
    low = max(float(v[a1] - v[b0]) - resolution_j, 0.0)
    if rs[a0 + 1:b1 + 1].any():
        return low, float("nan")
    return low, float(v[b1] - v[a0]) + resolution_j


def counter_window_resets(t_ns, energy_j, t0_ns: int, t1_ns: int, latency_ns=None) -> int:
    """How many counter resets can have lost energy inside [t0, t1]: resets whose span,
    from the earliest time of the refresh before them to the latest of the refresh that
    shows them, overlaps the window."""
    lo, hi, _, rs = _refreshes(t_ns, energy_j, latency_ns)
    k = np.flatnonzero(rs)
    k = k[k >= 1]
    return int(np.count_nonzero((hi[k] > t0_ns) & (lo[k - 1] < t1_ns)))
