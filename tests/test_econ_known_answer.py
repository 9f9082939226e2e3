"""Econ formulas at their exact constants and at the edges of their valid ranges, by hand."""

import pytest

from bench.econ import formulas as F


def test_constants_are_exact():
    assert F.tokens_per_kwh(1.0) == 3.6e6  # 1 kWh = 3,600,000 J
    assert F.revenue_rmb_per_kwh(10.0, 0.5) == 18.0  # 3.6e7 tokens x 0.5 RMB / 1e6
    assert F.energy_cost_rmb_per_mtok(1.0, 3.6) == 1.0  # 3.6 RMB/kWh x 1e6 / 3.6e6
    assert F.tokens_per_j_for_revenue(18.0, 0.5) == 10.0


def test_meter_factor_edges():
    assert F.meter_factor("cpu", 1.0, 0.5)[0] == 1.0  # PUE 1 is allowed
    assert F.meter_factor("gpu", 1.5, 1.0)[0] == 1.5  # the GPU may be all of IT power
    for share in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError):
            F.meter_factor("gpu", 1.2, share)
    with pytest.raises(ValueError):
        F.meter_factor("gpu", 0.99, 0.5)


def test_capital_recovery_and_capex_edges():
    assert F.capital_recovery_factor(0.0, 0.5) == 2.0  # half a year at rate 0
    for years in (0.0, -1.0):
        with pytest.raises(ValueError):
            F.capital_recovery_factor(0.05, years)
        with pytest.raises(ValueError):
            F.capital_recovery_factor(0.0, years)
    # 8760 RMB over 1 year at rate 0, used all year: 1 RMB an hour; half the year: 2
    assert F.capex_rmb_per_hour(8760.0, 1.0, 0.0, 1.0) == 1.0
    assert F.capex_rmb_per_hour(8760.0, 1.0, 0.0, 0.5) == 2.0
    for u in (0.0, 1.5):
        with pytest.raises(ValueError):
            F.capex_rmb_per_hour(8760.0, 1.0, 0.0, u)
    # 1 RMB an hour at 1e6/3600 tokens/s is 1 RMB per million tokens
    assert F.capex_rmb_per_mtok(1.0, 1e6 / 3600) == pytest.approx(1.0, rel=1e-15)
