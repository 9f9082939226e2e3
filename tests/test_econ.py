"""Economics: known answers computed by hand, units, monotonicity, scenarios, the CLI."""

import json

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bench import econ
from bench.cli import main
from bench.econ import formulas as F
from bench.errors import BenchError


def row(**kw):
    base = {"source": "joulebench", "device_name": "NVIDIA H200", "num_devices": 1,
            "model": "llama-3.1-8b", "batch_size": 64, "input_len": 512, "output_len": 256,
            "status": "ok", "scope": "gpu", "energy_method": "counter",
            "output_tokens_per_j": 10.0, "output_tokens_per_s": 5000.0}
    base.update(kw)
    return base


def test_formulas_known_answers():
    assert F.revenue_rmb_per_kwh(10.0, 0.5) == pytest.approx(18.0)  # 3.6 x 10 x 0.5
    assert F.energy_cost_rmb_per_mtok(10.0, 0.5) == pytest.approx(0.5e6 / 3.6e7)
    assert F.capital_recovery_factor(0.05, 5) == pytest.approx(0.2309748, rel=1e-6)
    assert F.capital_recovery_factor(0.0, 4) == 0.25
    assert F.meter_factor("gpu", 1.25, 0.5)[0] == pytest.approx(2.5)
    assert F.meter_factor("system", 1.25, 0.5)[0] == pytest.approx(1.25)
    assert F.tokens_per_j_for_revenue(10.0, 0.5) == pytest.approx(10 / 1.8)
    mix = [{"share": 0.5, "rmb_per_kwh": 0.2},
           {"share": 0.5, "rmb_per_kwh": 0.2, "round_trip_efficiency": 0.8,
            "adder_rmb_per_kwh": 0.1}]
    assert F.blended_price_rmb_per_kwh(mix) == pytest.approx(0.5 * 0.2 + 0.5 * (0.25 + 0.1))
    with pytest.raises(ValueError):
        F.blended_price_rmb_per_kwh([{"share": 0.7, "rmb_per_kwh": 1}])


def test_value_per_kwh_by_hand():
    sc = econ.load("china-west-dc")  # 0.35 RMB/kWh, PUE 1.25, GPU share 0.55
    v = econ.value_per_kwh([row()], sc).iloc[0]
    factor = 1.25 / 0.55
    price = sc.prices["small"].value
    assert price == 0.5
    assert v["tokens_per_kwh_gpu"] == pytest.approx(3.6e7)
    assert v["tokens_per_kwh"] == pytest.approx(3.6e7 / factor)
    assert v["revenue_rmb_per_kwh_gpu"] == pytest.approx(18.0)
    assert v["revenue_rmb_per_kwh"] == pytest.approx(18.0 / factor)
    assert v["multiple_over_elec"] == pytest.approx(18.0 / factor / 0.35)
    elec_cost = 0.35 * 1e6 / (3.6e7 / factor)
    assert v["elec_cost_rmb_per_mtok"] == pytest.approx(elec_cost)
    capex = 46875 * 7.15  # H200 server / 8 GPUs, USD -> RMB
    per_hour = capex * F.capital_recovery_factor(0.05, 5) / (8760 * 0.60)
    assert v["capex_rmb_per_gpu_hour"] == pytest.approx(per_hour)
    capex_mtok = per_hour / (5000 * 3600) * 1e6
    assert v["allin_cost_rmb_per_mtok"] == pytest.approx(elec_cost + capex_mtok)
    assert v["margin_rmb_per_kwh"] == pytest.approx(
        (0.5 - elec_cost - capex_mtok) * (3.6e7 / factor) / 1e6)
    assert bool(v["best_batch"]) and not bool(v["estimate"])


def test_usd_scenarios_convert_at_fx():
    tx = econ.load("us-texas")
    assert tx.value("elec_rmb_per_kwh") == pytest.approx(0.066 * 7.15)
    assert tx.prices["small"].value == pytest.approx(0.18 * 7.15)
    tx2 = econ.load("us-texas", fx_usd_cny=7.0)
    assert tx2.value("elec_rmb_per_kwh") == pytest.approx(0.066 * 7.0)


def test_every_scenario_loads_with_sources():
    for name in econ.builtin_names():
        sc = econ.load(name)
        for p in sc.params.values():
            assert p.low <= p.value <= p.high and p.source
    assert {"china-west-dc", "china-grid-reference", "solar-direct", "us-virginia",
            "us-texas"} <= set(econ.builtin_names())


