"""Cells against the truth: the whole device session (sampler, meter, cells, figures) on a
stand-in GPU whose power follows the work, at the default GPU windows.

The stand-in's power is idle_w + busy_w x this process's CPU use (a thread of the library
sets it every millisecond), its counter and instant power refresh every 100 ms as on an
H100, and ``fake_nvml_true_energy_j`` gives the exact energy of any interval, so every
window's error and every cell's tokens/J can be checked against the truth.

Seen here (2 cores, quiet): cells within 0.01-0.23% of the truth. On a loaded machine
this process's CPU use, so the stand-in's power, swings on the scheduler's time slices
inside the 100 ms edge intervals, which no meter reading the counter can see. So the test
also computes an oracle: the counter interpolated at the true refresh times (what a
perfect meter of this counter gets). The meter must stay within 0.05% of a window of the
oracle's error whatever the load; the 0.3% target is asserted where the oracle itself is
within 0.15% (the target's conditions), else the cell within 0.1% of the oracle's.
The windows' edge intervals held the truth on 3-6 of 6 windows: their premise (power
between two power readings stays within the range the readings show) fails when power
swings every millisecond; the premise is stated in the README. Each window's sure
interval (the counter's reads alone, no premise on the power) must hold the truth on
every window.
"""

import statistics

import pytest

from bench import worker
from bench.devices import Device
from bench.sweep import SweepConfig, plan

H100_LIKE_FOLLOWING = ("base_w=100,busy_w=500,counter_period_ms=100,power_period_ms=100,"
                       "power_window_ms=25")


@pytest.mark.slow
def test_cells_within_0_3_percent_of_the_truth_and_bounds_hold(fake_truth, tmp_path, capsys):
    configure, truth = fake_truth
    configure(H100_LIKE_FOLLOWING)
    dev = Device("cuda", 0, "Stand-in GPU", "GPU-fake", {"torch_device": "cpu"})
    # the default GPU windows (5 s) and repeats (3); short lengths keep calls short
    config = SweepConfig(batch_sizes=(1, 4), input_lens=(16,), output_lens=(16,),
                         dtype="fp32", idle_s=0.5).resolved("cuda")
    assert config.min_window_s == 5.0 and config.repeats == 3
    records: list[dict] = []
    worker.run_device(dev, plan(config, [dev]), config, tmp_path, records.append)
    cells = [r for r in records if r["type"] == "cell"]
    assert [c["status"] for c in cells] == ["ok", "ok"]
    h_ns = 100_000_000  # the stand-in's counter refresh period

    def off_linear_j(t_ns: int) -> float:
        """The true energy from the last counter refresh to ``t_ns`` minus its straight-line
        share of the refresh interval: what interpolating between refreshes cannot see."""
        r = truth.counter_refresh_ns(0, t_ns)
        return truth.true_energy_j(0, r, t_ns) - truth.true_energy_j(0, r, r + h_ns) * (
            (t_ns - r) / h_ns)

    worst_cell, worst_window, worst_oracle_cell, contained = 0.0, 0.0, 0.0, 0
    windows, beyond_oracle, sure_rel = 0, [], 0.0
    for c in cells:
        true_tpj, oracle_tpj = [], []
        for r in c["repeats"]:
            (gpu,) = [x for x in r["readings"] if x["scope"] == "gpu"]
            true_j = truth.true_energy_j(0, r["t0_ns"], r["t1_ns"])
            # the best any meter can do that interpolates the counter between its refreshes,
            # knowing the refresh times exactly: its error is the power's shape inside the
            # two edge intervals, which 100 ms readings do not show
            oracle_j = true_j - (off_linear_j(r["t1_ns"]) - off_linear_j(r["t0_ns"]))
            st = gpu["stats"]
            windows += 1
            contained += st["energy_low_j"] <= true_j <= st["energy_high_j"]
            # the sure interval (the counter's reads alone) holds the truth on every window
            assert st["energy_sure_low_j"] <= true_j <= st["energy_sure_high_j"], (st, true_j)
            sure_rel = max(sure_rel, max(gpu["energy_j"] - st["energy_sure_low_j"],
                                         st["energy_sure_high_j"] - gpu["energy_j"]) / true_j)
            worst_window = max(worst_window, abs(gpu["energy_j"] / true_j - 1))
            # the meter's own error beyond the oracle's: refresh times fitted from late
            # observations, the counter's mJ steps; allowed 0.05% of the window
            excess_j = abs(gpu["energy_j"] - true_j) - abs(oracle_j - true_j)
            if excess_j > 5e-4 * true_j:
                beyond_oracle.append((gpu["energy_j"], oracle_j, true_j, st))
            true_tpj.append(r["output_tokens"] / true_j)
            oracle_tpj.append(r["output_tokens"] / oracle_j)
        err = c["figures"]["output_tokens_per_j"] / statistics.median(true_tpj) - 1
        worst_cell = max(worst_cell, abs(err))
        worst_oracle_cell = max(worst_oracle_cell,
                                abs(statistics.median(oracle_tpj) / statistics.median(true_tpj)
                                    - 1))
    with capsys.disabled():
        print(f"\npower following the work (100 + 500 W x CPU use), 100 ms refreshes, "
              f"default 5 s windows: worst cell tokens/J error {worst_cell:.4%} (an oracle "
              f"interpolating at the true refresh times: {worst_oracle_cell:.4%}), worst "
              f"window energy error {worst_window:.4%}, premise bounds held "
              f"{contained}/{windows}, sure bounds held {windows}/{windows} (largest sure "
              f"edge bound {sure_rel:.2%} of a window)")
    # The meter is as good as interpolation between refreshes can be, whatever the load.
    assert not beyond_oracle, f"meter, oracle, true J: {beyond_oracle}"
    if worst_oracle_cell < 0.0015:
        # the target's conditions: power inside the edge intervals close enough to a line
        # that interpolating at the true refresh times is within half the target
        assert worst_cell < 0.003  # the target: 0.3%
    else:
        # A loaded machine makes this process's CPU use (so the stand-in's power) swing
        # on the scheduler's time slices, inside the edge intervals: no counter meter can
        # see that; the meter must still stay within 0.1% of the oracle.
        assert worst_cell < worst_oracle_cell + 0.001
    assert worst_window < 0.01  # no window far off either
