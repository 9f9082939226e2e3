"""NVIDIA GPUs through NVML: the only module that imports pynvml.

Milliwatts and millijoules exist only here; everything leaving this module is in W and J.
NVML errors, a missing driver library and a missing symbol all become the project's own
exceptions (:class:`bench.errors.NoSensor`, :class:`bench.errors.SensorError`).
"""

from __future__ import annotations

import threading
from dataclasses import asdict, dataclass

import pynvml

from bench.errors import NoSensor, SensorError

FIELD_TOTAL_ENERGY = 83  # NVML_FI_DEV_TOTAL_ENERGY_CONSUMPTION, mJ
FIELD_POWER_AVERAGE = 185  # NVML_FI_DEV_POWER_AVERAGE, mW
FIELD_POWER_INSTANT = 186  # NVML_FI_DEV_POWER_INSTANT, mW

_lock = threading.Lock()
_init_count = 0


def _translate(exc: pynvml.NVMLError, what: str) -> SensorError:
    code = getattr(exc, "value", None)
    if code in (pynvml.NVML_ERROR_LIBRARY_NOT_FOUND, pynvml.NVML_ERROR_DRIVER_NOT_LOADED):
        return NoSensor(f"no NVIDIA driver: {exc}")
    if code == pynvml.NVML_ERROR_FUNCTION_NOT_FOUND:
        return NoSensor(f"{what}: the NVML library lacks this function ({exc})")
    if code == pynvml.NVML_ERROR_NOT_SUPPORTED:
        return NoSensor(f"{what}: not supported on this GPU")
    if code == pynvml.NVML_ERROR_GPU_IS_LOST:
        return SensorError(f"{what}: GPU is lost ({exc})")
    return SensorError(f"{what}: {exc}")


def init() -> None:
    """Initialise NVML (reference-counted, like nvmlInit itself).

    Raises:
        NoSensor: the driver library is missing or no driver is loaded.
        SensorError: NVML failed otherwise.
    """
    global _init_count
    with _lock:
        try:
            pynvml.nvmlInit()
        except pynvml.NVMLError as exc:
            raise _translate(exc, "nvmlInit") from exc
        except OSError as exc:  # a broken library file
            raise NoSensor(f"no usable NVIDIA driver library: {exc}") from exc
        _init_count += 1


def shutdown() -> None:
    """Balance one :func:`init`; errors on shutdown are ignored (nothing is left to save)."""
    global _init_count
    with _lock:
        if _init_count <= 0:
            return
        _init_count -= 1
        try:
            pynvml.nvmlShutdown()
        except pynvml.NVMLError:
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


def _maybe(fn, *args):
    try:
        return fn(*args)
    except pynvml.NVMLError:
        return None


def _str(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def handle(index: int):
    """The NVML handle of GPU ``index`` (NVML index, as nvidia-smi shows it)."""
    try:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    except pynvml.NVMLError as exc:
        raise _translate(exc, f"GPU {index}") from exc


def read_energy_j(h) -> float:
    """The GPU's cumulative energy counter in J (mJ since the driver loaded)."""
    try:
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(h) * 1e-3
    except pynvml.NVMLError as exc:
        raise _translate(exc, "energy counter") from exc


def read_power_w(h) -> float:
    """nvmlDeviceGetPowerUsage in W (a 1 s average on Ampere and newer, except GA100)."""
    try:
        return pynvml.nvmlDeviceGetPowerUsage(h) * 1e-3
    except pynvml.NVMLError as exc:
        raise _translate(exc, "power") from exc


def read_field_power_w(h, field_id: int) -> float:
    """One power field (185 average, 186 instant) in W."""
    try:
        values = pynvml.nvmlDeviceGetFieldValues(h, [field_id])
    except pynvml.NVMLError as exc:
        raise _translate(exc, f"field {field_id}") from exc
    v = values[0]
    if v.nvmlReturn != pynvml.NVML_SUCCESS:
        raise _translate(pynvml.NVMLError(v.nvmlReturn), f"field {field_id}")
    return v.value.uiVal * 1e-3


def gpu_info(index: int) -> GpuInfo:
    """Discover one GPU's identity and settings (reads only; never changes a setting)."""
    h = handle(index)
    limit_mw = _maybe(pynvml.nvmlDeviceGetEnforcedPowerLimit, h)
    mem = _maybe(pynvml.nvmlDeviceGetMemoryInfo, h)
    mig = _maybe(pynvml.nvmlDeviceGetMigMode, h)
    driver = _maybe(pynvml.nvmlSystemGetDriverVersion)
    try:
        read_energy_j(h)
        has_counter = True
    except SensorError:
        has_counter = False
    return GpuInfo(
        index=index,
        uuid=_str(pynvml.nvmlDeviceGetUUID(h)),
        name=_str(pynvml.nvmlDeviceGetName(h)),
        driver=_str(driver) if driver is not None else None,
        power_limit_w=limit_mw * 1e-3 if limit_mw is not None else None,
        memory_total_bytes=int(mem.total) if mem is not None else None,
        sm_clock_max_mhz=_maybe(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_SM),
        mem_clock_max_mhz=_maybe(pynvml.nvmlDeviceGetMaxClockInfo, h, pynvml.NVML_CLOCK_MEM),
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
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            raise _translate(exc, "nvmlDeviceGetCount") from exc
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

    return int(ctypes.cast(h, ctypes.c_void_p).value)


def function_addresses(names) -> dict[str, int]:
    """Addresses of NVML C functions in the library pynvml loaded (after :func:`init`).

    Raises:
        NoSensor: the library lacks one of them.
    """
    import ctypes

    lib = pynvml.nvmlLib
    if lib is None:
        raise SensorError("NVML is not initialised")
    out = {}
    for name in names:
        try:
            out[name] = int(ctypes.cast(getattr(lib, name), ctypes.c_void_p).value)
        except AttributeError:
            raise NoSensor(f"the NVML library lacks {name}") from None
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
        try:
            procs = pynvml.nvmlDeviceGetComputeRunningProcesses(h)
        except pynvml.NVMLError as exc:
            raise _translate(exc, "compute processes") from exc
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
        try:
            count = pynvml.nvmlDeviceGetCount()
        except pynvml.NVMLError as exc:
            raise _translate(exc, "nvmlDeviceGetCount") from exc
        found: list[GpuInfo] = []
        failed: list[tuple[int, str]] = []
        for i in range(count):
            try:
                found.append(gpu_info(i))
            except SensorError as exc:
                failed.append((i, str(exc)))
            except pynvml.NVMLError as exc:  # UUID or name: not translated by gpu_info
                failed.append((i, str(_translate(exc, f"GPU {i}"))))
        return found, failed
    finally:
        shutdown()
