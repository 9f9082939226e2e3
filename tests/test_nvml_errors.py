"""NVML failures become the project's exceptions through one table: each one the stand-in makes.

Return codes are written as numbers from NVML's nvml.h (not taken from pynvml), so a
wrong row in the table fails here.
"""

import re
from pathlib import Path

import pytest

from bench.devices import nvml
from bench.errors import NoSensor, SensorError
from bench.kernels import sampling
from bench.sampler import Sampler

ROOT = Path(__file__).resolve().parents[1]

# nvml.h: NOT_SUPPORTED 3, NO_PERMISSION 4, NOT_FOUND 6, DRIVER_NOT_LOADED 9,
# LIBRARY_NOT_FOUND 12, FUNCTION_NOT_FOUND 13, GPU_NOT_FOUND 28
NO_SENSOR_CODES = [3, 4, 6, 9, 12, 13, 28]
# UNINITIALIZED 1, INVALID_ARGUMENT 2, INSUFFICIENT_SIZE 7, TIMEOUT 10, GPU_IS_LOST 15,
# RESET_REQUIRED 16, LIB_RM_VERSION_MISMATCH 18, NO_DATA 21, UNKNOWN 999, and a code NVML
# does not define
SENSOR_ERROR_CODES = [1, 2, 7, 10, 15, 16, 18, 21, 999, 12345]


@pytest.mark.parametrize("code", NO_SENSOR_CODES)
def test_absent_unsupported_forbidden_or_missing_library_is_no_sensor(code):
    exc = nvml.error(code, "energy counter")
    assert type(exc) is NoSensor
    assert str(exc).startswith("energy counter: ")


@pytest.mark.parametrize("code", SENSOR_ERROR_CODES)
def test_every_other_code_is_a_sensor_error(code):
    exc = nvml.error(code, "power")
    assert type(exc) is SensorError  # not NoSensor: something that should work failed
    assert str(exc).startswith("power: ")


def test_reason_texts():
    assert nvml.SUCCESS == 0 and nvml.GPU_IS_LOST == 15
    assert "not supported" in str(nvml.error(3, "x"))
    assert "permission" in str(nvml.error(4, "x"))
    assert "libnvidia-ml.so.1" in str(nvml.error(12, "x"))
    assert "lacks" in str(nvml.error(13, "x"))
    lost = str(nvml.error(15, "GPU 1"))
    assert lost.startswith("GPU 1: GPU is lost") and "reset" in lost
    assert str(nvml.error(12345, "x")) == "x: NVML error 12345"
    # the sampler's per-sample codes in words, from the same table
    assert nvml.status_text(15) == lost.removeprefix("GPU 1: ")
    assert nvml.status_text(3) == "not supported on this GPU"
    assert nvml.status_text(12345) == "NVML error 12345"
    assert nvml.status_text(None) == "no samples"


def test_kernel_lost_code_agrees_with_the_table():
    # the numba loop cannot call into nvml.py, so it keeps its own copy of this one code
    assert sampling.NVML_ERROR_GPU_IS_LOST == nvml.GPU_IS_LOST


def test_only_the_nvml_adapter_imports_pynvml():
    imports = re.compile(r"^\s*(import|from)\s+pynvml\b", re.M)
    offenders = [str(p.relative_to(ROOT)) for d in ("bench", "kernels")
                 for p in (ROOT / d).rglob("*.py") if imports.search(p.read_text())]
    assert offenders == ["bench/devices/nvml.py"]


def test_missing_counter_is_no_sensor(fake_nvml):
    fake_nvml("base_w=100,counter=0")
    nvml.init()
    try:
        h = nvml.handle(0)
        with pytest.raises(NoSensor, match="^energy counter: not supported on this GPU$"):
            nvml.read_energy_j(h)
        # the field call succeeds while the field itself fails: still translated
        with pytest.raises(NoSensor, match="^field 83: not supported"):
            nvml.read_field_power_w(h, nvml.FIELD_TOTAL_ENERGY)
        assert nvml.read_field_power_w(h, nvml.FIELD_POWER_INSTANT) == pytest.approx(100.0)
    finally:
        nvml.shutdown()


def test_missing_field_call_is_no_sensor(fake_nvml):
    fake_nvml("base_w=100,fields=0")
    nvml.init()
    try:
        h = nvml.handle(0)
        with pytest.raises(NoSensor, match="^field 186: not supported"):
            nvml.read_field_power_w(h, nvml.FIELD_POWER_INSTANT)
        assert nvml.supported(h) == {"energy_counter": True, "power_usage": True,
                                     "power_instant_field": False,
                                     "power_average_field": False}
    finally:
        nvml.shutdown()


def test_no_such_gpu_is_a_sensor_error(fake_nvml):
    fake_nvml("base_w=100")
    nvml.init()
    try:
        with pytest.raises(SensorError, match="^GPU 3: invalid argument") as e:
            nvml.handle(3)
        assert type(e.value) is SensorError
    finally:
        nvml.shutdown()


def test_read_after_shutdown_is_a_sensor_error(fake_nvml):
    fake_nvml("base_w=100")
    nvml.init()
    h = nvml.handle(0)
    nvml.shutdown()
    with pytest.raises(SensorError, match="^power: NVML is not initialised$"):
        nvml.read_power_w(h)


def test_lost_gpu_is_a_sensor_error_with_a_clear_message(fake_nvml):
    fake_nvml("base_w=100;base_w=100,lost_after_s=0")
    nvml.init()
    try:
        h = nvml.handle(1)
        with pytest.raises(SensorError, match="^energy counter: GPU is lost") as e:
            nvml.read_energy_j(h)
        assert type(e.value) is SensorError
        with pytest.raises(SensorError, match="^compute processes: GPU is lost"):
            nvml.compute_pids(1)
    finally:
        nvml.shutdown()
    # discovery reads the UUID, which fails on a lost GPU: translated, never a pynvml error
    with pytest.raises(SensorError, match="^GPU 1 UUID: GPU is lost"):
        nvml.discover()


def test_sampled_lost_gpu_reason_comes_from_the_table(fake_nvml):
    # lost a little after start, so the start-up support checks still see a GPU
    fake_nvml("base_w=100,lost_after_s=0.3")
    with Sampler([0], rate_hz=200) as s:
        # time, not a sample count, decides when it is lost: wait for a sample after it
        assert s.wait_past(s.started_ns + 600_000_000, timeout_s=30.0)
    (tr,) = s.traces()
    assert tr.last_error() == 15
    assert s.lost() == {0: True}
    assert nvml.status_text(tr.last_error()).startswith("GPU is lost")


def test_compute_processes_grow_their_buffer(fake_nvml):
    # the stand-in answers INSUFFICIENT_SIZE to a small buffer; pynvml retries: no error
    fake_nvml("base_w=100,procs=3")
    assert nvml.compute_pids(0) == [4000000, 4000001, 4000002]
