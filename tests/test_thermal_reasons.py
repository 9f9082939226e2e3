"""Clock event reasons by name, against NVML's own constants (pynvml mirrors nvml.h)."""

import pynvml

from bench.results.thermal import REASONS, THROTTLING, reason_names, window_throttled


def test_every_named_bit_is_nvmls():
    nvml = {
        "gpu_idle": pynvml.nvmlClocksThrottleReasonGpuIdle,
        "applications_clocks_setting": pynvml.nvmlClocksThrottleReasonApplicationsClocksSetting,
        "sw_power_cap": pynvml.nvmlClocksThrottleReasonSwPowerCap,
        "hw_slowdown": pynvml.nvmlClocksThrottleReasonHwSlowdown,
        "sync_boost": pynvml.nvmlClocksThrottleReasonSyncBoost,
        "sw_thermal_slowdown": pynvml.nvmlClocksThrottleReasonSwThermalSlowdown,
        "hw_thermal_slowdown": pynvml.nvmlClocksThrottleReasonHwThermalSlowdown,
        "hw_power_brake_slowdown": pynvml.nvmlClocksThrottleReasonHwPowerBrakeSlowdown,
        "display_clock_setting": pynvml.nvmlClocksThrottleReasonDisplayClockSetting,
        "board_limit": pynvml.nvmlClocksThrottleReasonBoardLimit,
        "reliability": pynvml.nvmlClocksThrottleReasonReliability,
    }
    assert {name: bit for bit, name in REASONS.items()} == nvml


def test_names_by_hand():
    assert reason_names(0) == []
    # 0x4 power cap, 0x20 SW thermal, bit 12 unknown to this table
    assert reason_names(0x4 | 0x20 | 1 << 12) == ["sw_power_cap", "sw_thermal_slowdown",
                                                   "bit_12"]
    assert reason_names(1) == ["gpu_idle"]
    assert reason_names(1 << 63) == ["bit_63"]
    assert reason_names(0x7FF) == list(REASONS.values())


def test_throttled_means_power_or_heat():
    assert set(THROTTLING) == {"sw_power_cap", "hw_slowdown", "sw_thermal_slowdown",
                               "hw_thermal_slowdown", "hw_power_brake_slowdown"}
    assert window_throttled({"throttle_reasons": ["gpu_idle", "sync_boost"]}) is False
    assert window_throttled({"throttle_reasons": ["gpu_idle", "hw_slowdown"]}) is True
    assert window_throttled({"throttle_reasons": None}) is None
    assert window_throttled(None) is None