@settings(max_examples=100, deadline=None)
@given(st.floats(0.01, 100), st.floats(0.01, 100), st.sampled_from(econ.builtin_names()))
def test_more_tokens_per_joule_never_lowers_revenue(a, b, name):
    lo, hi = sorted((a, b))
    v = econ.value_per_kwh([row(output_tokens_per_j=lo), row(output_tokens_per_j=hi)], name)
    assert v["revenue_rmb_per_kwh"].iloc[1] >= v["revenue_rmb_per_kwh"].iloc[0]
    assert v["elec_cost_rmb_per_mtok"].iloc[1] <= v["elec_cost_rmb_per_mtok"].iloc[0]


def test_estimates_carry_their_label_and_unknown_capex_is_null():
    v = econ.value_per_kwh([row(energy_method="estimate", device_name="Some CPU",
                                scope="cpu")], "china-west-dc").iloc[0]
    assert bool(v["estimate"])
    assert pd.isna(v["capex_rmb_per_gpu_hour"]) and pd.isna(v["allin_cost_rmb_per_mtok"])
    assert "IT energy" in v["meter_basis"]


def test_follow_supply_and_firming():
    v = econ.value_per_kwh([row()], "solar-direct").iloc[0]
    assert v["follow_supply_allin_cost_rmb_per_mtok"] > 0
    # idling GPUs 75% of hours triples capex per token; firming is cheaper here
    assert bool(v["firming_beats_idling"])
    cheap_gpu = econ.value_per_kwh([row()], "solar-direct", capex_rmb_per_gpu=1.0).iloc[0]
    assert not bool(cheap_gpu["firming_beats_idling"])  # nearly free GPUs: follow supply


def test_tornado_and_solar_curve():
    t = econ.tornado(row(), "china-west-dc")
    assert t["swing"].iloc[0] == t["swing"].max()
    assert "utilization" in set(t["parameter"])
    c = econ.solar_curve(row(), "solar-direct", points=4)
    assert list(c["cell_efficiency_pct"]) == [23.0, 24.0, 25.0, 26.0]
    assert c["lcoe_rmb_per_kwh"].iloc[1] == pytest.approx(0.033 * 7.15 * 0.96)
    assert (c["elec_cost_rmb_per_mtok"].diff().dropna() < 0).all()


def test_check_claim_needed_tokens_per_joule():
    needed, rows = econ.check_claim([row()], prices_rmb_per_mtok=(0.5, 2.0))
    assert needed["tokens_per_j_at_meter"].tolist() == pytest.approx([10 / 1.8, 10 / 7.2])
    factor = 1.48 / 0.55
    assert needed["tokens_per_j_at_gpu"].iloc[0] == pytest.approx(10 / 1.8 * factor)
    assert rows["meets_claim"].iloc[0] == (18.0 / factor >= 10)


def test_bad_scenario_file_is_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    for text in ("not = [toml", 'name = "x"\nmarket = "cn"\n',
                 'elec_rmb_per_kwh = 0.3\npue = 0.5\ngpu_share_of_it_power = 0.5\n'
                 'depreciation_years = 5\ncost_of_capital = 0.05\nutilization = 0.6\n'):
        bad.write_text(text)
        with pytest.raises(BenchError):
            econ.load(str(bad))
        assert main(["econ", "--scenario", str(bad), str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("bench econ: error:")


def test_cli_json_rows(tmp_path, capsys):
    import pandas as pd

    from bench.results.table import COLUMN_NAMES

    df = pd.DataFrame([{c: row().get(c) for c in COLUMN_NAMES}])
    df.to_csv(tmp_path / "t.csv", index=False)
    assert main(["econ", str(tmp_path / "t.csv"), "--scenario", "us-virginia",
                 "--format", "json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows[0]["tokens_per_j"] == 10.0 and rows[0]["revenue_rmb_per_kwh"] > 0
    assert main(["econ", str(tmp_path / "t.csv"), "--price-rmb-per-mtok", "2",
                 "--pue", "1.1", "--format", "csv"]) == 0
    assert "2.0" in capsys.readouterr().out
    assert main(["econ", "check-claim", str(tmp_path / "t.csv")]) == 0
    assert "20x" in capsys.readouterr().out
    assert main(["econ", "sensitivity", str(tmp_path / "t.csv"), "--scenario",
                 "solar-direct"]) == 0
    assert "tornado" in capsys.readouterr().out
