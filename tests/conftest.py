"""Shared fixtures: the stand-in libnvidia-ml.so.1, built with gcc, and its ground truth."""

from __future__ import annotations

import ctypes
import math
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

# One intra-op thread for torch (here and in every `bench` the tests start, which inherit
# the environment). The tests' models are tiny and gain nothing from threads; on a busy
# 2-core machine OpenMP's spin-waiting threads fight the load for the cores. Measured, a
# two-cell stand-in `bench run`: 17.5 -> 12.2 s of CPU on a quiet machine (the same wall
# time), 20.7 -> 16.1 s of wall time beside a 2-process CPU hog (two runs each). A value
# the caller set is kept. `bench run` itself leaves torch's threads as they are.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# The GPU locks of this session's runs in a folder of its own (a test that needs another
# sets it): two test sessions on one machine, a developer's and CI's, start stand-in GPUs
# with the same UUIDs, and in the default folder (the system temp folder) the runs of one
# would refuse the other's GPUs as "being measured by another bench run".
if not os.environ.get("JOULEBENCH_LOCK_DIR"):
    os.environ["JOULEBENCH_LOCK_DIR"] = tempfile.mkdtemp(prefix="joulebench-test-locks-")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

HERE = Path(__file__).resolve().parent
FAKE_SRC = HERE / "fake_nvml" / "fake_nvml.c"


def sigint_default() -> None:
    """``preexec_fn`` for a child a test will Ctrl-C: SIGINT back to its default.

    A job that a non-interactive shell starts in the background (``cmd &``) ignores SIGINT,
    and children inherit that: Python then installs no KeyboardInterrupt handler, so the
    test's SIGINT does nothing and the run ends with 0 instead of 130. Seen when the suite
    was started in the background.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def build_fake_nvml(out_dir: Path) -> Path:
    """Compile the stand-in library into out_dir/libnvidia-ml.so.1 (SONAME included)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lib = out_dir / "libnvidia-ml.so.1"
    if lib.exists() and lib.stat().st_mtime >= FAKE_SRC.stat().st_mtime:
        return lib
    tmp = out_dir / f".lib-{os.getpid()}.so"
    subprocess.run([shutil.which("gcc") or "gcc", "-O2", "-shared", "-fPIC",
                    "-pthread", "-Wl,-soname,libnvidia-ml.so.1", "-o", str(tmp), str(FAKE_SRC),
                    "-lm"],
                   check=True, capture_output=True, text=True)
    os.replace(tmp, lib)
    return lib


@pytest.fixture(scope="session")
def fake_nvml_dir() -> Path:
    """Folder holding the built stand-in (for LD_LIBRARY_PATH in subprocesses)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc is missing: cannot build the stand-in libnvidia-ml.so.1")
    return build_fake_nvml(HERE / "_build").parent


def install_fake_nvml(lib_dir: Path) -> None:
    """Make pynvml in this process use the stand-in (once loaded, it stays)."""
    import pynvml

    if pynvml.nvmlLib is None:
        pynvml.nvmlLib = ctypes.CDLL(str(lib_dir / "libnvidia-ml.so.1"),
                                     mode=ctypes.RTLD_GLOBAL)
        pynvml._nvmlGetFunctionPointer_cache.clear()


@pytest.fixture
def fake_nvml(fake_nvml_dir, monkeypatch):
    """Install the stand-in in this process; call it with a device spec to configure.

    The spec is FAKE_NVML_DEVICES (see tests/fake_nvml/fake_nvml.c). Once loaded, the
    library stays in the process (dlopen finds it by SONAME); after the test the spec is
    cleared, so it shows no GPU.
    """
    from bench.devices import nvml

    install_fake_nvml(fake_nvml_dir)
    assert nvml._init_count == 0, "a previous test left NVML initialised"

    def configure(spec: str):
        monkeypatch.setenv("FAKE_NVML_DEVICES", spec)
        return spec

    yield configure
    assert nvml._init_count == 0, "the test left NVML initialised"
    monkeypatch.delenv("FAKE_NVML_DEVICES", raising=False)


def true_energy_j(t_s: float, base_w: float = 300.0, amp_w: float = 0.0,
                  period_s: float = 1.0) -> float:
    """The stand-in's exact cumulative energy at CLOCK_MONOTONIC time t_s."""
    return base_w * t_s + amp_w * period_s / (2 * math.pi) * (
        1 - math.cos(2 * math.pi * t_s / period_s))


