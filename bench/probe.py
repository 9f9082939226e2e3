"""``bench probe``: what each GPU's power sensors can resolve (latency, update periods)."""

from __future__ import annotations

import time

import numpy as np

from bench.devices import nvml
from bench.kernels import trace as K
from bench.sampler import Sampler


def _period(t, v) -> float | None:
    if t.size < 3:
        return None
    p = K.update_period_s(t, v)
    return None if p != p else p  # NaN: fewer than two changes seen


def probe_gpu(index: int, duration_s: float = 1.5, rate_hz: float = 1000.0) -> dict:
    """Probe one GPU (NVML index): supported readings, call latency, update periods."""
    nvml.init()
    try:
        h = nvml.handle(index)
        name = nvml.gpu_info(index).name
        sup = nvml.supported(h)
    finally:
        nvml.shutdown()
    out = {"index": index, "name": name, "energy_counter_update_period_s": None,
           "power_instant_update_period_s": None, "power_average_update_period_s": None,
           "power_usage_update_period_s": None, "call_latency_p50_us": None,
           "call_latency_p99_us": None, "sample_rate_hz": None, "supported": sup}
    runs: list[tuple[str, str]] = [
        ("none", "energy_counter_update_period_s"),
        ("instant", "power_instant_update_period_s"),
        ("average", "power_average_update_period_s"),
        ("usage", "power_usage_update_period_s")]
    need = {"instant": "power_instant_field", "average": "power_average_field",
            "usage": "power_usage"}
    for mode, key in runs:
        if mode != "none" and not sup[need[mode]]:
            continue
        if mode == "none" and not sup["energy_counter"]:
            continue
        with Sampler([index], rate_hz=rate_hz, power=mode) as s:
            time.sleep(duration_s)
        (tr,) = s.traces()
        if mode == "none":
            t, e = tr.energy_valid()
            out[key] = _period(t, e)
            lat = tr.latency_ns[tr.energy_status == 0] * 1e-3
            if lat.size:
                out["call_latency_p50_us"] = float(np.percentile(lat, 50))
                out["call_latency_p99_us"] = float(np.percentile(lat, 99))
            if len(tr) > 1:
                out["sample_rate_hz"] = (len(tr) - 1) / ((tr.t_ns[-1] - tr.t_ns[0]) * 1e-9)
        else:
            t, p = tr.power_valid()
            out[key] = _period(t, p)
            lat = tr.latency_ns[tr.power_status == 0] * 1e-3
            if out["call_latency_p50_us"] is None and lat.size:  # no counter to time
                out["call_latency_p50_us"] = float(np.percentile(lat, 50))
                out["call_latency_p99_us"] = float(np.percentile(lat, 99))
                out["sample_rate_hz"] = (len(tr) - 1) / ((tr.t_ns[-1] - tr.t_ns[0]) * 1e-9)
    return out
