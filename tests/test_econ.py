"""Economics: known answers computed by hand, units, monotonicity, scenarios, the CLI."""

import json
from importlib import resources

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


# --- one layer of checks -------------------------------------------------------------


@pytest.mark.parametrize("name, value", [
    ("pue", 0.9), ("gpu_share_of_it_power", 1.5), ("gpu_share_of_it_power", 0.0),
    ("utilization", 1.01), ("depreciation_years", 0.0), ("cost_of_capital", -0.01),
    ("elec_rmb_per_kwh", -1.0), ("pue", float("nan")), ("utilization", float("inf"))])
def test_scenario_checks_every_override(name, value):
    sc = econ.load("china-west-dc")
    with pytest.raises(BenchError, match=name):
        sc.with_values(**{name: value})
    with pytest.raises(BenchError, match=name):
        econ.value_per_kwh([row()], sc, **{name: value})


def test_scenario_accepts_edges_and_refuses_unknown_names():
    sc = econ.load("china-west-dc").with_values(pue=1.0, utilization=1.0,
                                                gpu_share_of_it_power=1.0, cost_of_capital=0)
    assert sc.value("pue") == 1.0 and sc.value("utilization") == 1.0
    with pytest.raises(BenchError, match="unknown parameter"):
        sc.with_values(pues=1.2)
    with pytest.raises(BenchError, match="price_rmb_per_mtok"):
        econ.value_per_kwh([row()], sc, price_rmb_per_mtok=-1)


@pytest.mark.parametrize("flag, value, name", [
    ("--utilization", "1.5", "utilization"), ("--gpu-share", "2", "gpu_share_of_it_power"),
    ("--pue", "0.5", "pue"), ("--years", "0", "depreciation_years"),
    ("--cost-of-capital", "-0.1", "cost_of_capital"), ("--fx", "0", "fx_usd_cny"),
    ("--price-rmb-per-mtok", "-2", "price_rmb_per_mtok"), ("--pue", "nan", "pue")])
