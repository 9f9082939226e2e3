"""Scenario files (TOML): parameters with their range and source; loading and checking."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from bench.errors import BenchError

PARAMS = ("elec_rmb_per_kwh", "pue", "gpu_share_of_it_power", "depreciation_years",
          "cost_of_capital", "utilization")


def check_value(name: str, v) -> float:
    """``v`` as a float if it is a valid value of parameter ``name``.

    Every range check of the economics lives here: scenario files, overrides from the
    CLI and from Python all come through it.

    Raises:
        BenchError: not a finite number, or out of the parameter's range (one line).
    """
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise BenchError(f"{name} must be a number, got {v!r}")
    x = float(v)
    if x != x or x in (float("inf"), float("-inf")):
        raise BenchError(f"{name} must be finite, got {v!r}")
    ok, rule = {
        "elec_rmb_per_kwh": (x >= 0, "0 or more"),
        "pue": (x >= 1, "1 or more"),
        "gpu_share_of_it_power": (0 < x <= 1, "in (0, 1]"),
        "utilization": (0 < x <= 1, "in (0, 1]"),
        "depreciation_years": (x > 0, "positive"),
        "cost_of_capital": (x >= 0, "0 or more"),
        "fx_usd_cny": (x > 0, "positive"),
        "price_rmb_per_mtok": (x >= 0, "0 or more"),
        "capex_rmb_per_gpu": (x >= 0, "0 or more"),
    }.get(name, (True, ""))
    if not ok:
        raise BenchError(f"{name} must be {rule}, got {x:g}")
    return x


@dataclass(frozen=True)
class Param:
    """A parameter's value, its low and high for sensitivity, and where it comes from."""

    value: float
    low: float
    high: float
    source: str = ""


@dataclass(frozen=True)
class Scenario:
    """Everything but the measurement that turns tokens/J into money."""

    name: str
    description: str
    market: str  # cn | us: which price list applies
    params: dict[str, Param]
    fx_usd_cny: Param
    prices: dict[str, Param]  # model class -> RMB per million output tokens
    capex_rmb_per_gpu: dict[str, Param]  # device-name key -> RMB
    claim: dict
    mix: list[dict] = field(default_factory=list)
    follow_supply: dict | None = None
    solar_efficiency: dict | None = None
    # model name (lower case) -> {"total_b", "active_b", "source"}: sizes the name hides
    model_params: dict[str, dict] = field(default_factory=dict)
    # {"dense": [(max_total_b or None, class)], "moe": [...], "source": str}
    price_classes: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()  # what an override changed, for the user to read

    def value(self, name: str) -> float:
        return self.params[name].value

    def with_values(self, **values: float) -> Scenario:
        """A copy with some parameters' values replaced (the ranges stay), each checked.

        On a scenario with an energy mix, ``elec_rmb_per_kwh`` replaces the blended
        price: the mix is dropped and a note says so (``notes``).

        Raises:
            BenchError: an unknown parameter or a value out of range (one line).
        """
        params = dict(self.params)
        notes = list(self.notes)
        mix = self.mix
        for k, v in values.items():
            if k not in params:
                raise BenchError(f"unknown parameter {k!r}; known: {', '.join(PARAMS)}")
            params[k] = replace(params[k], value=check_value(k, v))
            if k == "elec_rmb_per_kwh" and mix:
                from bench.econ.formulas import blended_price_rmb_per_kwh

                notes.append(f"scenario {self.name}: elec_rmb_per_kwh {float(v):g} replaces "
                             f"the blended price of its energy mix "
                             f"({blended_price_rmb_per_kwh(mix):.4g} RMB/kWh)")
                mix = []
        return replace(self, params=params, mix=mix, notes=tuple(notes))

    def with_mix_price(self, index: int, rmb_per_kwh: float) -> Scenario:
        """A copy with one energy-mix source's price replaced (for sensitivity)."""
        mix = [dict(m) for m in self.mix]
        mix[index]["rmb_per_kwh"] = check_value("elec_rmb_per_kwh", rmb_per_kwh)
        return replace(self, mix=mix)


def _load_toml(text: str, origin: str) -> dict:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"scenario {origin}: not valid TOML ({exc})") from None


def _num(x, origin: str, key: str) -> float:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        raise BenchError(f"scenario {origin}: {key} must be a number")
    v = float(x)
    if v != v or v in (float("inf"), float("-inf")):
        raise BenchError(f"scenario {origin}: {key} must be finite")
    return v


def _param(d, origin: str, key: str, scale: float = 1.0, value_key: str = "value") -> Param:
    if isinstance(d, (int, float)) and not isinstance(d, bool):
        v = _num(d, origin, key) * scale
        return Param(v, v, v, "")
    if not isinstance(d, dict) or value_key not in d:
        raise BenchError(f"scenario {origin}: {key} needs a {value_key}")
    v = _num(d[value_key], origin, key) * scale
    lo = _num(d.get("low", d[value_key]), origin, key + ".low") * scale
    hi = _num(d.get("high", d[value_key]), origin, key + ".high") * scale
    if not lo <= v <= hi:
        raise BenchError(f"scenario {origin}: {key} needs low <= value <= high")
    return Param(v, lo, hi, str(d.get("source", "")))


