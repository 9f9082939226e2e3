"""The trace-derived error bound the busy-machine tests rely on, checked on synthetic traces."""

import numpy as np
import pytest

from bench.kernels import trace as K

from .timing import counter_window_error_j, max_gap_s, wait_until

UPDATE_NS = 100_000_000


def stale_counter_trace(rng, power_w, stall_ns):
    """Samples of a counter that updates every 100 ms, taken ~1 ms apart with stalls."""
    gaps = rng.integers(900_000, 1_100_000, 4000)
    stalls = rng.random(gaps.size) < 0.01
    gaps[stalls] += rng.integers(0, stall_ns, int(stalls.sum()))
    t = 5_000_000_000 + np.cumsum(gaps)
    lat = rng.integers(1_000, 30_000, t.size)
    read = t - lat // 2 + rng.integers(0, lat + 1)  # the read happens inside the call
    energy = np.floor(power_w * (read // UPDATE_NS * UPDATE_NS) * 1e-9 * 1000) / 1000
    return t, energy, lat


@pytest.mark.parametrize("seed", range(30))
def test_interpolated_window_error_lies_in_the_bound(seed):
    rng = np.random.default_rng(seed)
    p = 300.0
    t, e, lat = stale_counter_trace(rng, p, stall_ns=60_000_000)
    t0 = int(rng.integers(t[400], t[1500]))
    t1 = int(rng.integers(t[2500], t[-400]))
    lo, hi = counter_window_error_j(t, e, lat, t0, t1, p)
    err = K.counter_energy_j(t, e, t0, t1) - p * (t1 - t0) * 1e-9
    assert lo <= err <= hi
    # and tight: each edge can be off by at most the longest gap (plus a call) near the
    # two update points it uses, which lie within two update periods of it
    near = [max_gap_s(t, q - 2 * UPDATE_NS, q + 2 * UPDATE_NS) + 30e-6 for q in (t0, t1)]
    assert max(-lo, hi) <= p * sum(near) + 0.004

def test_bound_rejects_stale_edge_reads():
    # reading the counter at the edges without interpolation is the error the sampler
    # exists to remove; the bound of an undisturbed trace must exclude it
    rng = np.random.default_rng(1)
    p = 300.0
    t, e, lat = stale_counter_trace(rng, p, stall_ns=1)
    t0, t1 = int(t[1000]) + 50_000_000, int(t[3000]) + 10_000_000
    lo, hi = counter_window_error_j(t, e, lat, t0, t1, p)
    stale = e[np.searchsorted(t, t1) - 1] - e[np.searchsorted(t, t0) - 1]
    err = stale - p * (t1 - t0) * 1e-9
    assert not lo <= err <= hi
    assert hi - lo < 1.0  # ~1 ms of 300 W at each edge


def test_wait_until():
    assert wait_until(lambda: True, timeout_s=0)
    assert not wait_until(lambda: False, timeout_s=0.05)
