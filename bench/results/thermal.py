"""NVML's clock event reasons by name, and which of them make a window ``throttled``."""

from __future__ import annotations

# Bit -> name of NVML's clock event (throttle) reasons (nvmlClocksEventReason*).
REASONS: dict[int, str] = {
    0x1: "gpu_idle",
    0x2: "applications_clocks_setting",
    0x4: "sw_power_cap",
    0x8: "hw_slowdown",
    0x10: "sync_boost",
    0x20: "sw_thermal_slowdown",
    0x40: "hw_thermal_slowdown",
    0x80: "hw_power_brake_slowdown",
    0x100: "display_clock_setting",
    0x200: "board_limit",
    0x400: "reliability",
}

# The reasons that mean the clocks were held down by power or heat: a window that saw one
# of them is ``throttled``. Idle, application-clock, sync-boost and display settings are
# choices or states, not throttling.
THROTTLING = ("sw_power_cap", "hw_slowdown", "sw_thermal_slowdown", "hw_thermal_slowdown",
              "hw_power_brake_slowdown")


def reason_names(mask: int) -> list[str]:
    """The names of the bits set in ``mask``, lowest bit first (unknown bits as ``bit_N``)."""
    out = []
    for bit in range(64):
        if mask >> bit & 1:
            out.append(REASONS.get(1 << bit, f"bit_{bit}"))
    return out


def window_throttled(thermal: object) -> bool | None:
    """Whether a window's recorded reasons include power or thermal throttling.

    ``thermal`` is the window's ``thermal`` block; None where the window has none or its
    reasons were not readable.
    """
    if not isinstance(thermal, dict):
        return None
    names = thermal.get("throttle_reasons")
    if not isinstance(names, list):
        return None
    return any(n in THROTTLING for n in names)
