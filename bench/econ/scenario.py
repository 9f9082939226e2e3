"""Scenario files (TOML): parameters with their range and source; loading and checking."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path

from bench.errors import BenchError

PARAMS = ("elec_rmb_per_kwh", "pue", "gpu_share_of_it_power", "depreciation_years",
          "cost_of_capital", "utilization")


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

    def value(self, name: str) -> float:
        return self.params[name].value

    def with_values(self, **values: float) -> Scenario:
        """A copy with some parameters' values replaced (the ranges stay)."""
        params = dict(self.params)
        for k, v in values.items():
            if k not in params:
                raise BenchError(f"unknown parameter {k!r}")
            params[k] = replace(params[k], value=float(v))
        return replace(self, params=params)


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
    if fx_usd_cny is not None:
        if not fx_usd_cny > 0:
            raise BenchError("the exchange rate must be positive")
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
    if params["pue"].low < 1:
        raise BenchError(f"scenario {origin}: PUE must be 1 or more")
    for key in ("gpu_share_of_it_power", "utilization"):
        if not 0 < params[key].low <= params[key].high <= 1:
            raise BenchError(f"scenario {origin}: {key} must be in (0, 1]")
    if params["depreciation_years"].low <= 0 or params["cost_of_capital"].low < 0:
        raise BenchError(f"scenario {origin}: life must be positive, cost of capital >= 0")
    prices = {}
    for cls, p in base["prices"][market].items():
        if "rmb_per_mtok" in p:
            prices[cls] = _param(p, "defaults", f"prices.{cls}", 1.0, "rmb_per_mtok")
        else:
            prices[cls] = _param(p, "defaults", f"prices.{cls}", fx.value, "usd_per_mtok")
    capex = {k: _param(v, "defaults", f"capex.{k}", fx.value)
             for k, v in base["capex_usd_per_gpu"].items()}
    mix = []
    for i, m in enumerate(d.get("mix", [])):
        if not isinstance(m, dict) or "share" not in m:
            raise BenchError(f"scenario {origin}: mix entry {i} needs a share")
        if "rmb_per_kwh" in m:
            rmb = _num(m["rmb_per_kwh"], origin, f"mix[{i}].rmb_per_kwh")
        elif "usd_per_kwh" in m:
            rmb = _num(m["usd_per_kwh"], origin, f"mix[{i}].usd_per_kwh") * fx.value
        else:
            raise BenchError(f"scenario {origin}: mix entry {i} needs rmb_per_kwh or "
                             "usd_per_kwh")
        rte = _num(m.get("round_trip_efficiency", 1.0), origin, f"mix[{i}].round_trip")
        if not 0 < rte <= 1:
            raise BenchError(f"scenario {origin}: mix entry {i}: round trip must be in (0, 1]")
        mix.append({"source": str(m.get("source", f"source{i}")),
                    "share": _num(m["share"], origin, f"mix[{i}].share"),
                    "rmb_per_kwh": rmb, "round_trip_efficiency": rte,
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
                    follow_supply=follow, solar_efficiency=solar)