def test_cli_bad_values_are_one_line_from_the_scenario(tmp_path, capsys, flag, value, name):
    t = _table_file(tmp_path, [row()])
    assert main(["econ", str(t), "--no-reference", flag, value]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("bench econ: error: ") and name in err[0]


def _table_file(tmp_path, rows, name="t.csv"):
    from bench.results.table import COLUMN_NAMES

    path = tmp_path / name
    pd.DataFrame([{c: r.get(c) for c in COLUMN_NAMES} for r in rows]).to_csv(path, index=False)
    return path


# --- price class from the model's size ----------------------------------------------


def test_size_from_name():
    from bench.econ.pricing import size_from_name

    def sizes(name):
        s = size_from_name(name)
        return None if s is None else (s.total_b, s.active_b)

    assert sizes("Qwen/Qwen3-32B") == (32.0, 32.0)
    assert sizes("meta-llama/Llama-3.1-70B-Instruct") == (70.0, 70.0)
    assert sizes("meta-llama/Llama-3.1-8B-Instruct") == (8.0, 8.0)  # not the "3.1"
    assert sizes("Qwen/Qwen3-30B-A3B-Instruct-2507") == (30.0, 3.0)
    assert sizes("Qwen/Qwen3-Coder-480B-A35B-Instruct-FP8") == (480.0, 35.0)
    assert sizes("mistralai/Mixtral-8x7B-v0.1") == (56.0, 7.0)
    assert sizes("meta-llama/Llama-4-Scout-17B-16E-Instruct") is None  # 17B is active only
    assert sizes("deepseek-ai/DeepSeek-V3.1") is None
    assert sizes("my-model") is None


def test_price_class_by_size():
    sc = econ.load("china-west-dc")
    # dense <= 16B small; dense 16-120B large; MoE <= 120B total mid; above 120B frontier
    expected = {
        "Qwen/Qwen3-32B": "large",  # 32B dense: no longer the small price
        "Qwen/Qwen3-8B": "small",
        "google/gemma-3-27b-it": "large",
        "Qwen/Qwen3-30B-A3B-Instruct-2507": "mid",
        "Qwen/Qwen3-235B-A22B-Instruct-2507": "frontier",
        "meta-llama/Llama-3.1-405B-Instruct": "frontier",
        "deepseek-ai/DeepSeek-V3.1": "frontier",  # 671B/37B from [model_params]
        "openai/gpt-oss-120b": "mid",  # 117B/5B MoE from [model_params], not "120B dense"
        "meta-llama/Llama-4-Scout-17B-16E-Instruct": "mid",  # 109B total
        "some-unnamed-model": "unknown",
    }
    for model, cls in expected.items():
        assert econ.price_class(model, sc) == cls, model
    v = econ.value_per_kwh([row(model="Qwen/Qwen3-32B")], sc).iloc[0]
    assert v["price_class"] == "large" and v["price_rmb_per_mtok"] == 2.0  # price_out_cn_mid


def test_price_class_of_builtin_models_from_the_registry():
    from bench.econ.pricing import model_size

    # qwen3-30b-a3b: 30.5B parameters, 3.3B active (published architecture facts)
    s = model_size("qwen3-30b-a3b")
    assert s.source == "registry" and 30 < s.total_b < 31 and 3.2 < s.active_b < 3.5
    assert econ.price_class("qwen3-30b-a3b") == "mid"
    assert econ.price_class("llama-3.1-70b") == "large"
    assert econ.price_class("gpt2") == "small"


def test_unknown_size_must_be_priced(tmp_path, capsys):
    rows = [row(model="mystery-net"), row(model="other-thing"), row()]
    with pytest.raises(BenchError) as exc:
        econ.value_per_kwh(rows, "china-west-dc")
    msg = str(exc.value)
    assert "mystery-net" in msg and "other-thing" in msg and "\n" not in msg
    v = econ.value_per_kwh(rows, "china-west-dc", price_rmb_per_mtok=3.0)
    assert list(v["price_rmb_per_mtok"]) == [3.0, 3.0, 3.0]
    assert list(v["price_class"]) == ["unknown", "unknown", "small"]
    # a scenario entry prices the class, or gives the size
    text = (tmp_path / "s.toml")
    base = (resources.files("bench.econ") / "scenarios" / "china-west-dc.toml").read_text()
    text.write_text(base + '\n[prices]\nunknown = { rmb_per_mtok = 1.5, low = 1, high = 2 }\n'
                    '\n[model_params]\n"other-thing" = { total_b = 70 }\n')
    v = econ.value_per_kwh(rows, str(text))
    assert list(v["price_class"]) == ["unknown", "large", "small"]
    assert list(v["price_rmb_per_mtok"]) == [1.5, 2.0, 0.5]
    t = _table_file(tmp_path, rows)
    assert main(["econ", str(t), "--no-reference"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "mystery-net" in err[0] and "--price-rmb-per-mtok" in err[0]


# --- electricity override on a mix; sensitivity of every source ----------------------


def test_elec_override_replaces_the_blend(tmp_path, capsys):
    sc = econ.load("solar-direct")
    # blend by hand: solar 0.25 x 0.033 USD, thermal 0.60 x 0.35 RMB,
    # storage 0.15 x (0.033 USD / 0.85 + 0.20 RMB), at 7.15 CNY per USD
    blend = 0.25 * 0.033 * 7.15 + 0.60 * 0.35 + 0.15 * (0.033 * 7.15 / 0.85 + 0.20)
    assert econ.value_per_kwh([row()], sc).iloc[0]["elec_rmb_per_kwh"] == pytest.approx(blend)
    over = sc.with_values(elec_rmb_per_kwh=5.0)
    v = econ.value_per_kwh([row()], over).iloc[0]
    assert v["elec_rmb_per_kwh"] == 5.0
    factor = 1.25 / 0.55
    assert v["elec_cost_rmb_per_mtok"] == pytest.approx(5.0 * 1e6 / (3.6e7 / factor))
    assert len(over.notes) == 1 and "replaces" in over.notes[0]
    t = _table_file(tmp_path, [row()])
    assert main(["econ", str(t), "--no-reference", "--scenario", "solar-direct",
                 "--elec-rmb-per-kwh", "5", "--format", "json"]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out.strip().splitlines()[-1])[0]["elec_rmb_per_kwh"] == 5.0
    assert len(err.strip().splitlines()) == 1 and "0.3406" in err
    # a scenario without a mix takes the value silently
    assert not econ.load("china-west-dc").with_values(elec_rmb_per_kwh=0.4).notes


def test_tornado_varies_every_mix_source():
    t = econ.tornado(row(), "solar-direct", "allin_cost_rmb_per_mtok")
    params = list(t["parameter"])
    for src in ("solar", "thermal", "storage"):
        assert f"mix {src} rmb_per_kwh" in params
    assert "elec_rmb_per_kwh" not in params
    th = t[t["parameter"] == "mix thermal rmb_per_kwh"].iloc[0]
    assert (th["low"], th["high"]) == (0.20, 0.45)
    # by hand: only the energy cost in the all-in cost moves; thermal 0.60 of the hours
    factor = 1.25 / 0.55
    mtok_kwh = 1e6 / (3.6e7 / factor)  # kWh at the meter per million tokens
    assert th["swing"] == pytest.approx(0.60 * (0.45 - 0.20) * mtok_kwh)
    so = t[t["parameter"] == "mix solar rmb_per_kwh"].iloc[0]
    assert (so["low"], so["high"]) == pytest.approx((0.020 * 7.15, 0.040 * 7.15))
    assert so["swing"] == pytest.approx(0.25 * (0.040 - 0.020) * 7.15 * mtok_kwh)


# --- the terminal table -------------------------------------------------------------


def test_econ_table_shows_whole_names_and_devices():
    from rich.console import Console

    from bench import console

    long = "meta-llama/Llama-4-Maverick-17B-128E-Instruct-FP8"
    rows = [row(model=long, num_devices=8), row()]
    rows[1].pop("num_devices")
    v = econ.value_per_kwh(rows, "china-west-dc")
    c = Console(width=140, record=True)
    c.print(console.econ_table(v, "china-west-dc"))
    text = c.export_text()
    lines = text.splitlines()
    assert "GPUs" in text and "…" not in text and max(len(x) for x in lines) <= 140
    # the model column folds: its pieces, read down the column, give the whole name
    start = next(i for i, x in enumerate(lines) if "meta-llama" in x)
    col = lines[start].index("meta-llama")
    pieces = [lines[i][col:].split("  ")[0].strip() for i in range(start, start + 3)]
    assert long in "".join(pieces)
    cells = lines[start].split()
    assert cells[cells.index("meta-llama/Llama-4-Maverick-17") - 1] == "8"
    other = next(x for x in lines if "llama-3.1-8b" in x).split()
    assert other[other.index("llama-3.1-8b") - 1] == "1"  # no num_devices: one device


# --- measured node energy -----------------------------------------------------------


def test_measured_node_energy_by_hand():
    sc = econ.load("china-west-dc")  # PUE 1.25, assumed GPU share 0.55, 0.35 RMB/kWh
    v = econ.value_per_kwh([row(node_tokens_per_j=4.0), row(node_tokens_per_j=float("nan")),
                            row()], sc)
    m = v.iloc[0]
    assert m["meter_basis"] == "measured node"
    assert m["tokens_per_kwh"] == pytest.approx(4.0 / 1.25 * 3.6e6)
    assert m["revenue_rmb_per_kwh"] == pytest.approx(3.6 * 4.0 / 1.25 * 0.5)
    assert m["revenue_rmb_per_kwh_gpu"] == pytest.approx(18.0)  # 3.6 x 10 x 0.5
    assert m["elec_cost_rmb_per_mtok"] == pytest.approx(0.35 * 1e6 / (4.0 / 1.25 * 3.6e6))
    # the same tokens: GPU energy / node energy = (1/10) / (1/4)
    assert m["gpu_share_measured"] == pytest.approx(0.4)
    assert m["gpu_share_assumed"] == 0.55
    for i in (1, 2):  # NaN or absent: the assumed share
        a = v.iloc[i]
        assert "GPU share" in a["meter_basis"] and pd.isna(a["gpu_share_measured"])
        assert a["revenue_rmb_per_kwh"] == pytest.approx(18.0 / (1.25 / 0.55))


def test_node_scope_rows_and_the_cli_line(tmp_path, capsys):
    v = econ.value_per_kwh([row(scope="node", output_tokens_per_j=5.0)], "china-west-dc")
    assert v.iloc[0]["meter_basis"] == "measured node"
    assert v.iloc[0]["tokens_per_kwh"] == pytest.approx(5.0 / 1.25 * 3.6e6)
    assert pd.isna(v.iloc[0]["gpu_share_measured"])  # no GPU figure to compare with
    rows = [{**row(), "node_tokens_per_j": 4.0}, row(batch_size=8)]
    t = tmp_path / "t.csv"
    pd.DataFrame(rows).to_csv(t, index=False)  # a table with the extra column
    from bench.results.table import COLUMN_NAMES

    df = pd.read_csv(t)
    assert set(COLUMN_NAMES) - set(df.columns) == set(COLUMN_NAMES) - set(row()) - {
        "node_tokens_per_j"}
    v = econ.value_per_kwh(df, "china-west-dc")
    assert list(v["meter_basis"] == "measured node") == [True, False]


def test_sensitivity_row_prefers_measured_then_own_rows():
    rows = [row(output_tokens_per_j=50.0, source="external:ml.energy"),
            row(output_tokens_per_j=99.0, energy_method="estimate"),
            row(output_tokens_per_j=20.0, batch_size=8)]
    assert econ.sensitivity_row(rows)["batch_size"] == 8
    assert econ.sensitivity_row(rows[:2])["source"] == "external:ml.energy"
    with pytest.raises(BenchError):
        econ.sensitivity_row([row(output_tokens_per_j=None)])


def test_cli_reports_measured_next_to_assumed_share(monkeypatch, capsys):
    import bench.results

    table = pd.DataFrame([{**row(), "node_tokens_per_j": 4.0}, row(batch_size=8)])
    monkeypatch.setattr(bench.results, "load_table", lambda paths, include_reference: table)
    assert main(["econ", "--scenario", "china-west-dc"]) == 0
    out = capsys.readouterr().out
    # 4 / 10: GPU energy is 40% of node energy for the same tokens; assumed 0.55
    assert ("1 rows brought to the meter with measured node energy x PUE 1.25; GPU share "
            "of node power measured 0.40-0.40, assumed 0.55 for the others.") in out


@pytest.mark.parametrize("extra", [
    '\n[price_classes]\ndense = [{ max_total_b = 16, class = "nope" }]\n'
    'moe = [{ class = "mid" }]\n',
    '\n[price_classes]\ndense = [{ max_total_b = 16, class = "small" }]\n'
    'moe = [{ class = "mid" }]\n',  # the last rule must take every larger model
    '\n[model_params]\n"x-1" = { total_b = 3, active_b = 5 }\n',
    '\n[prices]\nsmall = { rmb_per_mtok = -1 }\n',
    '\nfx_usd_cny = { value = 0 }\n'])
def test_bad_scenario_pricing_sections_are_one_line(tmp_path, extra):
    base = (resources.files("bench.econ") / "scenarios" / "china-west-dc.toml").read_text()
    if extra.startswith("\nfx"):
        base = extra + base
        extra = ""
    bad = tmp_path / "bad.toml"
    bad.write_text(base + extra)
    with pytest.raises(BenchError) as exc:
        econ.load(str(bad))
    assert "\n" not in str(exc.value) and str(bad) in str(exc.value)


def test_tornado_with_a_fixed_price_for_an_unknown_model():
    r = row(model="mystery-net")
    with pytest.raises(BenchError, match="mystery-net"):
        econ.tornado(r, "china-west-dc")
    t = econ.tornado(r, "china-west-dc", "revenue_rmb_per_kwh", price_rmb_per_mtok=2.0)
    assert not any(p.startswith("price_rmb_per_mtok") for p in t["parameter"])
    # revenue at the meter: 3.6 x 10 tokens/J x 2 RMB / (1.25 / 0.55)
    assert t.attrs["base"] == pytest.approx(3.6 * 10 * 2.0 / (1.25 / 0.55))
