"""NumPy twins of kernels.trace: the same definitions, vectorised, for tests and checks.

Each function has the signature and result of its namesake in :mod:`bench.kernels.trace`
(see that module's docstring for the conventions). They favour clarity over memory.
"""

from __future__ import annotations

import numpy as np

from bench.kernels import checks


def _rel_s(x, t_first) -> np.ndarray:
    return (np.asarray(x, dtype=np.int64) - t_first) * 1e-9


def counter_cumulative_j(t_ns, energy_j, q_ns) -> np.ndarray:
    t = checks.times(t_ns)
    e = checks.values(energy_j, t.shape[0], "energy_j")
    q = checks.times(np.atleast_1d(np.asarray(q_ns)), "query times")
    out = np.full(q.shape[0], np.nan)
    if t.size == 0 or q.size == 0:
        return out
    steps = np.diff(e)
    offset = np.concatenate(([0.0], np.cumsum(np.where(steps < 0, e[:-1], 0.0))))
    val = e + offset
    changed = np.flatnonzero(np.diff(val) != 0) + 1
    ut = _rel_s(t[changed], t[0])
    ue = val[changed]
    if ut.size:  # equal timestamps: keep the last value
        keep = np.append(ut[1:] != ut[:-1], True)
        ut, ue = ut[keep], ue[keep]
    inside = (q >= t[0]) & (q <= t[-1])
    qs = _rel_s(q, t[0])
    k = ut.size
    if k == 0:
        res = np.full(q.shape[0], e[0])
    elif k == 1:
        res = np.where(qs < ut[0], e[0], ue[0])
    else:
        res = np.interp(qs, ut, ue)
        s_first = (ue[1] - ue[0]) / (ut[1] - ut[0])
        s_last = (ue[-1] - ue[-2]) / (ut[-1] - ut[-2])
        before, after = qs < ut[0], qs >= ut[-1]
        res[before] = ue[0] + s_first * (qs[before] - ut[0])
        res[after] = ue[-1] + s_last * (qs[after] - ut[-1])
    out[inside] = res[inside]
    return out


def counter_energy_j(t_ns, energy_j, t0_ns: int, t1_ns: int) -> float:
    if t1_ns < t0_ns:
        raise ValueError("t1_ns is before t0_ns")
    c = counter_cumulative_j(t_ns, energy_j, [t0_ns, t1_ns])
    return float(c[1] - c[0])


def power_cumulative_j(t_ns, power_w, q_ns) -> np.ndarray:
    t = checks.times(t_ns)
    p = checks.values(power_w, t.shape[0], "power_w")
    q = checks.times(np.atleast_1d(np.asarray(q_ns)), "query times")
    n = t.shape[0]
    if n == 0:
        return np.full(q.shape[0], np.nan)
    if n == 1:
        return np.zeros(q.shape[0])
    h = np.diff(t) * 1e-9
    cum = np.concatenate(([0.0], np.cumsum(0.5 * (p[1:] + p[:-1]) * h)))
    qc = np.clip(q, t[0], t[-1])
    i = np.clip(np.searchsorted(t, qc, side="right") - 1, 0, n - 2)
    d = (qc - t[i]) * 1e-9
    hi = h[i]
    safe = np.where(hi > 0, hi, 1.0)
    part = np.where(hi > 0, p[i] * d + 0.5 * (p[i + 1] - p[i]) * d * d / safe, 0.0)
    return cum[i] + part


def power_energy_j(t_ns, power_w, t0_ns: int, t1_ns: int) -> tuple[float, float, float]:
    if t1_ns < t0_ns:
        raise ValueError("t1_ns is before t0_ns")
    t = checks.times(t_ns)
    c = power_cumulative_j(t, power_w, [t0_ns, t1_ns])
    if t.size == 0 or t1_ns <= t0_ns:
        gap, covered = float("nan"), 0.0
    else:
        lo, hi = max(t0_ns, t[0]), min(t1_ns, t[-1])
        covered = max(0.0, (hi - lo) * 1e-9) / ((t1_ns - t0_ns) * 1e-9)
        inner = t[(t > t0_ns) & (t < t1_ns)]
        edges = np.concatenate(([t0_ns], inner, [t1_ns]))
        gap = float(np.max(np.diff(edges)) * 1e-9)
    energy = float(c[1] - c[0]) if covered > 0 or t1_ns == t0_ns else float("nan")
    return energy, gap, float(covered)


