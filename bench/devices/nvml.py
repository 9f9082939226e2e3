"""NVIDIA GPUs through NVML: the only module that imports pynvml.

Milliwatts and millijoules exist only here; everything leaving this module is in W and J.
Every NVML call goes through one wrapper (:func:`_call`) and one table of return codes
(``_ERRORS``), so NVML errors, a missing driver library and a missing symbol all become the
project's own exceptions (:class:`bench.errors.NoSensor`, :class:`bench.errors.SensorError`)
with the same reason text everywhere; the sampler's per-sample codes are put into words by
:func:`status_text`, from the same table.
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import pynvml

from bench.errors import NoSensor, SensorError

FIELD_TOTAL_ENERGY = 83  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, mJ
FIELD_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE, mW
FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT, mW

SUCCESS = pynvml.NVML_SUCCESS  # the return code of a read that worked (sampler status)
GPU_IS_LOST = pynvml.NVML_ERROR_GPU_IS_LOST

# The one table of NVML return codes: (exception, reason). NoSensor where the reading does
# not exist here (absent, unsupported, not permitted, no library or driver): the value is
# null for good. SensorError for everything else: something that should have worked failed.
_ERRORS: dict[int, tuple[type[SensorError], str]] = {
    pynvml.NVML_ERROR_UNINITIALIZED: (SensorError, "NVML is not initialised"),
    pynvml.NVML_ERROR_INVALID_ARGUMENT: (SensorError, "invalid argument (no such GPU?)"),
    pynvml.NVML_ERROR_NOT_SUPPORTED: (NoSensor, "not supported on this GPU"),
    pynvml.NVML_ERROR_NO_PERMISSION: (NoSensor, "no permission to read it"),
    pynvml.NVML_ERROR_NOT_FOUND: (NoSensor, "not found"),
    pynvml.NVML_ERROR_DRIVER_NOT_LOADED: (NoSensor, "no NVIDIA driver is loaded"),
    pynvml.NVML_ERROR_LIBRARY_NOT_FOUND: (
        NoSensor, "no NVIDIA driver: the NVML library (libnvidia-ml.so.1) is not found"),
    pynvml.NVML_ERROR_FUNCTION_NOT_FOUND: (NoSensor, "the NVML library lacks this function"),
    pynvml.NVML_ERROR_GPU_NOT_FOUND: (NoSensor, "no such GPU"),
    pynvml.NVML_ERROR_GPU_IS_LOST: (
        SensorError, "GPU is lost: it stopped responding or fell off the bus; its readings "
        "after this point are missing (the GPU needs a reset or a reboot)"),
    pynvml.NVML_ERROR_RESET_REQUIRED: (SensorError, "the GPU needs a reset"),
    pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH: (
        SensorError, "the NVML library and the kernel driver versions differ"),
    pynvml.NVML_ERROR_TIMEOUT: (SensorError, "timed out"),
    pynvml.NVML_ERROR_NO_DATA: (SensorError, "no data yet"),
    pynvml.NVML_ERROR_INSUFFICIENT_SIZE: (SensorError, "buffer too small"),
}

_lock = threading.Lock()
_init_count = 0
# On a Ray cluster (bench.cluster) a GPU's index is cluster-wide: its node's first index
# plus NVML's index on the node. A device session there sets the base of its node once;
# every index this module takes or gives is then the cluster-wide one.
_index_base = 0


def set_index_base(base: int) -> None:
    """Number this process's GPUs from ``base`` (NVML index ``i`` is GPU ``base + i``)."""
    global _index_base
    _index_base = int(base)


def status_text(code: int | None) -> str:
    """An NVML return code in words (the sampler's per-sample status); None: no samples."""
    if code is None:
        return "no samples"
    if code in _ERRORS:
        return _ERRORS[code][1]
    return f"NVML error {code}"


def error(code: int, what: str) -> SensorError:
    """The project's exception for NVML return ``code`` of the read ``what``."""
    cls = _ERRORS[code][0] if code in _ERRORS else SensorError
    return cls(f"{what}: {status_text(code)}")


