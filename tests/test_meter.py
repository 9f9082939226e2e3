"""Meter windows against scripted counters and clocks: known answers."""

import pytest

from bench.errors import SensorError
from bench.meter import Meter


class Scripted:
    """A counter that returns the next scripted value (or raises) at each read."""

    def __init__(self, values, scope="gpu", method="counter", name="s"):
        self.values = list(values)
        self.scope, self.method, self.name, self.device = scope, method, name, "d"
        self.description = "scripted"

    def read_j(self):
        v = self.values.pop(0)
        if isinstance(v, Exception):
            raise v
        return v


def clock(*ticks):
    it = iter(ticks)
    return lambda: next(it)


def test_window_is_counter_difference_and_duration():
    syncs = []
    m = Meter([Scripted([100.0, 350.0])], sync=lambda: syncs.append(1),
              clock_ns=clock(1_000_000_000, 3_500_000_000))
    with m.window("w") as w:
        pass
    r = w.result
    assert r.duration_s == pytest.approx(2.5)
    assert r.energy_j("gpu") == pytest.approx(250.0)
    assert r.method("gpu") == "counter"
    assert len(syncs) == 2  # one synchronisation at each edge


def test_missing_reading_is_none_with_reason_never_zero():
    m = Meter([Scripted([1.0, SensorError("GPU is lost")])], clock_ns=clock(0, 10))
    with m.window("w") as w:
        pass
    assert w.result.energy_j("gpu") is None
    assert "GPU is lost" in w.result.reason("gpu")


def test_counter_going_backwards_is_flagged():
    m = Meter([Scripted([500.0, 10.0])], clock_ns=clock(0, 10))
    with m.window("w") as w:
        pass
    assert w.result.energy_j("gpu") is None
    assert "backwards" in w.result.reason("gpu")


def test_scopes_sum_and_weakest_method():
    srcs = [Scripted([0.0, 5.0], scope="cpu", name="a"),
            Scripted([0.0, 7.0], scope="cpu", method="estimate", name="b"),
            Scripted([0.0, 1.0], scope="dram", name="c")]
    m = Meter(srcs, clock_ns=clock(0, 10))
    with m.window("w") as w:
        pass
    assert w.result.energy_j("cpu") == pytest.approx(12.0)
    assert w.result.method("cpu") == "estimate"
    assert w.result.energy_j("dram") == pytest.approx(1.0)
    assert w.result.energy_j("gpu") is None and w.result.reason("gpu") == "no gpu sensor"


def test_exception_in_block_propagates_without_result():
    m = Meter([Scripted([0.0, 1.0])], clock_ns=clock(0, 10))
    with pytest.raises(ValueError), m.window("w") as w:
        raise ValueError("workload failed")
    assert w.result is None


def test_lead_out_waits_for_a_refresh_provably_after_t1():
    # The edge's interval needs a read after t1 that still shows the old counter value,
    # then one that shows the new: a sampler stalled across t1 sees the refresh only in
    # its first read after t1, which proves nothing (the refresh may be before t1).
    import numpy as np

    from bench.sampler import Trace

    def trace(t_ms, e_j):
        n = len(t_ms)
        return Trace(0, np.array(t_ms, np.int64) * 1_000_000, np.array(e_j, float),
                     np.zeros(n), np.zeros(n, np.int64), np.zeros(n, np.int64),
                     np.zeros(n, np.int64))

    class Samples:
        def __init__(self, tr):
            self.tr = tr

        def traces(self, since_ns=0):
            return [self.tr]

    t1 = 1000 * 1_000_000
    # stalled from 990 to 1050 ms: the read at 1050 shows the 1000 ms refresh (10 -> 20)
    stalled = Meter([], sampler=Samples(trace([990, 1050, 1051, 1052], [10, 20, 20, 20])))
    assert not stalled._refreshed_after(t1)
    # the next refresh at 1100 ms, read at 1101 after 1052 still showed 20: proven after t1
    later = Meter([], sampler=Samples(trace([990, 1050, 1052, 1101], [10, 20, 20, 30])))
    assert later._refreshed_after(t1)
    # a GPU without a counter (every read failed) does not hold the lead-out
    no_counter = trace([990, 1050], [0, 0])
    no_counter.energy_status[:] = 3
    assert Meter([], sampler=Samples(no_counter))._refreshed_after(t1)
