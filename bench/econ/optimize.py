"""The operating point electricity prices call for: the (power limit, batch) per device and model.

Per scenario, per (device, model, lengths) of the table: the row maximizing the margin per
GPU-hour, and the row maximizing tokens per kWh, side by side, each with its revenue per
kWh and all-in cost per million tokens. Every figure comes from ``value_per_kwh`` (the
existing formulas); the margin per GPU-hour is its margin per million tokens times the
tokens a GPU makes in an hour:

    margin_rmb_per_gpu_hour = (price - all-in cost per Mtok) x tokens/s x 3600 / 1e6 / GPUs

Across scenarios, ``margin_optimum_moves`` marks the groups whose margin optimum is not
the first scenario's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from bench.econ import _finite, load, value_per_kwh
from bench.econ.scenario import Scenario
from bench.errors import BenchError

GROUP = ("device_name", "num_devices", "model", "input_len", "output_len")

# (column, meaning) of operating_points' DataFrame, in order.
COLUMNS = (
    ("scenario", "the scenario's name"),
    ("elec_rmb_per_kwh", "its electricity price (the blend where it has a mix)"),
    *((g, "the group") for g in GROUP),
    ("margin_power_limit_w", "the power limit of the best margin per GPU-hour, W (null: the "
     "GPU's own limit, not set by the run)"),
    ("margin_batch_size", "its batch size"),
    ("margin_rmb_per_gpu_hour", "its margin per GPU-hour, RMB"),
    ("margin_revenue_rmb_per_kwh", "its revenue per kWh at the meter, RMB"),
    ("margin_allin_cost_rmb_per_mtok", "its all-in cost per million output tokens, RMB"),
    ("margin_tokens_per_kwh", "its output tokens per kWh at the meter"),
    ("efficiency_power_limit_w", "the power limit of the most tokens per kWh, W"),
    ("efficiency_batch_size", "its batch size"),
    ("efficiency_tokens_per_kwh", "its output tokens per kWh at the meter"),
    ("efficiency_revenue_rmb_per_kwh", "its revenue per kWh at the meter, RMB"),
    ("efficiency_allin_cost_rmb_per_mtok", "its all-in cost per million output tokens, RMB"),
    ("efficiency_margin_rmb_per_gpu_hour", "its margin per GPU-hour, RMB"),
    ("margin_optimum_moves", "True where the margin optimum is not the first scenario's"),
)
COLUMN_NAMES = tuple(c for c, _ in COLUMNS)


def margin_rmb_per_gpu_hour(price_rmb_per_mtok: float | None, allin_rmb_per_mtok: float | None,
                            tokens_per_s: float | None, num_devices: float = 1.0
                            ) -> float | None:
    """Margin per GPU-hour: (price - all-in cost per Mtok) x Mtok a GPU makes per hour."""
    if price_rmb_per_mtok is None or allin_rmb_per_mtok is None or not tokens_per_s:
        return None
    return (price_rmb_per_mtok - allin_rmb_per_mtok) * tokens_per_s * 3600.0 / 1e6 / \
        num_devices


def _best(rows: list[dict], key: str) -> dict | None:
    have = [r for r in rows if r.get(key) is not None]
    return max(have, key=lambda r: r[key]) if have else None


def operating_points(table, scenarios: Sequence[Scenario | str],
                     price_rmb_per_mtok: float | None = None,
                     capex_rmb_per_gpu: float | None = None):
    """The margin optimum and the efficiency optimum per scenario and group.

    Args:
        table: the empirical table (DataFrame or rows) with its ``power_limit_w`` column.
        scenarios: scenarios (or names/paths), the first one the reference.
        price_rmb_per_mtok, capex_rmb_per_gpu: as :func:`bench.econ.value_per_kwh`.

    Returns:
        A DataFrame with :data:`COLUMN_NAMES`, one row per scenario and group.

    Raises:
        BenchError: no scenario, or no ``ok`` row with a tokens/J figure.
    """
    import pandas as pd

    if not scenarios:
        raise BenchError("give at least one --scenario")
    rows = table.to_dict("records") if hasattr(table, "to_dict") else list(table)
    rows = [r for r in rows if r.get("status", "ok") == "ok"]
    out: list[dict] = []
    first: dict[tuple, tuple | None] = {}
    for n, s in enumerate(scenarios):
        sc = load(s) if isinstance(s, str) else s
        v = value_per_kwh(rows, sc, price_rmb_per_mtok=price_rmb_per_mtok,
                          capex_rmb_per_gpu=capex_rmb_per_gpu).to_dict("records")
        groups: dict[tuple, list[dict]] = {}
        for r, val in zip(rows, v, strict=True):
            if _finite(val.get("tokens_per_kwh")) is None:
                continue
            val = {k: (None if isinstance(x, float) and math.isnan(x) else x)
                   for k, x in val.items()}
            val["power_limit_w"] = _finite(r.get("power_limit_w"))
            val["margin_rmb_per_gpu_hour"] = margin_rmb_per_gpu_hour(
                _finite(val.get("price_rmb_per_mtok")),
                _finite(val.get("allin_cost_rmb_per_mtok")),
                _finite(r.get("output_tokens_per_s")), _finite(val.get("num_devices")) or 1.0)
            groups.setdefault(tuple(val.get(g) for g in GROUP), []).append(val)
        for key, grp in groups.items():
            m = _best(grp, "margin_rmb_per_gpu_hour")
            e = _best(grp, "tokens_per_kwh")
            assert e is not None  # every row kept has tokens per kWh
            point = (m["power_limit_w"], m["batch_size"]) if m else None
            if n == 0:
                first[key] = point
            out.append({
                "scenario": sc.name, "elec_rmb_per_kwh": e["elec_rmb_per_kwh"],
                **dict(zip(GROUP, key, strict=True)),
                "margin_power_limit_w": m["power_limit_w"] if m else None,
                "margin_batch_size": m["batch_size"] if m else None,
                "margin_rmb_per_gpu_hour": m["margin_rmb_per_gpu_hour"] if m else None,
                "margin_revenue_rmb_per_kwh": m["revenue_rmb_per_kwh"] if m else None,
                "margin_allin_cost_rmb_per_mtok": m["allin_cost_rmb_per_mtok"] if m else None,
                "margin_tokens_per_kwh": m["tokens_per_kwh"] if m else None,
                "efficiency_power_limit_w": e["power_limit_w"],
                "efficiency_batch_size": e["batch_size"],
                "efficiency_tokens_per_kwh": e["tokens_per_kwh"],
                "efficiency_revenue_rmb_per_kwh": e["revenue_rmb_per_kwh"],
                "efficiency_allin_cost_rmb_per_mtok": e["allin_cost_rmb_per_mtok"],
                "efficiency_margin_rmb_per_gpu_hour": e["margin_rmb_per_gpu_hour"],
                "margin_optimum_moves": n > 0 and point != first.get(key),
            })
    if not out:
        raise BenchError("no row with a tokens/J figure to optimize over")
    return pd.DataFrame(out, columns=list(COLUMN_NAMES))


def describe(points: Any) -> list[str]:
    """Per scenario and group: both optima side by side, each with its power limit, batch,
    revenue per kWh and all-in cost per million tokens (the CLI's table format)."""
    def num(x) -> float | None:
        return _finite(x)

    def at(prefix: str, r: dict) -> str:
        w, b = num(r[f"{prefix}_power_limit_w"]), num(r[f"{prefix}_batch_size"])
        lim = "the GPU's own limit" if w is None else f"{w:g} W"
        rev, cost = num(r[f"{prefix}_revenue_rmb_per_kwh"]), \
            num(r[f"{prefix}_allin_cost_rmb_per_mtok"])
        money = (f"{rev:.4g} RMB/kWh" if rev is not None else "RMB/kWh unknown") + ", " + \
            (f"all-in {cost:.4g} RMB/Mtok" if cost is not None else "all-in cost unknown")
        return f"{lim}, batch {int(b) if b is not None else '?'} ({money})"

    lines = []
    for r in points.to_dict("records"):
        head = (f"{r['scenario']} ({r['elec_rmb_per_kwh']:.4g} RMB/kWh): {r['device_name']} "
                f"{r['model']}")
        mg = num(r["margin_rmb_per_gpu_hour"])
        margin = (f"best margin {mg:.4g} RMB/GPU-hour at {at('margin', r)}" if mg is not None
                  else "margin unknown (no server price for this device)")
        eff = (f"most tokens/kWh {r['efficiency_tokens_per_kwh']:.4g} at "
               f"{at('efficiency', r)}")
        moved = " [the margin optimum moved]" if r["margin_optimum_moves"] else ""
        lines.append(f"{head}: {margin} | {eff}{moved}")
    return lines