def segment_energy_j(t_ns, values, marks_ns, kind: str = "power") -> np.ndarray:
    if kind == "power":
        return np.diff(power_cumulative_j(t_ns, values, marks_ns))
    if kind == "counter":
        return np.diff(counter_cumulative_j(t_ns, values, marks_ns))
    raise ValueError("kind must be 'power' or 'counter'")


def update_period_s(t_ns, values) -> float:
    t = checks.times(t_ns)
    x = checks.values(values, t.shape[0], "values")
    idx = np.flatnonzero(np.diff(x) != 0) + 1
    if idx.size < 2:
        return float("nan")
    return float(np.median(np.diff(t[idx]) * 1e-9))


def steady_window(t_ns, rate, rel_tolerance: float) -> tuple[int, int, float]:
    if not rel_tolerance >= 0:
        raise ValueError("rel_tolerance must be 0 or more")
    t = checks.times(t_ns)
    x = checks.values(rate, t.shape[0], "rate")
    if x.size == 0:
        return 0, 0, 0.0
    med = float(np.median(x))
    band = abs(med) * rel_tolerance
    ok = (x >= med - band) & (x <= med + band)
    padded = np.concatenate(([False], ok, [False])).astype(np.int8)
    starts = np.flatnonzero(np.diff(padded) == 1)
    ends = np.flatnonzero(np.diff(padded) == -1)
    if starts.size == 0:
        return 0, 0, 0.0
    lengths = ends - starts
    b = int(np.argmax(lengths))  # first longest, as the loop keeps the first
    i0, i1 = int(starts[b]), int(ends[b])
    return i0, i1, float((t[i1 - 1] - t[i0]) * 1e-9)


def counter_refreshes(t_ns, energy_j, latency_ns=None):
    return _refreshes(t_ns, energy_j, latency_ns)[:3]


def _refreshes(t_ns, energy_j, latency_ns=None):
    t = checks.times(t_ns)
    e = checks.values(energy_j, t.shape[0], "energy_j")
    lat = np.zeros(t.shape[0], np.int64) if latency_ns is None else np.maximum(
        np.asarray(latency_ns, np.int64), 0)
    if lat.shape[0] != t.shape[0]:
        raise ValueError("latency_ns must have one value per sample")
    if t.size < 2:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0),
                np.zeros(0, bool))
    steps = np.diff(e)
    val = e + np.concatenate(([0.0], np.cumsum(np.where(steps < 0, e[:-1], 0.0))))
    i = np.flatnonzero(np.diff(val) != 0) + 1
    lo = t[i - 1] - (lat[i - 1] + 1) // 2
    hi = t[i] + (lat[i] + 1) // 2
    lo = np.minimum.accumulate(lo[::-1])[::-1].copy()
    # a reset at sample s (a step down from s-1) belongs to the first refresh at or after s
    resets = np.concatenate(([0], np.cumsum(steps < 0)))
    rs = np.diff(np.concatenate(([0], resets[i]))) > 0
    return lo, np.maximum.accumulate(hi), val[i], rs


def _grid_numbers(y, p0):
    # numbered from a promptly seen reference read: the earliest of the densest cluster of
    # the first 64 reads' phases, then any read within 5% of a period as prompt as it
    m = min(y.size, 64)
    r = y[:m] - np.floor(y[:m] / p0) * p0
    s = np.sort(r)
    counts = [int(np.sum(((s >= a) & (s <= a + 0.1 * p0)) | (s + p0 <= a + 0.1 * p0)))
              for a in s]
    phi = s[int(np.argmax(counts))]
    dphi = (r - phi) - np.floor((r - phi) / p0) * p0
    ref = int(np.nonzero((dphi < 0.1 * p0) | (dphi > 0.99 * p0))[0][0])
    num = np.zeros(y.size)
    num[:ref] = np.floor((y[:ref] - y[ref]) / p0 + 0.1)
    cur = ref
    for i in range(ref + 1, y.size):
        x = (y[i] - y[cur]) / p0
        num[i] = num[cur] + np.floor(x + 0.1)
        if x - np.floor(x + 0.1) < 0.05:
            cur = i
    return num


