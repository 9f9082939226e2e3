"""Economics: measured tokens/J turned into RMB per kWh, cost per million tokens, multiples.

``value_per_kwh(table, scenario)`` is the API for other programs; ``bench econ`` prints it.
Rows whose energy is an estimate carry ``estimate = True`` through every output.
"""

from __future__ import annotations

import math
from dataclasses import replace

from bench.econ import formulas as F
from bench.econ import pricing
from bench.econ.scenario import Scenario, builtin_names, check_value, load
from bench.errors import BenchError

__all__ = ["OUTPUT_COLUMNS", "Scenario", "builtin_names", "check_claim", "load",
           "price_class", "sensitivity_row", "solar_curve", "tornado", "value_per_kwh"]

DEFAULT_SCENARIO = "china-grid-reference"

# value_per_kwh's columns that need a token price (null for a model of unknown size).
PRICE_DEPENDENT = ("price_rmb_per_mtok", "revenue_rmb_per_kwh_gpu", "revenue_rmb_per_kwh",
                   "multiple_over_elec", "margin_rmb_per_kwh")

# (column, meaning) of value_per_kwh's DataFrame, in order.
OUTPUT_COLUMNS = (
    ("source", "joulebench or external:<origin>"),
    ("device_name", "device model"),
    ("num_devices", "devices the cell used"),
    ("model", "model"),
    ("batch_size", "batch size"),
    ("input_len", "prompt tokens per sequence"),
    ("output_len", "output tokens per sequence"),
    ("scope", "what the measured energy covers"),
    ("energy_method", "counter, power_integration or estimate"),
    ("estimate", "True where the energy is an estimate, not a measurement"),
    ("tokens_per_j", "output tokens per joule at the measured scope"),
    ("tokens_per_kwh_gpu", "output tokens per kWh at the measured scope"),
    ("tokens_per_kwh", "output tokens per kWh at the utility meter"),
    ("meter_basis", "how measured energy was brought to the meter: measured node, or the "
     "assumed GPU share of IT power and PUE"),
    ("gpu_share_assumed", "the scenario's GPU share of IT power"),
    ("gpu_share_measured", "GPU energy / node energy for the same tokens, where the row has "
     "measured node energy"),
    ("price_class", "model class whose token price applies (small, mid, large, frontier, "
     "unknown; from the model's size)"),
    ("price_rmb_per_mtok", "token price, RMB per million output tokens"),
    ("revenue_rmb_per_kwh_gpu", "RMB per kWh at the measured scope: 3.6 x tokens/J x price"),
    ("revenue_rmb_per_kwh", "RMB per kWh at the utility meter"),
    ("elec_rmb_per_kwh", "electricity price (the blend where the scenario has a mix)"),
    ("multiple_over_elec", "revenue per kWh / electricity price"),
    ("elec_cost_rmb_per_mtok", "electricity cost of a million output tokens"),
    ("capex_rmb_per_gpu_hour", "capital cost per GPU per serving hour (null: unknown device)"),
    ("capex_rmb_per_mtok", "capital cost of a million output tokens"),
    ("allin_cost_rmb_per_mtok", "electricity + capital per million output tokens"),
    ("margin_rmb_per_kwh", "revenue - electricity - capital, per kWh at the meter"),
    ("breakeven_price_rmb_per_mtok", "token price at which the margin is zero"),
    ("follow_supply_allin_cost_rmb_per_mtok", "all-in cost if the GPUs run only while green "
     "power is there (scenarios with follow_supply)"),
    ("firming_beats_idling", "True where the firmed mix costs less per token than following "
     "supply"),
    ("best_batch", "True for the batch with the highest revenue per kWh of its device, model "
     "and run"),
)
OUTPUT_COLUMN_NAMES = tuple(c for c, _ in OUTPUT_COLUMNS)


def price_class(model: str, scenario: Scenario | str = DEFAULT_SCENARIO) -> str:
    """The token-price class of a model from its size (small, mid, large, frontier, unknown).

    The size comes from the model registry for built-in models, from the scenario's
    ``[model_params]``, else from the name (``32B``, ``30B-A3B``); the class from the
    scenario's ``[price_classes]`` (``bench/econ/defaults.toml`` documents both).
    """
    sc = load(scenario) if isinstance(scenario, str) else scenario
    return pricing.price_class_of(model, sc)


def capex_rmb_for(device_name: str, scenario: Scenario) -> float | None:
    """Server price per GPU in RMB for a device name (None where the device is unknown)."""
    name = str(device_name).upper()
    for key, p in scenario.capex_rmb_per_gpu.items():
        if key.upper() in name:
            return p.value
    return None


