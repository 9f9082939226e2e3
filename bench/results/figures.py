"""Every figure of a cell and of a run, derived once from raw windows (pure functions).

The runner builds each cell's record with :func:`cell_record`, and ``bench validate``
rebuilds it from the document's raw windows with the same function, so a tampered figure
never recomputes. (Independent known-answer tests check the formulas themselves.)

A cell's raw inputs (:class:`CellRaw`): its repeats (windows of whole generate calls with
their energy per scope, tokens and call marks), the prefill-only window, the device's idle
power, the sampled GPU power trace, the device and the model's architecture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.kernels import stats
from bench.sweep import Cell

# The interval's coverage asked for; the document records the coverage reached.
CI_LEVEL_ASKED = 0.95

# Weakest first: a cell (or a scope) whose windows mix methods is labelled by the weakest.
METHOD_ORDER = ("estimate", "power_integration", "counter")

# Figures of one repeat, from its tokens, duration and primary-scope energy.
REPEAT_FIGURES = ("output_tokens_per_j", "total_tokens_per_j", "j_per_output_token",
                  "output_tokens_per_s", "mean_power_w")


def weakest_method(methods: Iterable[str | None]) -> str | None:
    """The weakest of the methods given (estimate < power_integration < counter), or None."""
    seen = set(methods)
    for m in METHOD_ORDER:
        if m in seen:
            return m
    return None


def window_per_device(readings: list[dict], scope: str) -> list[dict] | None:
    """Each device's own energy in one window of a multi-GPU cell, or None for one device.

    One entry per reading of ``scope`` (a GPU's NVML counter), in the readings' order:
    ``device`` (``gpu1``), ``index``, ``energy_j`` and ``method``; the window's energy of
    the scope is their sum (``bench validate`` checks both against the readings).
    """
    rds = [rd for rd in readings if rd.get("scope") == scope]
    if scope != "gpu" or len(rds) < 2:
        return None
    return [{"device": rd.get("device"), "index": _index_of(rd.get("device")),
             "energy_j": rd.get("energy_j"), "method": rd.get("method")} for rd in rds]


def _index_of(label: object) -> int | None:
    s = str(label)
    return int(s[3:]) if s.startswith("gpu") and s[3:].isdigit() else None


def per_device_figures(repeats: list[dict], scope: str, members: list) -> list[dict] | None:
    """A multi-GPU cell's figures per GPU over its repeats, or None for one device.

    Per GPU (``members``: the cell's devices, index order): its uuid and index, its
    energy summed over the repeats' readings (None where a repeat lacks it), its mean
    power over the repeats' duration and its weakest method.
    """
    if scope != "gpu" or len(members) < 2:
        return None
    dur = sum(r["duration_s"] for r in repeats)
    out = []
    for m in members:
        label = f"gpu{m.index}"
        es = [rd.get("energy_j") for r in repeats for rd in r.get("readings", [])
              if rd.get("scope") == scope and rd.get("device") == label]
        e = sum(es) if es and None not in es and len(es) == len(repeats) else None
        out.append({"device": label, "index": m.index, "uuid": m.uuid, "energy_j": e,
                    "mean_power_w": e / dur if e is not None and dur > 0 else None,
                    "method": weakest_method(
                        rd.get("method") for r in repeats for rd in r.get("readings", [])
                        if rd.get("scope") == scope and rd.get("device") == label)})
    return out


def primary_scope(kind: str) -> str:
    """The scope a cell's figures are in: gpu for GPU cells, cpu for CPU cells."""
    return "gpu" if kind == "cuda" else "cpu"


def _energy(window: dict, scope: str) -> float | None:
    return window["energy"].get(scope, {}).get("energy_j")


def repeat_figures(rep: dict, scope: str) -> dict[str, float | None]:
    """Per-repeat figures for ``scope``; energy figures are None where energy is missing."""
    e = _energy(rep, scope)
    out_tok, in_tok, dur = rep["output_tokens"], rep["input_tokens"], rep["duration_s"]
    ok = e is not None and e > 0
    return {
        "output_tokens_per_j": out_tok / e if ok else None,
        "total_tokens_per_j": (out_tok + in_tok) / e if ok else None,
        "j_per_output_token": e / out_tok if ok and out_tok else None,
        "output_tokens_per_s": out_tok / dur if dur > 0 else None,
        "mean_power_w": e / dur if e is not None and dur > 0 else None,
    }


def cell_figures(repeats: list[dict], scope: str, idle_power_w: float | None = None,
                 num_devices: int = 1) -> tuple[dict, dict]:
    """The cell's figures (median over repeats) and their spread.

    Returns:
        (figures, uncertainty): figures maps each of :data:`REPEAT_FIGURES` to the median
        of the per-repeat values (None if any repeat lacks it), plus summed energy,
        duration and tokens, the maximum sampled power, the incremental output
        tokens/J (energy minus idle power x duration) where the idle power is known, and
        the output tokens/J of the node's energy (its BMC) where every repeat has it;
        uncertainty gives min, max and the distribution-free interval of the median
        output tokens/J from order statistics (``kernels.stats.median_ci``) with its exact
        coverage ``ci_level`` (3 repeats: [min, max] at 75%; 6 are the fewest for 95%).
        GPU scope: also ``output_tokens_per_s_per_gpu``, the output tokens/s over the
        ``num_devices`` GPUs that ran the cell together.
    """
    per = [repeat_figures(r, scope) for r in repeats]
    figures: dict[str, Any] = {}
    for name in REPEAT_FIGURES:
        vals = [p[name] for p in per]
        figures[name] = stats.median(vals) if vals and None not in vals else None
    energies = [_energy(r, scope) for r in repeats]
    figures["energy_j"] = sum(energies) if energies and None not in energies else None
    figures["duration_s"] = sum(r["duration_s"] for r in repeats)
    figures["output_tokens"] = sum(r["output_tokens"] for r in repeats)
    figures["input_tokens"] = sum(r["input_tokens"] for r in repeats)
    maxes: list[float] = [m for r in repeats for rd in r.get("readings", [])
                          if rd.get("scope") == scope
                          and (m := (rd.get("stats") or {}).get("max_power_w")) is not None]
    figures["max_power_w"] = max(maxes) if maxes else None
    inc = None
    if idle_power_w is not None and None not in energies:
        vals = []
        for r, e in zip(repeats, energies, strict=True):
            extra = e - idle_power_w * r["duration_s"]
            vals.append(r["output_tokens"] / extra if extra > 0 else None)
        inc = stats.median(vals) if vals and None not in vals else None
    figures["incremental_output_tokens_per_j"] = inc
    if scope == "gpu":
        tps = figures["output_tokens_per_s"]
        figures["output_tokens_per_s_per_gpu"] = tps / num_devices if tps is not None else None
    node = [_energy(r, "node") for r in repeats] if scope != "node" else []
    figures["node_output_tokens_per_j"] = stats.median(
        [r["output_tokens"] / e for r, e in zip(repeats, node, strict=True)]) \
        if node and all(e is not None and e > 0 for e in node) else None
    unc_edge = _edge_bound_rel(repeats, scope)
    tpj = [v for p in per if (v := p["output_tokens_per_j"]) is not None]
    unc: dict[str, Any] = {"repeats": len(repeats), "output_tokens_per_j_min": None,
                           "output_tokens_per_j_max": None, "output_tokens_per_j_ci": None,
                           "ci_level": None}
    if tpj and len(tpj) == len(per):
        unc["output_tokens_per_j_min"] = min(tpj)
        unc["output_tokens_per_j_max"] = max(tpj)
        ci = stats.median_ci(tpj, CI_LEVEL_ASKED)
        if ci is not None and len(tpj) >= 2:
            unc["output_tokens_per_j_ci"] = [ci[0], ci[1]]
            unc["ci_level"] = ci[2]
    unc["edge_bound_rel_max"] = unc_edge
    unc["sure_bound_rel_max"] = _window_bound_rel(repeats, scope, _sure_bound_j)
    return figures, unc


def _edge_bound_rel(repeats: list[dict], scope: str) -> float | None:
    """The largest relative edge bound of the repeats' ``scope`` energy, or None.

    A window's edge bound is the sum of its readings' ``edge_bound_j`` (each an interval
    that holds the true energy, from the counter's refresh grid and the power sampled
    around the edges); relative to the window's energy. None where a reading has none.
    """
    return _window_bound_rel(repeats, scope,
                             lambda rd: (rd.get("stats") or {}).get("edge_bound_j"))


def _sure_bound_j(rd: dict) -> float | None:
    """A reading's sure edge bound: the farther end of its sure interval from its energy
    (``energy_sure_low_j``..``energy_sure_high_j``, the counter's reads alone), or None."""
    st = rd.get("stats") or {}
    low, high, e = st.get("energy_sure_low_j"), st.get("energy_sure_high_j"), rd.get("energy_j")
    if low is None or high is None or e is None:
        return None
    return max(e - low, high - e)


def _window_bound_rel(repeats: list[dict], scope: str,
                      bound: Callable[[dict], float | None]) -> float | None:
    """The largest over the repeats of the sum of ``bound(reading)`` over the window's
    ``scope`` readings, relative to the window's energy; None where a reading has none."""
    rels = []
    for r in repeats:
        e = _energy(r, scope)
        bounds: list[float | None] = [bound(rd) for rd in r.get("readings", [])
                                      if rd.get("scope") == scope]
        if not bounds or None in bounds or e is None or e <= 0:
            return None
        rels.append(sum(b for b in bounds if b is not None) / e)
    return max(rels) if rels else None


def _median(vals: Iterable[float | None]) -> float | None:
    import statistics

    kept = [v for v in vals if v is not None]
    return statistics.median(kept) if kept else None


def phases(repeats: list[dict], prefill: dict | None, scope: str, batch: int,
           input_len: int, output_len: int,
           trace: tuple[np.ndarray, np.ndarray] | None = None) -> dict:
    """Prefill and decode energy per token by both methods, and time to first token.

    Subtraction: E(prefill-only call) from the prefill window; decode = the full call's
    energy minus that, per output token after the first. Limits: assumes a prefill-only
    call costs what a full call's prefill costs (same shapes; the one extra token's
    sampling is counted as prefill).
    Timeline: sampled power integrated between each call's start, first-token mark and
    end (kernels.trace.segment_energy_j). Limits: needs a power trace (GPUs); the power
    reading's own averaging window (about 25 ms for field 186) smears phases shorter
    than that.

    Args:
        trace: (t_ns, power_w) of the device's valid power samples, or None.
    """
    calls = [c for r in repeats for c in r.get("calls_ns", [])]
    ttft = _median([(f - s) * 1e-9 for s, f, _ in calls])
    decode_tokens = batch * (output_len - 1)
    out: dict[str, Any] = {"ttft_s": ttft, "decode_tokens_per_call": decode_tokens,
                           "subtraction": None, "timeline": None}
    e_call = _median([_energy(r, scope) / r["generate_calls"] for r in repeats
                      if _energy(r, scope) is not None])
    if prefill is not None:
        pe = _energy(prefill, scope)
        if pe is not None and e_call is not None:
            e_pre = pe / prefill["generate_calls"]
            out["subtraction"] = {
                "prefill_j_per_input_token": e_pre / (batch * input_len),
                "decode_j_per_output_token": ((e_call - e_pre) / decode_tokens
                                              if decode_tokens else None),
                "prefill_window": prefill, "reason": None}
        else:
            out["subtraction"] = {"reason": "no energy for the prefill window or the repeats"}
    else:
        out["subtraction"] = {"reason": "phases not measured (output length 1 or --no-phases)"}
    if trace is None:
        out["timeline"] = {"reason": "no power trace (only sampled GPUs have one)"}
        return out
    from bench.kernels import trace as K

    t, p = trace
    if len(t) < 2 or not calls:
        out["timeline"] = {"reason": "too few power samples"}
        return out
    marks = np.array([x for c in calls for x in c], np.int64)
    if marks[0] < t[0] or marks[-1] > t[-1]:
        out["timeline"] = {"reason": "the power trace does not cover the calls"}
        return out
    seg = K.segment_energy_j(t, p, marks)
    pre = float(seg[0::3].sum())
    dec = float(seg[1::3].sum())
    n = len(calls)
    out["timeline"] = {"prefill_j_per_input_token": pre / (n * batch * input_len),
                       "decode_j_per_output_token": dec / (n * decode_tokens)
                       if decode_tokens else None, "reason": None}
    return out


@dataclass(frozen=True)
class CellRaw:
    """What was measured for one cell, before any figure is derived.

    Attributes:
        cell: the cell (device, model, dtype, batch and lengths).
        status: ok | oom | skipped | error | lost (its GPU's node or Ray actor died).
        error: why the cell has no figures, or None.
        repeats: the measured windows (see ``bench.cells.measure_window``).
        prefill: the prefill-only window, or None.
        idle_power_w: the device's idle power (GPUs), or None.
        trace: (t_ns, power_w) valid power samples of the device, or None.
        model_spec: the model's architecture (``bench.models.ModelSpec``) for the roofline;
            None leaves the roofline out.
        contended: whether other processes computed on the GPU during the cell; None
            where it was not asked (a skipped cell).
        other_pids: those processes.
        pid: the measuring process.
        engine: what ran (the workload's ``describe()``: engine name, version and the
            settings that change the figures), or None.
        warmup: the warm-up (``bench.cells.warm_up``: calls, seconds, how it ended), or None.
        power_limit_w: the GPU's enforced power limit during the cell (NVML, read back
            after setting it), W; None where the sweep has no power-limit axis. The
            roofline's power ceiling.
        power_limit_set_w: the limit the cell asked for, W (a fraction's W).
        sm_clock_mhz: the SM clock NVML reported after the cell's windows (a throttled
            cell shows), or None.
        load: endpoint mode: the client's load over the cell's span (first window's start
            to last window's end), from its request records (``steady.window_load``), or
            None. Its ``client_saturated`` is derived from the windows' own load blocks.
    """

    cell: Cell
    status: str
    error: str | None = None
    repeats: list[dict] = field(default_factory=list)
    prefill: dict | None = None
    idle_power_w: float | None = None
    trace: tuple[np.ndarray, np.ndarray] | None = None
    model_spec: Any = None
    contended: bool | None = None
    other_pids: list[int] | None = None
    pid: int | None = None
    engine: dict | None = None
    warmup: dict | None = None
    power_limit_w: float | None = None
    power_limit_set_w: float | None = None
    sm_clock_mhz: int | None = None
    load: dict | None = None


def flag_throttled(window: dict) -> dict:
    """The window with its ``throttled`` flag derived from its ``thermal`` block.

    True where the recorded clock event reasons include power or thermal throttling
    (``bench.results.thermal.THROTTLING``), None where they were not readable; a window
    without a ``thermal`` block (the CPU) has no flag.
    """
    from bench.results.thermal import window_throttled

    out = {k: v for k, v in window.items() if k != "throttled"}
    if "thermal" in window:
        out["throttled"] = window_throttled(window["thermal"])
    return out


def throttled_windows(windows: list[dict]) -> int | None:
    """How many of the windows are flagged ``throttled``; None where no window could say."""
    flags = [w.get("throttled") for w in windows if "thermal" in w]
    known = [f for f in flags if f is not None]
    return sum(1 for f in known if f) if known else None


def client_load(load: dict, repeats: list[dict]) -> dict:
    """An endpoint cell's load block: the span's figures, and ``client_saturated`` when
    the client may have held the server back in any window (its ``load.client``)."""
    return {**load, "client_saturated": any(
        bool(((r.get("load") or {}).get("client") or {}).get("client_saturated"))
        for r in repeats)}


def cell_record(raw: CellRaw) -> dict:
    """The journal/result record of one cell, every figure derived here."""
    from bench import roofline

    cell = raw.cell
    scope = primary_scope(cell.device.kind)
    raw_repeats = [flag_throttled(r) for r in raw.repeats]
    prefill = flag_throttled(raw.prefill) if raw.prefill is not None else None
    rec: dict[str, Any] = {
        "type": "cell", "cell_id": cell.cell_id, "device": cell.device.label,
        "device_name": cell.device.name, "model": cell.model, "dtype": cell.dtype,
        "batch_size": cell.batch_size, "input_len": cell.input_len,
        "output_len": cell.output_len, "status": raw.status, "error": raw.error,
        "scope": scope, "energy_method": None, "repeats": raw_repeats,
        "figures": None, "uncertainty": None, "idle_power_w": None, "phases": None,
        "roofline": None,
    }
    if raw_repeats:
        rec["energy_method"] = weakest_method(
            r["energy"].get(scope, {}).get("method") for r in raw_repeats)
        rec["figures"], rec["uncertainty"] = cell_figures(
            raw_repeats, scope, raw.idle_power_w,
            len(cell.device.members) if cell.device.kind == "cuda" else 1)
    windows = raw_repeats + ([prefill] if prefill is not None else [])
    if any("thermal" in w for w in windows):
        rec["throttled_windows"] = throttled_windows(windows)
    if raw.warmup is not None:
        rec["warmup"] = raw.warmup
    if raw.status == "ok":
        rec["idle_power_w"] = raw.idle_power_w
        rec["phases"] = phases(raw_repeats, prefill, scope, cell.batch_size,
                               cell.input_len, cell.output_len, raw.trace)
        if raw.model_spec is not None:
            rec["roofline"] = roofline.cell_roofline(
                _at_limit(cell.device, raw.power_limit_w), raw.model_spec, cell.dtype,
                cell.batch_size, cell.input_len, cell.output_len,
                rec["figures"]["output_tokens_per_j"] if rec["figures"] else None)
    if cell.device.kind == "cuda":
        # the GPUs the cell ran on: one, or a group (--gpus-per-cell) whose energy is summed
        members = cell.device.members
        rec["num_devices"] = len(members)
        rec["device_uuids"] = [m.uuid for m in members]
        if rec["figures"] is not None:
            per = per_device_figures(raw_repeats, scope, members)
            if per is not None:
                rec["figures"]["per_device"] = per
    if raw.contended is not None:
        rec["contended"] = raw.contended
        rec["other_pids"] = list(raw.other_pids or [])
    if raw.pid is not None:
        rec["pid"] = raw.pid
    if raw.engine is not None:
        rec["engine"] = raw.engine
    if cell.power_limit_w is not None or cell.power_limit_frac is not None:
        rec["power_limit_w"] = raw.power_limit_w
        rec["power_limit_set_w"] = raw.power_limit_set_w
        if cell.power_limit_frac is not None:
            rec["power_limit_frac"] = cell.power_limit_frac
        rec["sm_clock_mhz"] = raw.sm_clock_mhz
    if raw.load is not None:
        rec["load"] = client_load(raw.load, raw.repeats)
    node = cell.device.info.get("node")
    if node is not None:  # a cell measured on a Ray cluster (bench.cluster)
        rec["node"] = {**node, "gpu": {"index": cell.device.info.get("nvml_index"),
                                       "uuid": cell.device.uuid, "name": cell.device.name}}
    return rec


def _at_limit(device: Any, limit_w: float | None) -> Any:
    """The device with its enforced power limit (the roofline's ceiling) set to
    ``limit_w``; the device itself where no limit was set."""
    if limit_w is None:
        return device
    from dataclasses import replace

    return replace(device, info={**device.info, "power_limit_w": limit_w})


def idle_power_w(energy_j: float | None, duration_s: float) -> float | None:
    """Mean power of an idle window, or None where its energy is missing."""
    return energy_j / duration_s if energy_j is not None and duration_s > 0 else None


def run_summary(cells: list[dict]) -> dict:
    """The run's summary: cell counts and the best output tokens/J of its ok cells."""
    ok = [c for c in cells if c.get("status") == "ok" and c.get("figures")]
    tpj = [c["figures"]["output_tokens_per_j"] for c in ok
           if c["figures"].get("output_tokens_per_j") is not None]
    return {"cells": len(cells), "ok": len(ok), "not_ok": len(cells) - len(ok),
            "max_output_tokens_per_j": max(tpj) if tpj else None}