def refresh_times_ns(earliest_ns, latest_ns, neighbours: int = 8):
    lo = np.asarray(earliest_ns, np.int64)
    hi = checks.times(latest_ns, "latest_ns")
    if lo.shape != hi.shape:
        raise ValueError("earliest_ns and latest_ns differ in length")
    k = hi.size
    if k < 3:
        return hi.copy(), float("nan")
    d = np.diff(hi).astype(np.float64)
    p0 = np.median(d)
    if not p0 > 0:
        return hi.copy(), float("nan")
    y = (hi - hi[0]).astype(np.float64)
    num = _grid_numbers(y, p0)

    def slope(keep, default):
        if keep.sum() < 2:
            return default
        x, z = num[keep], y[keep]
        sxx = np.sum((x - x.mean()) ** 2)
        return np.sum((x - x.mean()) * (z - z.mean())) / sxx if sxx > 0 else default

    every = np.ones(k, bool)
    period = slope(every, p0)
    period = period if period > 0 else p0
    num = np.floor((y - np.median(y - num * period)) / period + 0.1)

    def lower_half(default):
        r = y - num * slope(every, default)
        fit = slope(r <= np.median(r), default)
        return fit if fit > 0 else default

    period = lower_half(period)
    r = y - num * period
    near = np.abs(r - np.median(r)) < 0.5 * period
    num = np.floor((y - r[near].min()) / period + 0.02)
    period = lower_half(period)
    phase = y - num * period  # each refresh's grid origin as its latest time implies
    best = np.full(k, np.inf)
    floor = (lo - hi[0]).astype(np.float64)
    for off in range(-neighbours, neighbours + 1):
        j = np.arange(k) + off
        ok = (j >= 0) & (j < k)
        c = np.full(k, np.inf)
        c[ok] = phase[j[ok]] + num[ok] * period
        best = np.where((c > floor) & (c < best), c, best)
    x = np.where(np.isinf(best), hi,
                 hi[0] + np.floor(np.where(np.isinf(best), 0.0, best) + 0.5).astype(np.int64))
    out = np.maximum.accumulate(np.minimum(np.maximum(x, lo), hi))
    return out, float(period * 1e-9)


def counter_cumulative_bounds_j(t_ns, energy_j, q_ns, power_t_ns=None, power_w=None,
                                latency_ns=None, resolution_j: float = 1e-3,
                                neighbours: int = 8):
    return _bounds(t_ns, energy_j, q_ns, power_t_ns, power_w, latency_ns, resolution_j,
                   neighbours)[:4]


def _reset_losses(u, lo, hi, v, rs, pt, pw, pp_ns, resolution_j):
    loss = np.zeros(u.size)
    for m in np.flatnonzero(rs):
        if m == 0:
            loss[m] = np.inf
            continue
        p = list(pw[(pt >= lo[m - 1]) & (pt <= hi[m] + 2 * pp_ns)])
        for a in (m - 2, m):
            if 0 <= a < u.size - 1 and not rs[a + 1] and u[a + 1] > u[a]:
                p.append((v[a + 1] - v[a]) / ((u[a + 1] - u[a]) * 1e-9))
        loss[m] = (max(max(p), 0.0) * (hi[m] - lo[m - 1]) * 1e-9 + resolution_j if p
                   else np.inf)
    return loss