def _finite(x) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _row_value(row: dict, sc: Scenario, price_rmb_per_mtok: float | None,
               capex_rmb_per_gpu: float | None) -> dict:
    tpj = _finite(row.get("output_tokens_per_j"))
    node_tpj = _finite(row.get("node_tokens_per_j"))
    if node_tpj is not None and node_tpj <= 0:
        node_tpj = None
    scope = row.get("scope") or "gpu"
    if scope == "node" and node_tpj is None and tpj is not None and tpj > 0:
        node_tpj = tpj  # the row's own energy is the node's
    out = {k: row.get(k) for k in ("source", "device_name", "num_devices", "model",
                                   "batch_size", "input_len", "output_len", "scope",
                                   "energy_method")}
    if _finite(out["num_devices"]) is None:
        out["num_devices"] = 1  # rows without the column ran on one device
    out["estimate"] = row.get("energy_method") == "estimate"
    cls = pricing.price_class_of(row.get("model", ""), sc)
    if price_rmb_per_mtok is not None:
        price = price_rmb_per_mtok
    elif cls in sc.prices:
        price = sc.prices[cls].value
    else:
        pricing.check_priced([row.get("model", "")], sc)  # raises, naming the model
    elec = (F.blended_price_rmb_per_kwh(sc.mix) if sc.mix else sc.value("elec_rmb_per_kwh"))
    share = sc.value("gpu_share_of_it_power")
    if node_tpj is not None:
        # measured node energy (the whole chassis) is the IT energy; only PUE is assumed
        factor, basis = None, "measured node"
    else:
        factor, basis = F.meter_factor(scope, sc.value("pue"), share)
    out.update(tokens_per_j=tpj, price_class=cls, price_rmb_per_mtok=price,
               elec_rmb_per_kwh=elec, meter_basis=basis, gpu_share_assumed=share)
    if node_tpj is not None and tpj is not None and tpj > 0 and scope == "gpu":
        # same tokens: E_gpu / E_node = (N / tpj_gpu) / (N / tpj_node)
        out["gpu_share_measured"] = node_tpj / tpj
    if tpj is None or tpj <= 0:
        return out
    if node_tpj is not None:
        tpj_meter = node_tpj / sc.value("pue")
    else:
        assert factor is not None  # meter_factor set it: there is no measured node energy
        tpj_meter = tpj / factor
    out["tokens_per_kwh_gpu"] = F.tokens_per_kwh(tpj)
    tpkwh_meter = F.tokens_per_kwh(tpj_meter)
    out["tokens_per_kwh"] = tpkwh_meter
    out["revenue_rmb_per_kwh_gpu"] = F.revenue_rmb_per_kwh(tpj, price)
    rev = F.revenue_rmb_per_kwh(tpj_meter, price)
    out["revenue_rmb_per_kwh"] = rev
    out["multiple_over_elec"] = rev / elec if elec > 0 else None
    e_cost = F.energy_cost_rmb_per_mtok(tpj_meter, elec)
    out["elec_cost_rmb_per_mtok"] = e_cost
    tps = _finite(row.get("output_tokens_per_s"))
    n = _finite(row.get("num_devices")) or 1.0
    capex = capex_rmb_per_gpu if capex_rmb_per_gpu is not None else capex_rmb_for(
        row.get("device_name", ""), sc)
    years, rate, util = (sc.value("depreciation_years"), sc.value("cost_of_capital"),
                         sc.value("utilization"))
    if capex is not None and tps:
        per_hour = F.capex_rmb_per_hour(capex, years, rate, util)
        out["capex_rmb_per_gpu_hour"] = per_hour
        c_cost = F.capex_rmb_per_mtok(per_hour * n, tps)
        out["capex_rmb_per_mtok"] = c_cost
        allin = e_cost + c_cost
        out["allin_cost_rmb_per_mtok"] = allin
        out["breakeven_price_rmb_per_mtok"] = allin
        out["margin_rmb_per_kwh"] = (price - allin) * tpkwh_meter / 1e6
        if sc.follow_supply:
            fs = sc.follow_supply
            hours_util = min(util, fs["capacity_factor"])
            f_cost = (F.energy_cost_rmb_per_mtok(tpj_meter, fs["rmb_per_kwh"])
                      + F.capex_rmb_per_mtok(
                          F.capex_rmb_per_hour(capex, years, rate, hours_util) * n, tps))
            out["follow_supply_allin_cost_rmb_per_mtok"] = f_cost
            out["firming_beats_idling"] = bool(allin < f_cost)
    return out


