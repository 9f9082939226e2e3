"""bench econ optimize: the (power limit, batch) per scenario, against answers by hand."""

import json

import pandas as pd
import pytest

from bench.cli import main
from bench.econ.optimize import operating_points
from bench.results.columns import COLUMN_NAMES

# Two scenarios that differ only in the electricity price; PUE 1 and a GPU share of 1, so
# the meter's tokens/J is the GPU's; a server of 8760 RMB over 1 year at 0% and full use
# costs 1 RMB per GPU-hour; tokens sell at 2 RMB per million (given on the command line).
SCENARIO = """name = "{name}"
description = "hand-made"
elec_rmb_per_kwh = {elec}
pue = 1.0
gpu_share_of_it_power = 1.0
depreciation_years = 1
cost_of_capital = 0.0
utilization = 1.0
"""
PRICE, CAPEX = 2.0, 8760.0

# (power limit W, batch, tokens/J, tokens/s): A draws 600 / 2 = 300 W, B 675 / 1.5 = 450 W,
# C 100 / 0.5 = 200 W.
ROWS = [(300.0, 8, 2.0, 600.0), (450.0, 8, 1.5, 675.0), (450.0, 1, 0.5, 100.0)]


def table():
    rows = []
    for w, b, tpj, tps in ROWS:
        r = dict.fromkeys(COLUMN_NAMES)
        r.update(source="joulebench", run_id="r1", cell_id=f"gpu0/m/b{b}/pl{w:g}w",
                 device="gpu0", device_name="NVIDIA H200", num_devices=1, model="tiny-llama",
                 dtype="bf16", batch_size=b, input_len=8, output_len=4, status="ok",
                 scope="gpu", energy_method="counter", output_tokens_per_j=tpj,
                 output_tokens_per_s=tps, power_limit_w=w)
        rows.append(r)
    return pd.DataFrame(rows, columns=list(COLUMN_NAMES))


@pytest.fixture
def scenarios(tmp_path):
    out = []
    for name, elec in (("cheap", 0.1), ("dear", 5.0)):
        f = tmp_path / f"{name}.toml"
        f.write_text(SCENARIO.format(name=name, elec=elec))
        out.append(str(f))
    return out


def test_known_answer(scenarios):
    pts = operating_points(table(), scenarios, price_rmb_per_mtok=PRICE,
                           capex_rmb_per_gpu=CAPEX)
    cheap, dear = pts.to_dict("records")
    # margin per GPU-hour = revenue per hour - electricity per hour - 1 RMB capital:
    # revenue per hour = 2 RMB/Mtok x tokens/s x 3600 / 1e6
    #   A: 2 x 600 x 0.0036 = 4.32    B: 2 x 675 x 0.0036 = 4.86    C: 0.72
    # cheap (0.1 RMB/kWh): A 4.32 - 0.3 x 0.1 - 1 = 3.29; B 4.86 - 0.45 x 0.1 - 1 = 3.815;
    #   C 0.72 - 0.2 x 0.1 - 1 = -0.30  -> B: run flat out at 450 W
    assert (cheap["margin_power_limit_w"], cheap["margin_batch_size"]) == (450.0, 8)
    assert cheap["margin_rmb_per_gpu_hour"] == pytest.approx(3.815)
    # dear (5 RMB/kWh): A 4.32 - 1.5 - 1 = 1.82; B 4.86 - 2.25 - 1 = 1.61 -> A at 300 W
    assert (dear["margin_power_limit_w"], dear["margin_batch_size"]) == (300.0, 8)
    assert dear["margin_rmb_per_gpu_hour"] == pytest.approx(1.82)
    assert not cheap["margin_optimum_moves"] and dear["margin_optimum_moves"]
    # B under cheap power: all-in = 0.1 x 1e6 / (3.6e6 x 1.5) + 1e6 / (675 x 3600)
    #   = 0.0185185 + 0.4115226 = 0.4300412 RMB/Mtok; revenue per kWh 3.6 x 1.5 x 2 = 10.8
    assert cheap["margin_allin_cost_rmb_per_mtok"] == pytest.approx(0.4300412, rel=1e-6)
    assert cheap["margin_revenue_rmb_per_kwh"] == pytest.approx(10.8)
    # most tokens per kWh: A in both, 2 x 3.6e6 = 7.2e6; revenue 3.6 x 2 x 2 = 14.4 RMB/kWh
    for r, allin in ((cheap, 0.1e6 / 7.2e6 + 1e6 / 2.16e6), (dear, 5e6 / 7.2e6 + 1e6 / 2.16e6)):
        assert (r["efficiency_power_limit_w"], r["efficiency_batch_size"]) == (300.0, 8)
        assert r["efficiency_tokens_per_kwh"] == pytest.approx(7.2e6)
        assert r["efficiency_revenue_rmb_per_kwh"] == pytest.approx(14.4)
        assert r["efficiency_allin_cost_rmb_per_mtok"] == pytest.approx(allin)
    assert cheap["efficiency_margin_rmb_per_gpu_hour"] == pytest.approx(3.29)
    assert cheap["elec_rmb_per_kwh"] == 0.1 and dear["elec_rmb_per_kwh"] == 5.0


def test_cli_names_the_operating_point_per_scenario(scenarios, tmp_path, capsys):
    f = tmp_path / "table.csv"
    table().to_csv(f, index=False)
    args = ["econ", "optimize", str(f), "--scenario", scenarios[0], "--scenario",
            scenarios[1], "--price-rmb-per-mtok", "2", "--capex-rmb-per-gpu", "8760"]
    assert main(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("cheap (0.1 RMB/kWh): NVIDIA H200 tiny-llama: best margin "
                               "3.815 RMB/GPU-hour at 450 W, batch 8 (10.8 RMB/kWh")
    assert "most tokens/kWh 7.2e+06 at 300 W, batch 8 (14.4 RMB/kWh" in lines[0]
    assert "best margin 1.82 RMB/GPU-hour at 300 W, batch 8" in lines[1]
    assert lines[1].endswith("[the margin optimum moved]")
    assert main([*args, "--format", "json"]) == 0
    recs = json.loads(capsys.readouterr().out)
    assert [r["margin_power_limit_w"] for r in recs] == [450.0, 300.0]


def test_cli_refusals_are_one_line(scenarios, tmp_path, capsys):
    f = tmp_path / "table.csv"
    table().to_csv(f, index=False)
    assert main(["econ", "--scenario", scenarios[0], "--scenario", scenarios[1],
                 str(f)]) == 2
    assert "several only with bench econ optimize" in capsys.readouterr().err
    assert main(["econ", "optimize", str(tmp_path / "none.csv")]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_margin_per_gpu_hour_by_hand():
    from bench.econ.optimize import margin_rmb_per_gpu_hour

    # (10 - 4) RMB per Mtok x 1000 tokens/s x 3600 s = 21.6 RMB per hour, over 2 GPUs 10.8
    assert margin_rmb_per_gpu_hour(10.0, 4.0, 1000.0, 2) == pytest.approx(10.8, rel=1e-12)
    assert margin_rmb_per_gpu_hour(10.0, 4.0, 1000.0) == pytest.approx(21.6, rel=1e-12)
    assert margin_rmb_per_gpu_hour(None, 4.0, 1000.0) is None
    assert margin_rmb_per_gpu_hour(10.0, 4.0, 0.0) is None