def defaults() -> dict:
    """The package's shared defaults (prices, capex, fx, the claim)."""
    text = (resources.files("bench.econ") / "defaults.toml").read_text(encoding="utf-8")
    return _load_toml(text, "defaults")


def builtin_names() -> list[str]:
    """Names of the scenarios shipped with the package."""
    d = resources.files("bench.econ") / "scenarios"
    return sorted(p.name[:-5] for p in d.iterdir() if p.name.endswith(".toml"))


def load(name_or_path: str, fx_usd_cny: float | None = None) -> Scenario:
    """A built-in scenario by name, or a scenario file by path.

    Raises:
        BenchError: unknown name, unreadable or malformed file (one line).
    """
    if name_or_path.endswith(".toml") or "/" in name_or_path:
        try:
            text = Path(name_or_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise BenchError(f"cannot read scenario {name_or_path}: {exc}") from None
    elif name_or_path in builtin_names():
        text = (resources.files("bench.econ") / "scenarios" / f"{name_or_path}.toml"
                ).read_text(encoding="utf-8")
    else:
        raise BenchError(f"unknown scenario {name_or_path!r}; known: "
                         f"{', '.join(builtin_names())}")
    return parse(_load_toml(text, name_or_path), name_or_path, fx_usd_cny)


def parse(d: dict, origin: str, fx_usd_cny: float | None = None) -> Scenario:
    """Check and convert a scenario mapping (RMB throughout, USD converted at fx).

    ``fx_usd_cny`` overrides the exchange rate used for every conversion.
    """
    base = defaults()
    fx = _param(d.get("fx_usd_cny", base["fx_usd_cny"]), origin, "fx_usd_cny")
    try:
        check_value("fx_usd_cny", fx.low)
    except BenchError as exc:
        raise BenchError(f"scenario {origin}: {exc}") from None
    if fx_usd_cny is not None:
        fx_usd_cny = check_value("fx_usd_cny", fx_usd_cny)
        fx = replace(fx, value=float(fx_usd_cny), low=min(fx.low, fx_usd_cny),
                     high=max(fx.high, fx_usd_cny))
    market = d.get("market", "cn")
    if market not in base["prices"]:
        raise BenchError(f"scenario {origin}: market must be one of {sorted(base['prices'])}")
    params = {}
    if "elec_rmb_per_kwh" in d:
        params["elec_rmb_per_kwh"] = _param(d["elec_rmb_per_kwh"], origin, "elec_rmb_per_kwh")
    elif "elec_usd_per_kwh" in d:
        params["elec_rmb_per_kwh"] = _param(d["elec_usd_per_kwh"], origin, "elec_usd_per_kwh",
                                            fx.value)
    else:
        raise BenchError(f"scenario {origin}: needs elec_rmb_per_kwh or elec_usd_per_kwh")
    for key in PARAMS[1:]:
        if key not in d:
            raise BenchError(f"scenario {origin}: missing {key}")
        params[key] = _param(d[key], origin, key)
    for key, p in params.items():
        for v in (p.low, p.value, p.high):
            try:
                check_value(key, v)
            except BenchError as exc:
                raise BenchError(f"scenario {origin}: {exc}") from None
    prices = {}
    own_prices = d.get("prices", {})
    if not isinstance(own_prices, dict):
        raise BenchError(f"scenario {origin}: [prices] must be a table of classes")
    for cls, p in {**base["prices"][market], **own_prices}.items():
        where = origin if cls in own_prices else "defaults"
        if isinstance(p, dict) and "rmb_per_mtok" in p:
            prices[cls] = _param(p, where, f"prices.{cls}", 1.0, "rmb_per_mtok")
        else:
            prices[cls] = _param(p, where, f"prices.{cls}", fx.value, "usd_per_mtok")
        if prices[cls].low < 0:
            raise BenchError(f"scenario {where}: prices.{cls} must be 0 or more")
    model_params = _model_params(base.get("model_params", {}), "defaults")
    model_params.update(_model_params(d.get("model_params", {}), origin))
    classes = _price_classes(d.get("price_classes", base["price_classes"]), origin, prices)
    capex = {k: _param(v, "defaults", f"capex.{k}", fx.value)
             for k, v in base["capex_usd_per_gpu"].items()}
    mix: list[dict] = []
    for i, m in enumerate(d.get("mix", [])):
        if not isinstance(m, dict) or "share" not in m:
            raise BenchError(f"scenario {origin}: mix entry {i} needs a share")
        # low and high (for sensitivity) are in the unit of the price; absent: no range
        unit = next((u for u in ("rmb_per_kwh", "usd_per_kwh") if u in m), None)
        if unit is None:
            raise BenchError(f"scenario {origin}: mix entry {i} needs rmb_per_kwh or "
                             "usd_per_kwh")
        scale = 1.0 if unit == "rmb_per_kwh" else fx.value
        rmb = _num(m[unit], origin, f"mix[{i}].{unit}") * scale
        low = _num(m.get("low", m[unit]), origin, f"mix[{i}].low") * scale
        high = _num(m.get("high", m[unit]), origin, f"mix[{i}].high") * scale
        if not 0 <= low <= rmb <= high:
            raise BenchError(f"scenario {origin}: mix entry {i} needs 0 <= low <= price <= high")
        rte = _num(m.get("round_trip_efficiency", 1.0), origin, f"mix[{i}].round_trip")
        if not 0 < rte <= 1:
            raise BenchError(f"scenario {origin}: mix entry {i}: round trip must be in (0, 1]")
        if not 0 <= _num(m["share"], origin, f"mix[{i}].share") <= 1:
            raise BenchError(f"scenario {origin}: mix entry {i}: share must be in [0, 1]")
        mix.append({"source": str(m.get("source", f"source{i}")),
                    "share": _num(m["share"], origin, f"mix[{i}].share"),
                    "rmb_per_kwh": rmb, "low_rmb_per_kwh": low, "high_rmb_per_kwh": high,
                    "round_trip_efficiency": rte,
                    "adder_rmb_per_kwh": _num(m.get("adder_rmb_per_kwh", 0.0), origin,
                                              f"mix[{i}].adder"),
                    "note": str(m.get("note", ""))})
    if mix and abs(sum(m["share"] for m in mix) - 1) > 1e-6:
        raise BenchError(f"scenario {origin}: mix shares must add up to 1")
    follow = None
    if "follow_supply" in d:
        f = d["follow_supply"]
        cf = _num(f.get("capacity_factor"), origin, "follow_supply.capacity_factor")
        if not 0 < cf <= 1:
            raise BenchError(f"scenario {origin}: capacity factor must be in (0, 1]")
        price = (_num(f["rmb_per_kwh"], origin, "follow_supply.rmb_per_kwh")
                 if "rmb_per_kwh" in f else
                 _num(f.get("usd_per_kwh"), origin, "follow_supply.usd_per_kwh") * fx.value)
        follow = {"capacity_factor": cf, "rmb_per_kwh": price, "note": str(f.get("note", ""))}
    solar = None
    if "solar_efficiency" in d:
        s = d["solar_efficiency"]
        solar = {"base_cell_efficiency_pct": _num(s.get("base_cell_efficiency_pct"), origin,
                                                  "solar_efficiency.base"),
                 "lcoe_cut_per_point": _param(s.get("lcoe_cut_per_point"), origin,
                                              "solar_efficiency.lcoe_cut_per_point")}
    return Scenario(name=str(d.get("name", origin)), description=str(d.get("description", "")),
                    market=market, params=params, fx_usd_cny=fx, prices=prices,
                    capex_rmb_per_gpu=capex, claim=dict(base["claim"]), mix=mix,
                    follow_supply=follow, solar_efficiency=solar, model_params=model_params,
                    price_classes=classes)


def _model_params(d, origin: str) -> dict[str, dict]:
    """``[model_params]``: model name -> total and active parameters in billions."""
    if not isinstance(d, dict):
        raise BenchError(f"scenario {origin}: [model_params] must be a table of models")
    out = {}
    for name, e in d.items():
        if not isinstance(e, dict) or "total_b" not in e:
            raise BenchError(f"scenario {origin}: model_params.{name} needs total_b")
        total = _num(e["total_b"], origin, f"model_params.{name}.total_b")
        active = _num(e.get("active_b", total), origin, f"model_params.{name}.active_b")
        if not 0 < active <= total:
            raise BenchError(f"scenario {origin}: model_params.{name} needs "
                             "0 < active_b <= total_b")
        out[str(name).lower()] = {"total_b": total, "active_b": active,
                                  "source": str(e.get("source", ""))}
    return out


def _price_classes(d, origin: str, prices: dict) -> dict:
    """``[price_classes]``: the class of a dense and of an MoE model by total size."""
    if not isinstance(d, dict):
        raise BenchError(f"scenario {origin}: [price_classes] must be a table")
    out: dict[str, object] = {"source": str(d.get("source", ""))}
    for kind in ("dense", "moe"):
        rules = d.get(kind)
        if not isinstance(rules, list) or not rules:
            raise BenchError(f"scenario {origin}: price_classes.{kind} needs a list of rules")
        parsed = []
        for i, r in enumerate(rules):
            if not isinstance(r, dict) or r.get("class") not in prices:
                raise BenchError(f"scenario {origin}: price_classes.{kind}[{i}] needs a class "
                                 f"with a price ({', '.join(sorted(prices))})")
            top = r.get("max_total_b")
            parsed.append((None if top is None else
                           _num(top, origin, f"price_classes.{kind}[{i}].max_total_b"),
                           r["class"]))
        if parsed[-1][0] is not None:
            raise BenchError(f"scenario {origin}: the last price_classes.{kind} rule must "
                             "have no max_total_b (it takes every larger model)")
        out[kind] = parsed
    return out
