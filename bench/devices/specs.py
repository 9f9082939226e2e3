"""Datasheet figures of accelerators, for plausibility checks and energy rooflines.

Dense BF16 FLOP/s (not the sparsity figure), memory bandwidth and TDP, from
../shared/notes/inference.md section 6 (vendor datasheets; A100 and MI300X not yet
re-checked against the vendor PDFs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator's datasheet figures."""

    key: str
    bf16_flops: float  # dense, FLOP/s
    mem_bw_bytes_per_s: float
    memory_bytes: float
    tdp_w: float
    source: str


SPECS = (
    DeviceSpec("H100", 989e12, 3.35e12, 80e9, 700, "NVIDIA H100 SXM5 datasheet"),
    DeviceSpec("H200", 989e12, 4.8e12, 141e9, 700, "NVIDIA H200 SXM datasheet"),
    DeviceSpec("B200", 2250e12, 8e12, 180e9, 1000,
               "NVIDIA Blackwell datasheet (HGX B200, 1,000 W)"),
    DeviceSpec("A100", 312e12, 2.039e12, 80e9, 400,
               "NVIDIA A100 SXM 80GB datasheet (not re-checked)"),
    DeviceSpec("L40S", 362e12, 864e9, 48e9, 350, "NVIDIA L40S datasheet"),
    DeviceSpec("MI300X", 1307e12, 5.3e12, 192e9, 750, "AMD MI300X datasheet (not re-checked)"),
)


def lookup(device_name: str | None) -> DeviceSpec | None:
    """The spec whose key appears in the device name (case-insensitive), or None."""
    if not device_name:
        return None
    name = device_name.upper().replace(" ", "")
    for s in SPECS:
        if s.key in name:
            return s
    return None