def _call(what: str, fn, *args):
    """Call one pynvml function; every NVML failure leaves as NoSensor or SensorError."""
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        raise error(exc.value, what) from exc
    except OSError as exc:  # the library file exists but cannot be loaded
        raise NoSensor(f"{what}: no usable NVIDIA driver library ({exc})") from exc


def init() -> None:
    """Initialise NVML (reference-counted, like nvmlInit itself).

    Raises:
        NoSensor: the driver library is missing or no driver is loaded.
        SensorError: NVML failed otherwise.
    """
    global _init_count
    with _lock:
        _call("NVML", pynvml.nvmlInit)
        _init_count += 1


def shutdown() -> None:
    """Balance one :func:`init`; errors on shutdown are ignored (nothing is left to save)."""
    global _init_count
    with _lock:
        if _init_count <= 0:
            return
        _init_count -= 1
        try:
            _call("nvmlShutdown", pynvml.nvmlShutdown)
        except SensorError:
            pass


@dataclass(frozen=True)
class GpuInfo:
    """Provenance of one GPU as NVML reports it; None where NVML could not say."""

    index: int
    uuid: str
    name: str
    driver: str | None
    power_limit_w: float | None
    memory_total_bytes: int | None
    sm_clock_max_mhz: int | None
    mem_clock_max_mhz: int | None
    mig_mode: bool | None
    has_energy_counter: bool

    def to_dict(self) -> dict:
        return asdict(self)


def _maybe(what: str, fn, *args):
    """An optional provenance read: None where NVML cannot say (the reason is not kept)."""
    try:
        return _call(what, fn, *args)
    except SensorError:
        return None


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def handle(index: int):
    """The NVML handle of GPU ``index`` (NVML index, as nvidia-smi shows it)."""
    return _call(f"GPU {index}", pynvml.nvmlDeviceGetHandleByIndex, index - _index_base)


def read_energy_j(h) -> float:
    """The GPU's cumulative energy counter in J (mJ since the driver loaded)."""
    return _call("energy counter", pynvml.nvmlDeviceGetTotalEnergyConsumption, h) * 1e-3


def read_power_w(h) -> float:
    """nvmlDeviceGetPowerUsage in W (a 1 s average on Ampere and newer, except GA100)."""
    return _call("power", pynvml.nvmlDeviceGetPowerUsage, h) * 1e-3


def read_field_power_w(h, field_id: int) -> float:
    """One power field (185 average, 186 instant) in W."""
    what = f"field {field_id}"
    v = _call(what, pynvml.nvmlDeviceGetFieldValues, h, [field_id])[0]
    if v.nvmlReturn != SUCCESS:  # the call can succeed while the field itself failed
        raise error(v.nvmlReturn, what)
    return v.value.uiVal * 1e-3


