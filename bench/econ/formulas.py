"""Pure economics formulas, in SI and RMB; every function states its units.

1 kWh = 3.6e6 J, so revenue in RMB per kWh = 3.6 x tokens/J x price in RMB per
million tokens.
"""

from __future__ import annotations

J_PER_KWH = 3.6e6
HOURS_PER_YEAR = 8760.0


def tokens_per_kwh(tokens_per_j: float) -> float:
    """Tokens per kWh from tokens per joule."""
    return tokens_per_j * J_PER_KWH


def meter_factor(scope: str, pue: float, gpu_share_of_it_power: float) -> tuple[float, str]:
    """Utility-meter energy per joule measured at ``scope``, and how it was made.

    gpu: IT energy = GPU energy / GPU share of IT power; meter = IT x PUE.
    cpu, node, system: the measured energy is taken as IT energy; meter = IT x PUE.
    """
    if not pue >= 1:
        raise ValueError("PUE must be 1 or more")
    if scope == "gpu":
        if not 0 < gpu_share_of_it_power <= 1:
            raise ValueError("the GPU share of IT power must be in (0, 1]")
        return pue / gpu_share_of_it_power, (
            f"GPU energy / {gpu_share_of_it_power:g} GPU share of IT power x PUE {pue:g}")
    return pue, f"{scope} energy taken as IT energy x PUE {pue:g}"


def revenue_rmb_per_kwh(tokens_per_j: float, price_rmb_per_mtok: float) -> float:
    """RMB earned per kWh turned into tokens: 3.6 x tokens/J x RMB per million tokens."""
    return tokens_per_kwh(tokens_per_j) * price_rmb_per_mtok / 1e6


def energy_cost_rmb_per_mtok(tokens_per_j: float, elec_rmb_per_kwh: float) -> float:
    """Electricity cost of a million tokens in RMB."""
    return elec_rmb_per_kwh * 1e6 / tokens_per_kwh(tokens_per_j)


def capital_recovery_factor(rate: float, years: float) -> float:
    """Annual payment per unit of capital over ``years`` at ``rate`` (1/years at rate 0)."""
    if years <= 0:
        raise ValueError("years must be positive")
    if rate == 0:
        return 1.0 / years
    g = (1 + rate) ** years
    return rate * g / (g - 1)


def capex_rmb_per_hour(capex_rmb: float, years: float, rate: float,
                       utilization: float) -> float:
    """Capital cost per serving hour: annuity over the life, spread over the hours used."""
    if not 0 < utilization <= 1:
        raise ValueError("utilization must be in (0, 1]")
    return capex_rmb * capital_recovery_factor(rate, years) / (HOURS_PER_YEAR * utilization)


def capex_rmb_per_mtok(capex_rmb_per_hour_: float, tokens_per_s: float) -> float:
    """Capital cost of a million tokens at ``tokens_per_s`` while serving."""
    return capex_rmb_per_hour_ / (tokens_per_s * 3600.0) * 1e6


def tokens_per_j_for_revenue(revenue_rmb_per_kwh_: float, price_rmb_per_mtok: float) -> float:
    """The tokens/J at which a kWh earns ``revenue_rmb_per_kwh_`` at a token price."""
    return revenue_rmb_per_kwh_ * 1e6 / (J_PER_KWH * price_rmb_per_mtok)


def blended_price_rmb_per_kwh(mix: list[dict]) -> float:
    """Share-weighted cost of a mix; storage costs its source / round trip + an adder.

    Each entry: ``share``, ``rmb_per_kwh`` (already converted), optional
    ``round_trip_efficiency`` and ``adder_rmb_per_kwh``.
    """
    total = sum(m["share"] for m in mix)
    if abs(total - 1) > 1e-6:
        raise ValueError(f"mix shares add up to {total:g}, not 1")
    price = 0.0
    for m in mix:
        unit = m["rmb_per_kwh"] / m.get("round_trip_efficiency", 1.0)
        price += m["share"] * (unit + m.get("adder_rmb_per_kwh", 0.0))
    return price