def value_per_kwh(table, scenario: Scenario | str, price_rmb_per_mtok: float | None = None,
                  capex_rmb_per_gpu: float | None = None, unpriced: str = "refuse",
                  **overrides: float):
    """Revenue, costs and multiples per row of the empirical table under a scenario.

    Args:
        table: a DataFrame with the table's columns (``bench.results.load_table``), or rows.
        scenario: a :class:`Scenario` or its name/path.
        price_rmb_per_mtok: one token price for every row (else by model class).
        capex_rmb_per_gpu: one server price per GPU (else by device name).
        unpriced: ``refuse`` (a model of unknown size stops with one line naming it) or
            ``null`` (its rows stay, with every price-dependent column null, and are named
            in ``attrs["unpriced_models"]``: for pages that show what can be priced and
            say what cannot).
        **overrides: scenario parameter values (elec_rmb_per_kwh, pue, utilization, ...).

    Returns:
        A DataFrame with :data:`OUTPUT_COLUMN_NAMES`, one row per ``ok`` input row.
    """
    import pandas as pd

    sc = load(scenario) if isinstance(scenario, str) else scenario
    if overrides:
        sc = sc.with_values(**overrides)
    if price_rmb_per_mtok is not None:
        price_rmb_per_mtok = check_value("price_rmb_per_mtok", price_rmb_per_mtok)
    if capex_rmb_per_gpu is not None:
        capex_rmb_per_gpu = check_value("capex_rmb_per_gpu", capex_rmb_per_gpu)
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    if unpriced not in ("refuse", "null"):
        raise ValueError(f"unpriced must be 'refuse' or 'null', not {unpriced!r}")
    unknown = [price_rmb_per_mtok is None and
               pricing.price_class_of(r.get("model", ""), sc) not in sc.prices for r in rows]
    if any(unknown) and unpriced == "refuse":
        pricing.check_priced([r.get("model", "") for r in rows], sc)  # raises, naming them
    out = []
    for r, no_price in zip(rows, unknown, strict=True):
        if no_price:  # priced at 1 RMB/Mtok, then every price-dependent figure nulled
            v = _row_value(r, sc, 1.0, capex_rmb_per_gpu)
            v.update({k: None for k in PRICE_DEPENDENT})
            out.append(v)
        else:
            out.append(_row_value(r, sc, price_rmb_per_mtok, capex_rmb_per_gpu))
    df = pd.DataFrame(out, columns=list(OUTPUT_COLUMN_NAMES))
    df.attrs["unpriced_models"] = sorted({str(r.get("model", ""))
                                          for r, u in zip(rows, unknown, strict=True) if u})
    df["best_batch"] = False
    if len(df):
        rev = pd.to_numeric(df["revenue_rmb_per_kwh"], errors="coerce")
        # one group per device, model and run (an imported file holds one workload)
        key = pd.Series(["|".join(str(r.get(k)) for k in ("source", "run_id", "device_name",
                                                         "num_devices", "model"))
                         for r in rows], index=df.index)
        for _, idx in rev.groupby(key).groups.items():
            sub = rev.loc[idx].dropna()
            if len(sub):
                df.loc[sub.idxmax(), "best_batch"] = True
    return df


def sensitivity_row(table) -> dict:
    """The row ``bench econ sensitivity`` varies: the highest tokens/J, measured rows
    first, then ours before imported (reference) rows.

    Raises:
        BenchError: no ``ok`` row has a tokens/J figure.
    """
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    rows = [r for r in rows if r.get("status", "ok") == "ok"
            and (_finite(r.get("output_tokens_per_j")) or 0) > 0]
    if not rows:
        raise BenchError("no row with a tokens/J figure")
    # measured before estimated, then our own rows before imported ones
    return max(rows, key=lambda r: (r.get("energy_method") != "estimate",
                                    r.get("source", "joulebench") == "joulebench",
                                    float(r["output_tokens_per_j"])))


TORNADO_METRICS = ("allin_cost_rmb_per_mtok", "revenue_rmb_per_kwh", "margin_rmb_per_kwh")


