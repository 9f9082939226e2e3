"""The energy roofline: the tokens/J a device could reach running at its TDP.

Ceiling = output tokens of a generate call / (TDP x the shortest time the call can take),
where the shortest time is the roofline of each phase: prefill at peak FLOP/s (or one
read of the weights), then every decode step at max(bytes / bandwidth, FLOPs / peak).
A device below TDP can beat it; the fraction says how close the cell came.
"""

from __future__ import annotations

from dataclasses import replace

from bench.devices import specs
from bench.models import arithmetic

# A CPU has no datasheet entry here: per logical CPU, AVX-512 FP32 (2 FMA x 16 lanes at
# about 3 GHz = 96 GFLOP/s), about 5 GB/s of memory bandwidth (8-12 DDR5 channels shared
# by ~100 threads) and the estimate's 4 W. Labelled an estimate wherever it is used.
CPU_PER_THREAD = {"flops": 96e9, "mem_bw": 5e9, "tdp_w": 4.0}


def device_spec(device) -> tuple[specs.DeviceSpec | None, str | None]:
    """The datasheet spec for a :class:`bench.devices.Device`, or None and why."""
    if device.kind == "cpu":
        n = int(device.info.get("logical_cpus") or 1)
        return specs.DeviceSpec(
            "CPU", CPU_PER_THREAD["flops"] * n, CPU_PER_THREAD["mem_bw"] * n, 0.0,
            CPU_PER_THREAD["tdp_w"] * n,
            f"estimate: {n} logical CPUs x (96 GFLOP/s FP32, 5 GB/s, 4 W); not a datasheet"
        ), None
    s = specs.lookup(device.name)
    if s is None:
        return None, f"{device.name} is not in the device table"
    limit = device.info.get("power_limit_w")
    if isinstance(limit, (int, float)) and limit > 0:
        # The board draws at most its enforced limit (NVML), which an operator may have
        # set below the datasheet TDP: the ceiling is the one this board can reach.
        s = replace(s, tdp_w=float(limit),
                    source=f"{s.source}; power: NVML enforced power limit {limit:g} W")
    return s, None


def cell_roofline(device, spec_model, dtype: str, batch: int, input_len: int,
                  output_len: int, measured_tokens_per_j: float | None) -> dict:
    """The cell's ceiling at TDP and the fraction of it the measurement reached."""
    spec, why = device_spec(device)
    if spec is None:
        return {"ceiling_output_tokens_per_j": None, "fraction": None, "reason": why}
    a = arithmetic.of(spec_model, dtype)
    peak = spec.bf16_flops if dtype in ("bf16", "fp16") or spec.key == "CPU" else \
        spec.bf16_flops * 2 if dtype == "fp8" else \
        spec.bf16_flops / 2  # no TF32 assumption: fp32 at half the 16-bit rate; fp8 twice
    # a group of N GPUs (--gpus-per-cell): N times the FLOPs, bandwidth and TDP (ideal
    # scaling, so the tokens/J ceiling is one GPU's; the time per call is 1/N of it)
    n = len(getattr(device, "members", None) or [device])
    t = a.min_time_s(batch, input_len, output_len, peak * n, spec.mem_bw_bytes_per_s * n)
    ceiling = batch * output_len / (spec.tdp_w * n * t)
    return {"device_spec": spec.key, "source": spec.source, "tdp_w": spec.tdp_w,
            "min_time_s_per_call": t, "ceiling_output_tokens_per_j": ceiling,
            "fraction": (measured_tokens_per_j / ceiling if measured_tokens_per_j is not None
                         else None), "reason": None}
