"""The NVML sampling loop: numba nopython and nogil, calling NVML's C functions directly.

The loop paces itself with absolute deadlines (``clock_nanosleep`` with TIMER_ABSTIME on
CLOCK_MONOTONIC, the clock of ``time.monotonic_ns``) and writes, per tick and device, the
time, the energy counter, the power and the call latency into preallocated arrays. It
never holds the GIL, so a busy Python main thread cannot starve it.

The NVML functions are bound by address (:func:`bind`) from the library pynvml loaded,
under names of our own, before the first call; the loop is compiled with ``cache=True``
(external functions are resolved by name when the cached code is linked).
"""

from __future__ import annotations

import ctypes

import numba
import numpy as np
from llvmlite import binding as llvm
from numba import types

CLOCK_MONOTONIC = 1
TIMER_ABSTIME = 1

# power_mode per device
POWER_NONE = 0
POWER_USAGE = 1  # nvmlDeviceGetPowerUsage (a 1 s average on Ampere and newer, not GA100)
POWER_INSTANT = 2  # field 186
POWER_AVERAGE = 3  # field 185

NVML_ERROR_GPU_IS_LOST = 15

_PREFIX = "joulebench_"
NVML_FUNCTIONS = ("nvmlDeviceGetTotalEnergyConsumption", "nvmlDeviceGetPowerUsage",
                  "nvmlDeviceGetFieldValues")

_clock_gettime = types.ExternalFunction(
    _PREFIX + "clock_gettime", types.int32(types.int32, types.intp))
_clock_nanosleep = types.ExternalFunction(
    _PREFIX + "clock_nanosleep", types.int32(types.int32, types.int32, types.intp, types.intp))
_energy = types.ExternalFunction(
    _PREFIX + "nvmlDeviceGetTotalEnergyConsumption", types.int32(types.intp, types.intp))
_power = types.ExternalFunction(
    _PREFIX + "nvmlDeviceGetPowerUsage", types.int32(types.intp, types.intp))
_fields = types.ExternalFunction(
    _PREFIX + "nvmlDeviceGetFieldValues", types.int32(types.intp, types.int32, types.intp))

_bound: dict[str, int] = {}


def bind(addresses: dict[str, int]) -> None:
    """Bind NVML functions (name -> address) and libc's clocks for the loop.

    A name bound once keeps its address for the life of the process (compiled code
    holds it), so binding a different address later is refused.
    """
    libc = ctypes.CDLL(None)
    table = dict(addresses)
    for name in ("clock_gettime", "clock_nanosleep"):
        table[name] = ctypes.cast(getattr(libc, name), ctypes.c_void_p).value or 0
    for name, addr in table.items():
        if not addr:
            raise ValueError(f"no address for {name}")
        old = _bound.get(name)
        if old is not None and old != addr:
            raise RuntimeError(f"{name} is already bound to another library in this process")
        if old is None:
            llvm.add_symbol(_PREFIX + name, addr)
            _bound[name] = addr


@numba.njit(cache=True, nogil=True)
def _now_ns(ts):
    _clock_gettime(CLOCK_MONOTONIC, ts.ctypes.data)
    return ts[0] * 1_000_000_000 + ts[1]


@numba.njit(cache=True, nogil=True)
def sample_loop(handles, power_mode, sample_energy, period_ns, deadline_ns, stop, progress,
                t_ns, energy_j, power_w, latency_ns, energy_status, power_status, lost):
    """Sample until ``stop[0]`` is set or the buffers are full.

    Args:
        handles: int64[d], NVML device handles (pointers as integers).
        power_mode: int64[d], which power reading per device (POWER_* constants).
        sample_energy: int64[d], 1 to read the energy counter.
        period_ns: the sampling period.
        deadline_ns: absolute CLOCK_MONOTONIC time of the first tick.
        stop: int64[1]; the loop ends at the first tick after it becomes non-zero.
        progress: int64[1]; set to the number of ticks written after each tick.
        t_ns: int64[d, n] midpoint of the energy call (else of the power call).
        energy_j, power_w: float64[d, n]; NaN where the call failed.
        latency_ns: int64[d, n], time spent in this device's NVML calls.
        energy_status, power_status: int32[d, n], NVML return codes (-1: not read).
        lost: int64[d]; set to 1 once a device reports GPU_IS_LOST; it is not called again.

    Returns:
        (ticks written, the next deadline in ns).
    """
    nd = handles.shape[0]
    cap = t_ns.shape[1]
    ts = np.zeros(2, np.int64)
    dl = np.zeros(2, np.int64)
    ebuf = np.zeros(1, np.uint64)
    pbuf = np.zeros(1, np.uint32)
    fbuf = np.zeros(10, np.uint32)  # one nvmlFieldValue_t (40 bytes)
    k = 0
    while k < cap:
        if stop[0] != 0:
            break
        now = _now_ns(ts)
        if deadline_ns <= now - period_ns:
            deadline_ns = now  # fell behind (suspended?): restart the grid, no burst
        dl[0] = deadline_ns // 1_000_000_000
        dl[1] = deadline_ns % 1_000_000_000
        _clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, dl.ctypes.data, 0)
        for d in range(nd):
            t_ns[d, k] = 0
            energy_j[d, k] = np.nan
            power_w[d, k] = np.nan
            energy_status[d, k] = -1
            power_status[d, k] = -1
            latency_ns[d, k] = 0
            if lost[d] != 0:
                energy_status[d, k] = NVML_ERROR_GPU_IS_LOST
                t_ns[d, k] = _now_ns(ts)
                continue
            a = _now_ns(ts)
            mid = a
            if sample_energy[d] != 0:
                r = _energy(handles[d], ebuf.ctypes.data)
                b = _now_ns(ts)
                mid = (a + b) // 2
                energy_status[d, k] = r
                if r == 0:
                    energy_j[d, k] = ebuf[0] * 1e-3  # mJ -> J
                elif r == NVML_ERROR_GPU_IS_LOST:
                    lost[d] = 1
            else:
                b = a
            m = power_mode[d]
            if m != POWER_NONE and lost[d] == 0:
                if m == POWER_USAGE:
                    r = _power(handles[d], pbuf.ctypes.data)
                    val = pbuf[0]
                else:
                    fbuf[:] = 0
                    fbuf[0] = 186 if m == POWER_INSTANT else 185
                    r = _fields(handles[d], 1, fbuf.ctypes.data)
                    if r == 0:
                        r = fbuf[7]
                    val = fbuf[8]
                c = _now_ns(ts)
                if sample_energy[d] == 0:
                    mid = (b + c) // 2
                power_status[d, k] = r
                if r == 0:
                    power_w[d, k] = val * 1e-3  # mW -> W
                elif r == NVML_ERROR_GPU_IS_LOST:
                    lost[d] = 1
                b = c
            t_ns[d, k] = mid
            latency_ns[d, k] = b - a
        k += 1
        progress[0] = k
        deadline_ns += period_ns
    return k, deadline_ns
