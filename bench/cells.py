"""One cell, measured: warm-up, the repeat windows and the prefill-only window (no figures here).

Per cell: ``warmup`` unmeasured calls (compilation, allocation and clock ramp-up stay out
of the measurement), more of them on a sampled GPU until its power is steady or
``warmup_cap_s`` has passed (:func:`warm_up`), then ``repeats`` windows of whole calls,
each at least ``min_window_s`` long, then (with phases on) one window of prefill-only
calls (one output token) for the subtraction method. Figures are derived from these raw windows by
``bench.results.figures``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from bench.meter import Measurement, Meter
from bench.results.figures import window_per_device
from bench.sweep import Cell, SweepConfig
from bench.workload import CallResult, Shape, Workload


def energy_block(m: Measurement, absent: dict[str, str] | None) -> dict:
    """A window's energy per scope: J, method and, where unmeasured, the reason."""
    energy: dict[str, dict] = {scope: {"energy_j": None, "method": None, "reason": why}
                               for scope, why in (absent or {}).items()}
    for scope in m.scopes():
        e = m.energy_j(scope)
        energy[scope] = {"energy_j": e, "method": m.method(scope),
                         "reason": m.reason(scope) if e is None else None}
        per = window_per_device([r.to_dict() for r in m.readings], scope)
        if per is not None:  # several GPUs run the cell: each one's own energy is kept
            energy[scope]["per_device"] = per
    return energy


def measure_window(meter: Meter, name: str, call: Callable[[], CallResult],
                   min_window_s: float, absent: dict[str, str] | None) -> dict:
    """Whole calls until the window lasts ``min_window_s``; the repeat record.

    A counter is only as good as its update period, so windows last seconds, not calls.
    Where the meter reads sampled sources, one more call runs before the window and the
    calls go on after it until the samples past its end are in (unmeasured), so the
    edges sit in the middle of the work, not on a power step.
    """
    results: list[CallResult] = []
    with meter.window(name, busy=call) as w:
        t_start = time.monotonic()
        while True:
            results.append(call())
            if time.monotonic() - t_start >= min_window_s:
                break
    m = w.result
    assert m is not None
    return {"t0_ns": m.t0_ns, "t1_ns": m.t1_ns, "duration_s": m.duration_s,
            "generate_calls": len(results),
            "output_tokens": sum(r.output_tokens for r in results),
            "input_tokens": sum(r.input_tokens for r in results),
            "energy": energy_block(m, absent),
            "readings": [x.to_dict() for x in m.readings],
            "calls_ns": [list(r.marks) for r in results],
            **({"thermal": m.thermal} if m.thermal is not None else {})}


# Warm-up until steady: the mean sampled power of each of the last STEADY_SPANS spans
# (each min(STEADY_SPAN_MAX_S, half the minimum window) long, or as long as one extra
# warm-up call where that is longer: a span then holds a whole call, prefill and decode)
# within STEADY_REL of their median (kernels.trace.steady_window over the spans' means).
STEADY_SPANS = 4
STEADY_SPAN_MAX_S = 1.0
STEADY_REL = 0.01


def steady_span_s(min_window_s: float) -> float:
    """The length of one span of the steadiness rule for windows of ``min_window_s``."""
    return min(STEADY_SPAN_MAX_S, min_window_s / 2)


