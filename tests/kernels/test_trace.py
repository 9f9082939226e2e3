"""Each trace kernel agrees with its NumPy twin, meets known answers, and keeps the physics."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench.kernels import reference as R
from bench.kernels import trace as T

S = 1_000_000_000  # ns per s


def random_trace(rng, n, stale_every=1, resets=0):
    dt = rng.integers(1, 3_000_000, n)
    t = np.cumsum(dt).astype(np.int64) + 10 * S
    p = rng.uniform(50, 700, n)
    e = np.floor(np.cumsum(p * dt * 1e-9) * 1000) / 1000 + 12345.0
    if stale_every > 1:  # the counter updates only every k samples
        idx = (np.arange(n) // stale_every) * stale_every
        e = e[idx]
    for _ in range(resets):
        k = int(rng.integers(1, n))
        e[k:] -= e[k - 1]  # counter reset to about zero at k
    return t, p, e


def agree(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9, equal_nan=True)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("stale, resets", [(1, 0), (37, 0), (5, 2)])
def test_twins_agree_on_random_traces(seed, stale, resets):
    rng = np.random.default_rng(seed)
    t, p, e = random_trace(rng, 2000, stale, resets)
    q = np.sort(rng.integers(t[0] - S // 100, t[-1] + S // 100, 50))
    agree(T.counter_cumulative_j(t, e, q), R.counter_cumulative_j(t, e, q))
    agree(T.power_cumulative_j(t, p, q), R.power_cumulative_j(t, p, q))
    for kind, v in (("power", p), ("counter", e)):
        agree(T.segment_energy_j(t, v, q, kind), R.segment_energy_j(t, v, q, kind))
    t0, t1 = int(q[5]), int(q[40])
    agree(T.counter_energy_j(t, e, t0, t1), R.counter_energy_j(t, e, t0, t1))
    agree(np.array(T.power_energy_j(t, p, t0, t1)), np.array(R.power_energy_j(t, p, t0, t1)))
    agree(T.update_period_s(t, e), R.update_period_s(t, e))
    assert T.steady_window(t, p, 0.3) == R.steady_window(t, p, 0.3)


EDGE_TRACES = [
    (np.array([], np.int64), np.array([])),
    (np.array([5 * S]), np.array([3.0])),
    (np.array([S, 2 * S]), np.array([1.0, 1.0])),
    (np.array([S, 2 * S, 3 * S]), np.array([1.0, 2.0, 2.0])),
    (np.array([S, S, 2 * S, 2 * S, 3 * S]), np.array([0.0, 1.0, 1.0, 3.0, 5.0])),
]


@pytest.mark.parametrize("t, v", EDGE_TRACES)
@pytest.mark.parametrize("q", [[], [0], [S, 3 * S], [S // 2, 2 * S], [2 * S, 4 * S],
                               [S, S, 2 * S, 3 * S]])
def test_twins_agree_on_edge_cases(t, v, q):
    q = np.array(q, np.int64)
    agree(T.counter_cumulative_j(t, v, q), R.counter_cumulative_j(t, v, q))
    agree(T.power_cumulative_j(t, v, q), R.power_cumulative_j(t, v, q))
    if q.size >= 2:
        agree(np.array(T.power_energy_j(t, v, int(q[0]), int(q[-1]))),
              np.array(R.power_energy_j(t, v, int(q[0]), int(q[-1]))))
    agree(T.update_period_s(t, v), R.update_period_s(t, v))
    assert T.steady_window(t, v, 0.1) == R.steady_window(t, v, 0.1)


def test_stale_counter_window_is_exact_for_constant_power():
    # 1 kHz samples of a counter that updates every 100 ms, integer mJ, 250 W
    t = np.arange(0, 4 * S, 1_000_000, dtype=np.int64)
    upd = (t // 100_000_000) * 100_000_000
    e = np.floor(250.0 * upd * 1e-6) / 1000
    for f in (T, R):
        got = f.counter_energy_j(t, e, int(0.512345678 * S), int(2.712345678 * S))
        assert got == pytest.approx(250.0 * 2.2, rel=1e-4)


def test_counter_window_outside_trace_is_nan():
    t = np.array([S, 2 * S, 3 * S])
    e = np.array([0.0, 1.0, 2.0])
    assert np.isnan(T.counter_energy_j(t, e, 0, 2 * S))
    assert np.isnan(T.counter_energy_j(t, e, 2 * S, 4 * S))


def test_reset_is_unwrapped():
    t = np.arange(6, dtype=np.int64) * S
    e = np.array([100.0, 110.0, 120.0, 5.0, 15.0, 25.0])  # reset to 0 between 2 and 3
    for f in (T, R):  # 20 J before the reset, 5 J across it, 20 J after
        assert f.counter_energy_j(t, e, 0, 5 * S) == pytest.approx(45.0)


def test_power_integration_known_answers_and_gaps():
    t = np.array([0, S, 2 * S, 5 * S], np.int64)
    p = np.array([100.0, 200.0, 200.0, 200.0])
    e, gap, cov = T.power_energy_j(t, p, 0, 2 * S)
    assert e == pytest.approx(150.0 + 200.0)
    e, gap, cov = T.power_energy_j(t, p, S // 2, 5 * S)
    assert e == pytest.approx(0.5 * (150 + 200) * 0.5 + 200 * 4) and gap == pytest.approx(3.0)
    e, gap, cov = T.power_energy_j(t, p, 4 * S, 6 * S)
    assert cov == pytest.approx(0.5) and e == pytest.approx(200.0)
    e, gap, cov = T.power_energy_j(t, p, 6 * S, 7 * S)
    assert np.isnan(e) and cov == 0.0


def test_update_period_and_steady_window():
    t = np.arange(1000, dtype=np.int64) * 1_000_000
    stale = (np.arange(1000) // 25).astype(float)  # changes every 25 ms
    assert T.update_period_s(t, stale) == pytest.approx(0.025)
    rate = np.full(1000, 100.0)
    rate[:100] = 10.0  # ramp-up
    rate[600] = 500.0  # a spike
    assert T.steady_window(t, rate, 0.05)[:2] == (100, 600)


@pytest.mark.parametrize("fn", [T, R])
def test_bad_input_is_rejected(fn):
    with pytest.raises(ValueError, match="not sorted"):
        fn.power_cumulative_j([2, 1], [1.0, 1.0], [1])
    with pytest.raises(ValueError, match="NaN"):
        fn.power_cumulative_j([1, 2], [1.0, np.nan], [1])
    with pytest.raises(ValueError, match="samples"):
        fn.counter_cumulative_j([1, 2], [1.0], [1])
    with pytest.raises(ValueError, match="query times is not sorted"):
        fn.counter_cumulative_j([1, 2], [1.0, 2.0], [2, 1])
    with pytest.raises(ValueError, match="before"):
        fn.counter_energy_j([1, 2], [1.0, 2.0], 2, 1)


# --- properties -------------------------------------------------------------------

times_st = st.lists(st.integers(0, 10 * S), min_size=2, max_size=60).map(sorted)


@settings(max_examples=60, deadline=None)
@given(st.floats(0, 2000), st.integers(2, 500), st.integers(1, 50_000_000))
def test_constant_power_gives_p_times_t(power, n, dt_ns):
    t = np.arange(n, dtype=np.int64) * dt_ns
    e, _, cov = T.power_energy_j(t, np.full(n, power), 0, int(t[-1]))
    assert cov == 1.0
    assert e == pytest.approx(power * t[-1] * 1e-9, rel=1e-9, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(times_st, st.data())
def test_splitting_conserves_and_growing_never_decreases(ts, data):
    t = np.array(ts, np.int64)
    p = np.array(data.draw(st.lists(st.floats(0, 1000), min_size=len(ts), max_size=len(ts))))
    e = np.cumsum(p)  # a non-decreasing counter
    lo, hi = int(t[0]), int(t[-1])
    edges = sorted(data.draw(st.lists(st.integers(lo, hi), min_size=3, max_size=10)))
    for kind, v in (("power", p), ("counter", e)):
        seg = T.segment_energy_j(t, v, edges, kind)
        total = T.segment_energy_j(t, v, [edges[0], edges[-1]], kind)[0]
        assert seg.sum() == pytest.approx(total, rel=1e-9, abs=1e-6)
        assert (seg >= -1e-9).all()  # non-negative power: a wider window never has less


@settings(max_examples=60, deadline=None)
@given(times_st, st.data())
def test_duplicated_samples_change_nothing(ts, data):
    t = np.array(ts, np.int64)
    p = np.array(data.draw(st.lists(st.floats(0, 1000), min_size=len(ts), max_size=len(ts))))
    e = np.cumsum(p)
    k = data.draw(st.integers(0, len(ts) - 1))
    t2, p2, e2 = np.insert(t, k, t[k]), np.insert(p, k, p[k]), np.insert(e, k, e[k])
    q = [int(t[0]), int((t[0] + t[-1]) // 2), int(t[-1])]
    agree(T.power_cumulative_j(t, p, q), T.power_cumulative_j(t2, p2, q))
    agree(T.counter_cumulative_j(t, e, q), T.counter_cumulative_j(t2, e2, q))


@pytest.mark.parametrize("fn", [T, R])
def test_counter_interpolation_and_extrapolation_by_hand(fn):
    t = np.arange(5, dtype=np.int64) * S
    e = np.array([0.0, 10.0, 10.0, 30.0, 30.0])  # update points (1 s, 10 J), (3 s, 30 J)
    q = [0, S // 2, S, 3 * S // 2, 2 * S, 7 * S // 2, 4 * S, 5 * S]
    # before the first point: back along 10 J/s; between: linear; after the last: on
    # along the last slope (10 J/s over the 2 s between the points); outside: NaN
    want = [0.0, 5.0, 10.0, 15.0, 20.0, 35.0, 40.0, np.nan]
    agree(fn.counter_cumulative_j(t, e, q), np.array(want))
    # one update point: a step there; none: constant
    agree(fn.counter_cumulative_j(t, [0.0, 0.0, 5.0, 5.0, 5.0], [S, 3 * S // 2, 2 * S, 4 * S]),
          np.array([0.0, 0.0, 5.0, 5.0]))
    agree(fn.counter_cumulative_j(t, np.full(5, 7.0), [0, 4 * S]), np.array([7.0, 7.0]))


@pytest.mark.parametrize("fn", [T, R])
def test_counter_input_errors_name_the_sample(fn):
    with pytest.raises(ValueError, match=r"energy_j\[0\] is NaN"):
        fn.counter_cumulative_j([1, 2, 3], [np.nan, 1.0, 2.0], [2])
    with pytest.raises(ValueError, match=r"energy_j\[2\] is NaN"):
        fn.counter_cumulative_j([1, 2, 3], [0.0, 1.0, np.nan], [2])
    with pytest.raises(ValueError, match=r"t_ns\[2\] < t_ns\[1\]"):
        fn.counter_cumulative_j([1, 3, 2], [0.0, 1.0, 2.0], [2])
    with pytest.raises(ValueError, match=r"t_ns\[2\] < t_ns\[1\]"):
        fn.power_cumulative_j([1, 3, 2], [0.0, 1.0, 2.0], [2])
    with pytest.raises(ValueError, match=r"power_w\[0\] is NaN"):
        fn.power_cumulative_j([1, 2, 3], [np.nan, 1.0, 2.0], [2])
    with pytest.raises(ValueError, match=r"energy_j\[1\] is NaN"):
        fn.counter_refreshes([1, 2, 3], [0.0, np.nan, 2.0])
    with pytest.raises(ValueError, match=r"energy_j\[0\] is NaN"):
        fn.counter_refreshes([1, 2, 3], [np.nan, 1.0, 2.0])
    with pytest.raises(ValueError, match=r"t_ns\[2\] < t_ns\[1\]"):
        fn.counter_refreshes([1, 3, 2], [0.0, 1.0, 2.0])


@pytest.mark.parametrize("fn", [T, R])
def test_power_nan_at_the_end_and_an_empty_window(fn):
    with pytest.raises(ValueError, match=r"power_w\[2\] is NaN"):
        fn.power_cumulative_j([1, 2, 3], [1.0, 1.0, np.nan], [2])
    t = np.array([0, S, 2 * S], np.int64)
    e, gap, cov = fn.power_energy_j(t, [100.0, 100.0, 100.0], S, S)
    assert e == 0.0 and np.isnan(gap) and cov == 0.0


@pytest.mark.parametrize("fn", [T, R])
def test_update_period_and_steady_window_edges_by_hand(fn):
    t = np.arange(4, dtype=np.int64) * S
    # two changes (at 1 s and 3 s): one interval of 2 s; one change: NaN
    assert fn.update_period_s(t, [0.0, 1.0, 1.0, 2.0]) == 2.0
    assert np.isnan(fn.update_period_s(t, [0.0, 1.0, 1.0, 1.0]))
    # changes at 1, 2 and 3 s, then 4 and 7 s: intervals 1, 1, 1, 3 s -> median 1
    t8 = np.arange(8, dtype=np.int64) * S
    assert fn.update_period_s(t8, [0, 1, 2, 3, 4, 4, 4, 5]) == 1.0
    # a band of width 0 holds exactly the median: all of a constant run
    assert fn.steady_window(t, np.full(4, 10.0), 0.0) == (0, 4, 3.0)
    # the median of [1, 3] is 2, which no sample equals: no run, no duration
    assert fn.steady_window(t[:2], [1.0, 3.0], 0.0) == (0, 0, 0.0)
    # the band's edges belong to it: median 10, +-10% is [9, 11]
    t5 = np.arange(5, dtype=np.int64) * S
    assert fn.steady_window(t5, [9.0, 10.0, 10.0, 11.0, 12.0], 0.1) == (0, 4, 3.0)


@pytest.mark.parametrize("fn", [T, R])
def test_empty_counter_window_is_zero(fn):
    t = np.arange(4, dtype=np.int64) * S
    assert fn.counter_energy_j(t, [0.0, 1.0, 2.0, 3.0], S, S) == 0.0
