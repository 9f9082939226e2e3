"""A GPU's temperature, SM and memory clocks and clock event reasons, polled on a light thread.

The power/energy sampling loop (``bench.sampler``) is left alone: these fields change
slowly, so a Python thread reads them every ``period_s`` (100 ms), and the meter takes one
reading just before each window's start edge and one just after its end edge. A window's
``thermal`` block (:meth:`ThermalMonitor.window`) holds the readings at its start and end,
the min/max over every reading from the one to the other, and the clock event reasons
OR-ed over them, by name. A reading NVML does not support here is null for good; one
that fails once is left out of that reading. Reasons are NVML's *current* state at each
reading: a slowdown shorter than the polling period can fall between two readings.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

from bench.devices import nvml
from bench.errors import NoSensor, SensorError
from bench.results.thermal import reason_names

FIELDS = ("temp_c", "sm_mhz", "mem_mhz", "reasons")


@dataclass(frozen=True)
class ThermalReading:
    """One reading; a field is None where it was not read."""

    t_ns: int
    temp_c: float | None
    sm_mhz: float | None
    mem_mhz: float | None
    reasons: int | None


class ThermalMonitor:
    """Polls one GPU (NVML index) every ``period_s`` while started; keeps the last hour."""

    def __init__(self, index: int, period_s: float = 0.1, keep: int = 36_000) -> None:
        if not period_s > 0:
            raise ValueError("period_s must be positive")
        self.index = index
        self.period_s = float(period_s)
        self._readings: deque[ThermalReading] = deque(maxlen=keep)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._handle = None
        self.supported: dict[str, bool] = {}

    def _readers(self):
        h = self._handle
        return {"temp_c": lambda: nvml.read_temperature_c(h),
                "sm_mhz": lambda: nvml.read_clock_mhz(h, "sm"),
                "mem_mhz": lambda: nvml.read_clock_mhz(h, "mem"),
                "reasons": lambda: nvml.read_clock_reasons(h)}

    def start(self) -> ThermalMonitor:
        """Initialise NVML, find which readings this GPU answers, start polling."""
        nvml.init()
        try:
            self._handle = nvml.handle(self.index)
            for name, read in self._readers().items():
                try:
                    read()
                    self.supported[name] = True
                except NoSensor:
                    self.supported[name] = False
                except SensorError:  # a transient failure: tried again at every reading
                    self.supported[name] = True
        except BaseException:
            nvml.shutdown()
            raise
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="joulebench-thermal",
                                        daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.period_s):
            self.sample_now()

    def stop(self) -> None:
        """Stop and join the thread, release NVML. Safe to call twice."""
        t = self._thread
        if t is None:
            return
        self._stop.set()
        t.join()
        self._thread = None
        nvml.shutdown()

    def __enter__(self) -> ThermalMonitor:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    def sample_now(self) -> ThermalReading | None:
        """Take one reading now and keep it; None when the monitor is not running."""
        if self._thread is None or self._handle is None:
            return None
        t_ns = time.monotonic_ns()
        vals: dict[str, float | int | None] = {}
        for name, read in self._readers().items():
            vals[name] = None
            if self.supported.get(name):
                try:
                    vals[name] = read()
                except SensorError:
                    pass
        r = ThermalReading(t_ns, vals["temp_c"], vals["sm_mhz"], vals["mem_mhz"],
                           None if vals["reasons"] is None else int(vals["reasons"]))
        with self._lock:
            self._readings.append(r)
        return r

    def readings(self, first_ns: int, last_ns: int) -> list[ThermalReading]:
        """The readings taken in [first_ns, last_ns], in time order."""
        with self._lock:
            rs = [r for r in self._readings if first_ns <= r.t_ns <= last_ns]
        return sorted(rs, key=lambda r: r.t_ns)

    def window(self, start: ThermalReading | None, end: ThermalReading | None) -> dict | None:
        """A window's ``thermal`` block from its start and end readings and those between."""
        if start is None or end is None:
            return None
        return thermal_block(self.readings(start.t_ns, end.t_ns), start, end, self.period_s)


def _num(v: float | None) -> float | None:
    return None if v is None else float(v)


def thermal_block(readings: list[ThermalReading], start: ThermalReading,
                  end: ThermalReading, period_s: float) -> dict:
    """Start, end, min and max of each reading and the reasons OR-ed over ``readings``."""
    out: dict = {"readings": len(readings), "poll_s": period_s}
    for name, key in (("temp_c", "temp_c"), ("sm_mhz", "sm_mhz"), ("mem_mhz", "mem_mhz")):
        vals = [v for r in readings if (v := getattr(r, key)) is not None]
        out[f"{name}_start"] = _num(getattr(start, key))
        out[f"{name}_end"] = _num(getattr(end, key))
        out[f"{name}_min"] = min(vals) if vals else None
        out[f"{name}_max"] = max(vals) if vals else None
    masks = [r.reasons for r in readings if r.reasons is not None]
    mask = None
    if masks:
        mask = 0
        for m in masks:
            mask |= m
    out["throttle_mask"] = mask
    out["throttle_reasons"] = reason_names(mask) if mask is not None else None
    return out