def gpu_info(index: int) -> GpuInfo:
    """Discover one GPU's identity and settings (reads only; never changes a setting)."""
    h = handle(index)
    limit_mw = _maybe("power limit", pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
    mem = _maybe("memory", pynvml.nvmlDeviceGetMemoryInfo, h)
    mig = _maybe("MIG mode", pynvml.nvmlDeviceGetMigMode, h)
    driver = _maybe("driver version", pynvml.nvmlSystemGetDriverVersion)
    sm_mhz = _maybe("SM clock", pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM)
    mem_mhz = _maybe("memory clock", pynvml.nvmlDeviceGetMaxClockInfo, h,
                     pynvml.NVML_CLOCK_MEM)
    try:
        read_energy_j(h)
        has_counter = True
    except SensorError:
        has_counter = False
    return GpuInfo(
        index=index,
        uuid=_str(_call(f"GPU {index} UUID", pynvml.nvmlDeviceGetUUID, h)),
        name=_str(_call(f"GPU {index} name", pynvml.nvmlDeviceGetName, h)),
        driver=_str(driver) if driver is not None else None,
        power_limit_w=limit_mw * 1e-3 if limit_mw is not None else None,
        memory_total_bytes=int(mem.total) if mem is not None else None,
        sm_clock_max_mhz=sm_mhz,
        mem_clock_max_mhz=mem_mhz,
        mig_mode=bool(mig[0]) if mig is not None else None,
        has_energy_counter=has_counter,
    )


def discover() -> list[GpuInfo]:
    """Every GPU NVML sees, by NVML index.

    Raises:
        NoSensor: no driver library or no driver.
    """
    init()
    try:
        count = _call("GPU count", pynvml.nvmlDeviceGetCount)
        return [gpu_info(i) for i in range(count)]
    finally:
        shutdown()


class NvmlEnergySource:
    """Cumulative GPU energy in J from NVML's counter, for the meter's window edges.

    Holds an NVML reference (init in the constructor, :meth:`close` to release).
    """

    scope = "gpu"
    method = "counter"

    def __init__(self, index: int) -> None:
        init()
        try:
            self._handle = handle(index)
        except SensorError:
            shutdown()
            raise
        self.index = index
        self.name = f"nvml-gpu{index}"
        self.device = f"gpu{index}"
        self.description = f"NVML total energy counter of GPU {index}"
        self._closed = False

    def read_j(self) -> float:
        return read_energy_j(self._handle)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            shutdown()


def handle_address(h) -> int:
    """The NVML device handle as an integer: the pointer NVML's C functions expect."""
    import ctypes

    return int(ctypes.cast(h, ctypes.c_void_p).value or 0)


def function_addresses(names) -> dict[str, int]:
    """Addresses of NVML C functions in the library pynvml loaded (after :func:`init`).

    Raises:
        NoSensor: the library lacks one of them.
    """
    import ctypes

    lib = pynvml.nvmlLib
    if lib is None:
        raise error(pynvml.NVML_ERROR_UNINITIALIZED, "NVML functions")
    out = {}
    for name in names:
        try:
            out[name] = int(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value or 0)
        except AttributeError:
            raise error(pynvml.NVML_ERROR_FUNCTION_NOT_FOUND, name) from None
    return out


def supported(h) -> dict[str, bool]:
    """Which readings this GPU answers: energy counter, power usage, fields 186 and 185."""
    out = {}
    for key, fn in (("energy_counter", lambda: read_energy_j(h)),
                    ("power_usage", lambda: read_power_w(h)),
                    ("power_instant_field", lambda: read_field_power_w(h, FIELD_POWER_INSTANT)),
                    ("power_average_field", lambda: read_field_power_w(h, FIELD_POWER_AVERAGE))):
        try:
            fn()
            out[key] = True
        except SensorError:
            out[key] = False
    return out


def compute_pids(index: int) -> list[int]:
    """PIDs of the processes computing on GPU ``index`` (NVML's view)."""
    init()
    try:
        h = handle(index)
        procs = _call("compute processes", pynvml.nvmlDeviceGetComputeRunningProcesses, h)
        return [int(p.pid) for p in procs]
    finally:
        shutdown()


# --- Per-GPU discovery (issue 11): one GPU that fails never hides the others. ---

def discover_each() -> tuple[list[GpuInfo], list[tuple[int, str]]]:
    """Every GPU NVML sees that answers, and (index, one-line reason) for each that does
    not (its handle, UUID or name fails).

    Raises:
        NoSensor: no driver library or no driver.
        SensorError: NVML cannot count its GPUs.
    """
    init()
    try:
        count = _call("nvmlDeviceGetCount", pynvml.nvmlDeviceGetCount)
        found: list[GpuInfo] = []
        failed: list[tuple[int, str]] = []
        for i in range(count):
            try:
                found.append(gpu_info(_index_base + i))  # NVML failures translated there
            except SensorError as exc:
                failed.append((_index_base + i, str(exc)))
        return found, failed
    finally:
        shutdown()


# --- Thermal and clock state (issue 17): temperature, clocks, clock event reasons. ---

def read_temperature_c(h) -> float:
    """The GPU's core temperature (NVML_TEMPERATURE_GPU), C."""
    return float(_call("temperature", pynvml.nvmlDeviceGetTemperature, h,
                       pynvml.NVML_TEMPERATURE_GPU))


def read_clock_mhz(h, which: str) -> float:
    """The current ``sm`` or ``mem`` clock, MHz."""
    kind = {"sm": pynvml.NVML_CLOCK_SM, "mem": pynvml.NVML_CLOCK_MEM}[which]
    return float(_call(f"{which} clock", pynvml.nvmlDeviceGetClockInfo, h, kind))


def read_clock_reasons(h) -> int:
    """Why the clocks are what they are now: NVML's clock event reasons bitmask.

    ``nvmlDeviceGetCurrentClocksEventReasons`` (drivers 535 and newer), else the older
    ``nvmlDeviceGetCurrentClocksThrottleReasons`` (same bits).
    """
    try:
        return int(_call("clock event reasons",
                         pynvml.nvmlDeviceGetCurrentClocksEventReasons, h))
    except NoSensor:
        return int(_call("clock throttle reasons",
                         pynvml.nvmlDeviceGetCurrentClocksThrottleReasons, h))
# --- Power limit (issue 15): the only place a GPU setting is changed. ---

@dataclass(frozen=True)
class PowerLimits:
    """A GPU's power management limits in W, as NVML reports them."""

    current_w: float
    default_w: float
    min_w: float
    max_w: float
    enforced_w: float


def power_limits(index: int) -> PowerLimits:
    """GPU ``index``'s power limit now, its default, its min/max constraints and the
    enforced limit (reads only).

    Raises:
        NoSensor, SensorError: NVML cannot say (the table's reason).
    """
    init()
    try:
        h = handle(index)
        lo, hi = _call("power limit constraints",
                       pynvml.nvmlDeviceGetPowerManagementLimitConstraints, h)
        return PowerLimits(
            current_w=_call("power limit", pynvml.nvmlDeviceGetPowerManagementLimit, h) * 1e-3,
            default_w=_call("default power limit",
                            pynvml.nvmlDeviceGetPowerManagementDefaultLimit, h) * 1e-3,
            min_w=lo * 1e-3, max_w=hi * 1e-3,
            enforced_w=_call("enforced power limit",
                             pynvml.nvmlDeviceGetEnforcedPowerLimit, h) * 1e-3)
    finally:
        shutdown()


def set_power_limit_w(index: int, limit_w: float) -> float:
    """Set GPU ``index``'s power management limit (needs root); returns the enforced limit, W.

    Raises:
        NoSensor: no permission (not root), not supported, no driver.
        SensorError: a value the GPU refuses, or NVML failed otherwise.
    """
    init()
    try:
        h = handle(index)
        what = f"setting GPU {index}'s power limit to {limit_w:g} W"
        try:
            _call(what, pynvml.nvmlDeviceSetPowerManagementLimit, h, int(round(limit_w * 1000)))
        except NoSensor as exc:
            cause = exc.__cause__
            if isinstance(cause, pynvml.NVMLError) and \
                    cause.value == pynvml.NVML_ERROR_NO_PERMISSION:
                raise NoSensor(f"{what}: no permission (changing a GPU's power limit needs "
                               "root on the node)") from cause
            raise
        return _call("enforced power limit", pynvml.nvmlDeviceGetEnforcedPowerLimit, h) * 1e-3
    finally:
        shutdown()


def sm_clock_mhz(index: int) -> int | None:
    """GPU ``index``'s SM clock now, MHz, or None where NVML cannot say."""
    init()
    try:
        return _maybe("SM clock", pynvml.nvmlDeviceGetClockInfo, handle(index),
                      pynvml.NVML_CLOCK_SM)
    finally:
        shutdown()
