"""One cell, measured: warm-up, the repeat windows and the prefill-only window (no figures here).

Per cell: ``warmup`` unmeasured calls (compilation, allocation and clock ramp-up stay out
of the measurement), then ``repeats`` windows of whole calls, each at least
``min_window_s`` long, then (with phases on) one window of prefill-only calls (one output
token) for the subtraction method. Figures are derived from these raw windows by
``bench.results.figures``.
"""

from __future__ import annotations

import time
from collections.abc import Callable

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
            "calls_ns": [list(r.marks) for r in results]}


def measure(cell: Cell, workload: Workload, meter: Meter, config: SweepConfig,
            absent: dict[str, str] | None = None,
            progress: Callable[[dict], None] = lambda event: None
            ) -> tuple[list[dict], dict | None]:
    """Warm up, measure the repeats and (with phases) the prefill-only window.

    ``config`` is resolved for the cell's device (its warm-up and minimum window set).
    ``progress`` receives ``{"type": "progress", ...}`` before each window.

    Returns:
        (repeats, prefill_window or None)
    """
    assert config.warmup is not None and config.min_window_s is not None
    shape = Shape(cell.batch_size, cell.input_len, cell.output_len)
    workload.warm_up(shape, config.warmup)
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
    return repeats, prefill