def tornado(row: dict, scenario: Scenario | str, metric: str = "allin_cost_rmb_per_mtok",
            price_rmb_per_mtok: float | None = None):
    """Each parameter at its low and high, the rest at base: the metric's swing.

    Parameters: the scenario's, each energy-mix source's price (where there is a mix),
    the token price of the row's class (unless ``price_rmb_per_mtok`` fixes it) and the
    server price of its device.

    Returns:
        A DataFrame (parameter, low, high, metric_at_low, metric_at_high, swing),
        largest swing first.
    """
    import pandas as pd

    if metric not in TORNADO_METRICS:
        raise BenchError(f"metric must be one of {', '.join(TORNADO_METRICS)}")
    sc = load(scenario) if isinstance(scenario, str) else scenario
    price = price_rmb_per_mtok
    if price is None:
        pricing.check_priced([row.get("model", "")], sc)
    else:
        price = check_value("price_rmb_per_mtok", price)

    def at(s, token_price=None, capex=None):
        return _row_value(row, s, price if token_price is None else token_price,
                          capex).get(metric)

    base = at(sc)
    out = []
    for name, p in sc.params.items():
        if name == "elec_rmb_per_kwh" and sc.mix:
            continue  # the blend prices the energy: its sources are varied below
        out.append((name, p.low, p.high,
                    *[at(sc.with_values(**{name: v})) for v in (p.low, p.high)]))
    for i, m in enumerate(sc.mix):
        lo, hi = m["low_rmb_per_kwh"], m["high_rmb_per_kwh"]
        out.append((f"mix {m['source']} rmb_per_kwh", lo, hi,
                    *[at(sc.with_mix_price(i, v)) for v in (lo, hi)]))
    if price is None:
        cls = pricing.price_class_of(row.get("model", ""), sc)
        pp = sc.prices[cls]
        out.append((f"price_rmb_per_mtok ({cls})", pp.low, pp.high,
                    *[at(sc, token_price=v) for v in (pp.low, pp.high)]))
    cap = next((p for k, p in sc.capex_rmb_per_gpu.items()
                if k.upper() in str(row.get("device_name", "")).upper()), None)
    if cap is not None:
        out.append(("capex_rmb_per_gpu", cap.low, cap.high,
                    *[at(sc, capex=v) for v in (cap.low, cap.high)]))
    df = pd.DataFrame(out, columns=["parameter", "low", "high", "metric_at_low",
                                    "metric_at_high"])
    df["swing"] = (df["metric_at_high"] - df["metric_at_low"]).abs()
    df.attrs.update(metric=metric, base=base)
    return df.sort_values("swing", ascending=False, na_position="last").reset_index(drop=True)


def solar_curve(row: dict, scenario: Scenario | str, points: int = 6,
                price_rmb_per_mtok: float | None = None):
    """Cost per million tokens as solar cells gain efficiency points (LCOE falls per point).

    LCOE(+k points) = LCOE x (1 - cut)^k, applied to the scenario's solar-priced energy.
    """
    import pandas as pd

    sc = load(scenario) if isinstance(scenario, str) else scenario
    if not sc.solar_efficiency:
        raise BenchError(f"scenario {sc.name} has no solar_efficiency section")
    cut = sc.solar_efficiency["lcoe_cut_per_point"].value
    eff0 = sc.solar_efficiency["base_cell_efficiency_pct"]
    lcoe0 = sc.value("elec_rmb_per_kwh")
    out = []
    for k in range(points):
        lcoe = lcoe0 * (1 - cut) ** k
        # all energy at the solar LCOE (no firming mix): the curve isolates the cell effect
        v = _row_value(row, replace(sc.with_values(elec_rmb_per_kwh=lcoe), mix=[], notes=()),
                       price_rmb_per_mtok, None)
        out.append({"cell_efficiency_pct": eff0 + k, "lcoe_rmb_per_kwh": lcoe,
                    "elec_cost_rmb_per_mtok": v.get("elec_cost_rmb_per_mtok"),
                    "allin_cost_rmb_per_mtok": v.get("allin_cost_rmb_per_mtok")})
    return pd.DataFrame(out)


def check_claim(table=None, prices_rmb_per_mtok=(0.5, 1, 2, 4, 8, 16, 22),
                scenario: Scenario | str = "china-grid-reference"):
    """The claim that a 0.5 RMB grid kWh sells for about 10 RMB as tokens (20x).

    Returns:
        (needed, rows): for each token price the tokens/J that give the claimed revenue at
        the meter and at the GPU; and, for each table row, its revenue and multiple at its
        class price under the scenario (None without a table).
    """
    import pandas as pd

    sc = load(scenario) if isinstance(scenario, str) else scenario
    target = sc.claim["tokens_rmb_per_kwh"]
    factor, basis = F.meter_factor("gpu", sc.value("pue"), sc.value("gpu_share_of_it_power"))
    needed = pd.DataFrame([{
        "price_rmb_per_mtok": p,
        "tokens_per_j_at_meter": F.tokens_per_j_for_revenue(target, p),
        "tokens_per_j_at_gpu": F.tokens_per_j_for_revenue(target, p) * factor,
    } for p in prices_rmb_per_mtok])
    needed.attrs.update(target_rmb_per_kwh=target, grid_rmb_per_kwh=sc.claim["grid_rmb_per_kwh"],
                        multiple=target / sc.claim["grid_rmb_per_kwh"], basis=basis,
                        source=sc.claim.get("source", ""))
    rows = None
    if table is not None:
        v = value_per_kwh(table, sc)
        rows = v[["source", "device_name", "model", "batch_size", "energy_method", "estimate",
                  "tokens_per_j", "price_rmb_per_mtok", "revenue_rmb_per_kwh",
                  "multiple_over_elec", "best_batch"]].copy()
        rows["meets_claim"] = pd.to_numeric(rows["revenue_rmb_per_kwh"],
                                            errors="coerce") >= target
    return needed, rows
