"""One cell: warm-up, measured windows, the prefill-only window, and its record.

Per cell: ``warmup`` unmeasured generate calls (compilation, allocation and clock ramp-up
stay out of the measurement), then ``repeats`` windows of whole generate calls, each at
least ``min_window_s`` long, then (with phases on) one window of prefill-only calls
(one output token) for the subtraction method.
"""

from __future__ import annotations

import statistics
import time

from bench import workload
from bench.meter import Measurement, Meter
from bench.results import schema


def _energy_block(m: Measurement, absent: dict[str, str] | None) -> dict:
    energy = {scope: {"energy_j": None, "method": None, "reason": why}
              for scope, why in (absent or {}).items()}
    for scope in m.scopes():
        e = m.energy_j(scope)
        energy[scope] = {"energy_j": e, "method": m.method(scope),
                         "reason": m.reason(scope) if e is None else None}
    return energy


def measure_window(meter: Meter, name: str, model, ids, output_len: int,
                   min_window_s: float, absent: dict[str, str] | None) -> dict:
    """Whole generate calls until the window lasts ``min_window_s``; the repeat record.

    A counter is only as good as its update period, so windows last seconds, not calls.
    """
    marks: list = []
    with meter.window(name) as w:
        t_start = time.monotonic()
        while True:
            workload.generate_exact(model, ids, output_len, marks)
            if time.monotonic() - t_start >= min_window_s:
                break
    m = w.result
    batch, input_len = ids.shape[0], ids.shape[1]
    calls = len(marks)
    return {"t0_ns": m.t0_ns, "t1_ns": m.t1_ns, "duration_s": m.duration_s,
            "generate_calls": calls, "output_tokens": calls * batch * output_len,
            "input_tokens": calls * batch * input_len, "energy": _energy_block(m, absent),
            "readings": [x.to_dict() for x in m.readings],
            "calls_ns": [list(c) for c in marks]}


def measure(cell, model, vocab_size: int, meter: Meter, config, min_window_s: float,
            absent: dict[str, str] | None = None, phases: bool = True,
            progress=lambda event: None) -> tuple[list, dict]:
    """Warm up, measure the repeats and (with ``phases``) the prefill-only window.

    ``progress`` receives ``{"type": "progress", ...}`` before each window.

    Returns:
        (repeats, prefill_window or None)
    """
    shape = workload.Shape(cell.batch_size, cell.input_len, cell.output_len)
    ids = workload.make_prompts(shape, vocab_size, config.seed, cell.device.torch_device)
    warmup = config.warmup
    if config.compile and cell.device.torch_device.startswith("cuda"):
        warmup = max(warmup, 2)  # compile, then record the CUDA graphs: both unmeasured
    for _ in range(warmup):
        workload.generate_exact(model, ids, cell.output_len)
    windows = config.repeats + (1 if phases and cell.output_len > 1 else 0)

    def step(i: int, what: str) -> None:
        progress({"type": "progress", "device": cell.device.label, "cell_id": cell.cell_id,
                  "window": i + 1, "windows": windows, "what": what})

    repeats = []
    for r in range(config.repeats):
        step(r, f"repeat {r + 1}/{config.repeats}")
        repeats.append(measure_window(meter, f"{cell.cell_id}#{r}", model, ids,
                                      cell.output_len, min_window_s, absent))
    prefill = None
    if phases and cell.output_len > 1:
        step(config.repeats, "prefill-only window")
        workload.generate_exact(model, ids, 1)  # warm the one-token shape too
        prefill = measure_window(meter, f"{cell.cell_id}#prefill", model, ids, 1,
                                 min_window_s, absent)
    return repeats, prefill


def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def phases(repeats: list[dict], prefill: dict | None, scope: str, batch: int,
           input_len: int, output_len: int, trace=None) -> dict:
    """Prefill and decode energy per token by both methods, and time to first token.

    Subtraction: E(prefill-only call) from the prefill window; decode = the full call's
    energy minus that, per output token after the first. Limits: assumes a prefill-only
    call costs what a full call's prefill costs (same shapes; the one extra token's
    sampling is counted as prefill).
    Timeline: sampled power integrated between each call's start, first-token mark and
    end (kernels.trace.segment_energy_j). Limits: needs a power trace (GPUs); the power
    reading's own averaging window (about 25 ms for field 186) smears phases shorter
    than that.
    """
    calls = [c for r in repeats for c in r.get("calls_ns", [])]
    ttft = _median([(f - s) * 1e-9 for s, f, _ in calls])
    decode_tokens = batch * (output_len - 1)
    out = {"ttft_s": ttft, "decode_tokens_per_call": decode_tokens,
           "subtraction": None, "timeline": None}
    e_call = _median([r["energy"].get(scope, {}).get("energy_j") / r["generate_calls"]
                      for r in repeats
                      if r["energy"].get(scope, {}).get("energy_j") is not None])
    if prefill is not None:
        pe = prefill["energy"].get(scope, {}).get("energy_j")
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
    import numpy as np

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


def primary_scope(device) -> str:
    """The scope a cell's figures are in: gpu for GPU cells, cpu for CPU cells."""
    return "gpu" if device.kind == "cuda" else "cpu"


def record(cell, status: str, repeats: list[dict] | None = None, error: str | None = None,
           idle_power_w: float | None = None, phases_block: dict | None = None,
           roofline: dict | None = None) -> dict:
    """The journal/result record of one cell."""
    scope = primary_scope(cell.device)
    rec = {
        "type": "cell", "cell_id": cell.cell_id, "device": cell.device.label,
        "device_name": cell.device.name, "model": cell.model, "dtype": cell.dtype,
        "batch_size": cell.batch_size, "input_len": cell.input_len,
        "output_len": cell.output_len, "status": status, "error": error, "scope": scope,
        "energy_method": None, "repeats": repeats or [], "figures": None, "uncertainty": None,
        "idle_power_w": idle_power_w, "phases": phases_block, "roofline": roofline,
    }
    if repeats:
        methods = [r["energy"].get(scope, {}).get("method") for r in repeats]
        for m in ("estimate", "power_integration", "counter"):  # the weakest labels the cell
            if m in methods:
                rec["energy_method"] = m
                break
        rec["figures"], rec["uncertainty"] = schema.cell_figures(repeats, scope, idle_power_w)
    return rec
