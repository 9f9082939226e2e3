"""Datasheet figures of accelerators, for plausibility checks and energy rooflines.

Dense BF16 FLOP/s (not the sparsity figure), memory bandwidth and TDP, from
../shared/notes/inference.md section 6 (vendor datasheets; A100 and MI300X not yet
re-checked against the vendor PDFs).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator's datasheet figures, and the names its driver reports for it."""

    key: str
    bf16_flops: float  # dense, FLOP/s
    mem_bw_bytes_per_s: float
    memory_bytes: float
    tdp_w: float
    source: str
    names: tuple[str, ...] = ()  # as NVML reports them, without the "NVIDIA " prefix


# Names are matched exactly: a substring would give an H100 PCIe or NVL (other clocks,
# bandwidth and TDP) the SXM figures, and a GH200 the H200's.
SPECS = (
    DeviceSpec("H100", 989e12, 3.35e12, 80e9, 700, "NVIDIA H100 SXM5 datasheet",
               ("H100 80GB HBM3", "H100 SXM5 80GB")),
    DeviceSpec("H100 PCIe", 756e12, 2.0e12, 80e9, 350,
               "NVIDIA H100 PCIe datasheet (not re-checked)", ("H100 PCIe",)),
    DeviceSpec("H100 NVL", 835e12, 3.9e12, 94e9, 400,
               "NVIDIA H100 NVL datasheet (not re-checked)", ("H100 NVL",)),
    DeviceSpec("H200", 989e12, 4.8e12, 141e9, 700, "NVIDIA H200 SXM datasheet",
               ("H200", "H200 141GB HBM3e")),
    DeviceSpec("B200", 2250e12, 8e12, 180e9, 1000,
               "NVIDIA Blackwell datasheet (HGX B200, 1,000 W)", ("B200",)),
    DeviceSpec("A100", 312e12, 2.039e12, 80e9, 400,
               "NVIDIA A100 SXM 80GB datasheet (not re-checked)", ("A100-SXM4-80GB",)),
    DeviceSpec("L40S", 362e12, 864e9, 48e9, 350, "NVIDIA L40S datasheet", ("L40S",)),
    DeviceSpec("MI300X", 1307e12, 5.3e12, 192e9, 750, "AMD MI300X datasheet (not re-checked)",
               ("AMD Instinct MI300X", "MI300X")),
)


def _normal(name: str) -> str:
    name = " ".join(name.split()).upper()
    return name.removeprefix("NVIDIA ")


def lookup(device_name: str | None) -> DeviceSpec | None:
    """The spec one of whose names is exactly the device name (case and the "NVIDIA "
    prefix aside), or None."""
    if not device_name:
        return None
    name = _normal(device_name)
    for s in SPECS:
        if any(_normal(n) == name for n in s.names):
            return s
    return None