def power_steady(t_ns: Any, power_w: Any, since_ns: int, now_ns: int, span_s: float) -> bool:
    """Whether the power sampled in the last ``STEADY_SPANS`` spans (after ``since_ns``) is
    steady: every span has samples and their means lie within ``STEADY_REL`` of their median.
    """
    from bench.kernels import trace as K

    span_ns = int(span_s * 1e9)
    first = now_ns - STEADY_SPANS * span_ns
    if span_ns <= 0 or first < since_ns:
        return False
    t = np.asarray(t_ns, np.int64)
    p = np.asarray(power_w, np.float64)
    mids, means = [], []
    for k in range(STEADY_SPANS):
        a = first + k * span_ns
        inside = (t >= a) & (t < a + span_ns)
        if not inside.any():
            return False
        mids.append(a + span_ns // 2)
        means.append(float(p[inside].mean()))
    i0, i1, _ = K.steady_window(np.array(mids, np.int64), np.array(means), STEADY_REL)
    return i0 == 0 and i1 == STEADY_SPANS


def warm_up(workload: Workload, shape: Shape, config: SweepConfig, sampler: Any) -> dict:
    """The cell's warm-up: ``config.warmup`` calls, then (with a running ``sampler`` and a
    positive ``config.warmup_cap_s``) more calls until the sampled power is steady
    (:func:`power_steady`) or the cap has passed since the warm-up began. A span is
    :func:`steady_span_s` long, or as long as the longest extra call where that is longer.

    Returns:
        ``{"calls", "seconds", "ended", "cap_s", "steady_span_s"}``: ``ended`` is
        ``steady``, ``cap``, or ``calls`` (the minimum calls alone: no sampler, no cap,
        or no power readings to judge by).
    """
    assert config.warmup is not None and config.min_window_s is not None
    t_start = time.monotonic_ns()
    workload.warm_up(shape, config.warmup)
    calls, ended = config.warmup, "calls"
    cap_s = float(getattr(config, "warmup_cap_s", None) or 0.0)
    span_s = steady_span_s(config.min_window_s)
    if sampler is not None and getattr(sampler, "running", False) and cap_s > 0:
        while True:
            now = time.monotonic_ns()
            powers = [tr.power_valid() for tr in sampler.traces(since_ns=t_start)]
            seen = [(t, p) for t, p in powers if t.size]
            if not seen and (now - t_start) * 1e-9 >= STEADY_SPANS * span_s:
                break  # nothing to judge by: the minimum calls alone
            if seen and len(seen) == len(powers) and all(
                    power_steady(t, p, t_start, now, span_s) for t, p in seen):
                ended = "steady"
                break
            if (now - t_start) * 1e-9 >= cap_s:
                ended = "cap"
                break
            t_call = time.monotonic_ns()
            workload.call(shape)
            calls += 1
            span_s = max(span_s, (time.monotonic_ns() - t_call) * 1e-9)
    return {"calls": calls, "seconds": (time.monotonic_ns() - t_start) * 1e-9,
            "ended": ended, "cap_s": cap_s if cap_s > 0 else None,
            "steady_span_s": span_s}


def measure(cell: Cell, workload: Workload, meter: Meter, config: SweepConfig,
            absent: dict[str, str] | None = None,
            progress: Callable[[dict], None] = lambda event: None
            ) -> tuple[list[dict], dict | None]:
    """Warm up, measure the repeats and (with phases) the prefill-only window.

    Returns:
        (repeats, prefill_window or None); :func:`measure_with_warmup` adds the warm-up.
    """
    repeats, prefill, _ = measure_with_warmup(cell, workload, meter, config, absent,
                                              progress)
    return repeats, prefill


def measure_with_warmup(cell: Cell, workload: Workload, meter: Meter, config: SweepConfig,
                        absent: dict[str, str] | None = None,
                        progress: Callable[[dict], None] = lambda event: None
                        ) -> tuple[list[dict], dict | None, dict]:
    """Warm up, measure the repeats and (with phases) the prefill-only window.

    ``config`` is resolved for the cell's device (its warm-up and minimum window set).
    ``progress`` receives ``{"type": "progress", ...}`` before each window.

    Returns:
        (repeats, prefill_window or None, warm-up record (see :func:`warm_up`))
    """
    assert config.warmup is not None and config.min_window_s is not None
    shape = Shape(cell.batch_size, cell.input_len, cell.output_len)
    warm = warm_up(workload, shape, config, meter.sampler)
    with_prefill = config.phases and cell.output_len > 1
    windows = config.repeats + (1 if with_prefill else 0)

    def step(i: int, what: str) -> None:
        progress({"type": "progress", "device": cell.device.label, "cell_id": cell.cell_id,
                  "window": i + 1, "windows": windows, "what": what})

    repeats = []
    for r in range(config.repeats):
        step(r, f"repeat {r + 1}/{config.repeats}")
        repeats.append(measure_window(meter, f"{cell.cell_id}#{r}",
                                      lambda: workload.call(shape), config.min_window_s,
                                      absent))
    prefill = None
    if with_prefill:
        step(config.repeats, "prefill-only window")
        one = Shape(cell.batch_size, cell.input_len, 1)
        workload.warm_up(one, 1)  # warm the one-token shape too
        prefill = measure_window(meter, f"{cell.cell_id}#prefill",
                                 lambda: workload.call(one), config.min_window_s, absent)
    return repeats, prefill, warm