class FakeTruth:
    """The stand-in's test calls: power steps and the exact energy of any past interval.

    Uses the library pynvml loaded, so it sees the same devices and history as NVML.
    Device numbers are the stand-in's (NVML indices); times are CLOCK_MONOTONIC ns, the
    clock of ``time.monotonic_ns()``.
    """

    def __init__(self, lib) -> None:
        ll, dbl, i = ctypes.c_longlong, ctypes.c_double, ctypes.c_int
        self._lib = lib
        for name, res, args in (
                ("fake_nvml_set_power_w_at", ll, [i, dbl, ll]),
                ("fake_nvml_true_energy_j", dbl, [i, ll, ll]),
                ("fake_nvml_true_power_w", dbl, [i, ll]),
                ("fake_nvml_counter_refresh_ns", ll, [i, ll]),
                ("fake_nvml_history", ctypes.c_long,
                 [i, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_long])):
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = res, args

    def set_power_w(self, dev: int, power_w: float, t_ns: int = 0) -> int:
        """Step device ``dev`` to ``power_w`` at ``t_ns`` (0: now); returns the step time."""
        t = self._lib.fake_nvml_set_power_w_at(dev, power_w, t_ns)
        if t < 0:
            raise ValueError(f"no step: device {dev} unknown or {t_ns} before its last step")
        return int(t)

    def true_energy_j(self, dev: int, t0_ns: int, t1_ns: int) -> float:
        return float(self._lib.fake_nvml_true_energy_j(dev, int(t0_ns), int(t1_ns)))

    def true_power_w(self, dev: int, t_ns: int) -> float:
        return float(self._lib.fake_nvml_true_power_w(dev, int(t_ns)))

    def counter_refresh_ns(self, dev: int, t_ns: int) -> int:
        """The time of the counter's last refresh at or before ``t_ns``."""
        return int(self._lib.fake_nvml_counter_refresh_ns(dev, int(t_ns)))

    def history(self, dev: int) -> tuple[np.ndarray, np.ndarray]:
        """The step history: breakpoint times (ns) and the step power (W) from each on."""
        n = self._lib.fake_nvml_history(dev, None, None, 0)
        t = np.zeros(max(n, 0), np.int64)
        w = np.zeros(max(n, 0), np.float64)
        self._lib.fake_nvml_history(dev, t.ctypes.data, w.ctypes.data, n)
        return t, w


@pytest.fixture
def fake_truth(fake_nvml):
    """(configure, truth): the ``fake_nvml`` fixture and a :class:`FakeTruth` on its library."""
    import pynvml

    return fake_nvml, FakeTruth(pynvml.nvmlLib)


def stand_in_gpu_run(fake_nvml_dir: Path, out: Path, spec: str,
                     batch_sizes: tuple[int, ...] = (1, 2)) -> Path:
    """A real run through the GPU path (stand-in NVML ``spec``, model on the CPU), with a
    trace: tiny-llama fp32, input 8, output 4, 0.3 s windows, 2 repeats, 0.3 s idle."""
    from bench import runner
    from bench.devices import Device, nvml

    install_fake_nvml(fake_nvml_dir)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FAKE_NVML_DEVICES", spec)
        mp.setenv("LD_LIBRARY_PATH", str(fake_nvml_dir))
        mp.setenv("JOULEBENCH_MODEL_DEVICE", "cpu")
        mp.setenv("JOULEBENCH_LOCK_DIR", str(out.parent))
        dev = Device("cuda", 0, "NVIDIA H200 (stand-in)", "GPU-fake", {"power_limit_w": 700.0})
        cfg = runner.SweepConfig(batch_sizes=batch_sizes, input_lens=(8,), output_lens=(4,),
                                 dtype="fp32", min_window_s=0.3, repeats=2, idle_s=0.3)
        runner.execute(runner.start_run(cfg, [dev], out))
    assert nvml._init_count == 0
    return out


@pytest.fixture(scope="session")
def stand_in_run(fake_nvml_dir, tmp_path_factory) -> Path:
    """One stand-in GPU run (250 W, counter updated every 100 ms; batch 1 and 2) shared by
    the validation tests: read it, copy it before changing anything."""
    return stand_in_gpu_run(fake_nvml_dir, tmp_path_factory.mktemp("stand-in") / "run",
                            "base_w=250,update_ms=100")