def _bounds(t_ns, energy_j, q_ns, power_t_ns, power_w, latency_ns, resolution_j,
            neighbours):
    lo, hi, v, rs = _refreshes(t_ns, energy_j, latency_ns)
    u, period_s = refresh_times_ns(lo, hi, neighbours)
    q = checks.times(np.atleast_1d(np.asarray(q_ns)), "query times")
    if power_t_ns is None:
        pt, pw = np.zeros(0, np.int64), np.zeros(0)
    else:
        pt = checks.times(power_t_ns, "power_t_ns")
        pw = checks.values(power_w, pt.shape[0], "power_w")
    pp = update_period_s(pt, pw) if pt.size else float("nan")
    pp_ns = int(round(pp * 1e9)) if pp == pp else 0
    est, low, high = (np.full(q.shape[0], np.nan) for _ in range(3))
    prior = np.full(q.shape[0], -1, np.int64)
    loss = _reset_losses(u, lo, hi, v, rs, pt, pw, pp_ns, resolution_j)
    k = u.size
    for j, x in enumerate(q):
        if k < 2 or x < u[0] or x > u[-1]:
            continue
        a = min(int(np.searchsorted(u, x, side="right")) - 1, k - 2)
        while a > 0 and u[a + 1] == u[a]:
            a -= 1
        est[j] = v[a] + (v[a + 1] - v[a]) * (x - u[a]) / (u[a + 1] - u[a])
        ka = int(np.searchsorted(hi, x, side="right")) - 1
        kb = int(np.searchsorted(lo, x, side="left"))
        prior[j] = ka
        if ka < 0 or kb >= k:
            continue
        near = pw[(pt >= lo[ka]) & (pt <= hi[kb] + 2 * pp_ns)]
        m = np.arange(max(ka - 1, 0), min(kb + 1, k - 1))
        m = m[u[m + 1] > u[m]]
        means = (v[m + 1] - v[m]) / ((u[m + 1] - u[m]) * 1e-9)
        both = np.concatenate((near, means))
        if both.size == 0:
            continue
        p_min, p_max = max(both.min(), 0.0), both.max()
        r = np.arange(ka, kb + 1)
        dl = (x - lo[r]) * 1e-9
        dh = (x - hi[r]) * 1e-9
        before, after = dh >= 0, dl <= 0
        c_lo = np.where(before, v[r] + p_min * dh, v[r] + p_max * dh)
        c_hi = v[r] + resolution_j + np.where(after, p_min * dl, p_max * dl)
        # past a reset after refresh ka a refresh's value is low by up to its loss
        c_hi = c_hi + np.cumsum(np.where(rs[r] & (r > ka), loss[r], 0.0))
        low[j], high[j] = c_lo.max(), c_hi.min()
    return est, low, high, period_s, prior, loss


def counter_window_bounds_j(t_ns, energy_j, t0_ns: int, t1_ns: int, power_t_ns=None,
                            power_w=None, latency_ns=None, resolution_j: float = 1e-3):
    if t1_ns < t0_ns:
        raise ValueError("t1_ns is before t0_ns")
    est, low, high, period_s, before, loss = _bounds(
        t_ns, energy_j, [t0_ns, t1_ns], power_t_ns, power_w, latency_ns, resolution_j, 8)
    lost = loss[before[0] + 1:before[1] + 1].sum() if before[0] >= 0 else 0.0
    high_j = float(high[1] - low[0] + lost) if lost < np.inf else float("nan")
    return float(est[1] - est[0]), float(low[1] - high[0]), high_j, period_s


def counter_window_sure_bounds_j(t_ns, energy_j, t0_ns: int, t1_ns: int, latency_ns=None,
                                 resolution_j: float = 1e-3):
    if t1_ns < t0_ns:
        raise ValueError("t1_ns is before t0_ns")
    lo, hi, v, rs = _refreshes(t_ns, energy_j, latency_ns)
    before = [m for m in range(v.size) if hi[m] <= t0_ns]  # refreshed by t0
    after = [m for m in range(v.size) if lo[m] >= t1_ns]  # refreshed after t1
    if not before or not after:
        return float("nan"), float("nan")
    a0, b1 = before[-1], after[0]
    a1 = max(m for m in range(v.size) if hi[m] <= t1_ns)
    b0 = min(m for m in range(v.size) if lo[m] >= t0_ns)
    low = max(v[a1] - v[b0] - resolution_j, 0.0)
    high = v[b1] - v[a0] + resolution_j
    if any(rs[m] for m in range(a0 + 1, b1 + 1)):
        high = float("nan")
    return float(low), float(high)


def counter_window_resets(t_ns, energy_j, t0_ns: int, t1_ns: int, latency_ns=None) -> int:
    lo, hi, _, rs = _refreshes(t_ns, energy_j, latency_ns)
    return sum(1 for k in np.flatnonzero(rs) if k >= 1 and hi[k] > t0_ns and lo[k - 1] < t1_ns)
