"""Measurement windows on the monotonic clock: energy from counters at the edges.

A window is [t0, t1] on ``time.monotonic_ns()``; both edges are taken after the device
is synchronised, so no queued work leaks into or out of the window. The window's energy
for each source is ``counter(t1) - counter(t0)``. Where a :class:`~bench.sampler.Sampler`
runs, a GPU's counter is instead interpolated at the edges between the counter's actual
update times (so a counter that refreshes every 100 ms still gives exact edges), and a
GPU without a counter gets its sampled power integrated (method ``power_integration``).
A source that cannot be read gives ``energy_j = None`` and the reason, never 0.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from bench.errors import SensorError

LOOKBACK_NS = 2_000_000_000  # samples this long before a window serve its edges


class EnergySource(Protocol):
    """A cumulative energy reading in J (any origin; only differences are used)."""

    name: str
    device: str
    scope: str  # gpu | cpu | dram | node
    method: str  # counter | power_integration | estimate
    description: str

    def read_j(self) -> float: ...


@dataclass(frozen=True)
class EnergyReading:
    """One source's energy over one window; ``energy_j`` is None (with a reason) if unread."""

    source: str
    device: str
    scope: str
    method: str
    energy_j: float | None
    reason: str | None = None
    stats: dict | None = None  # sample statistics where a sampler ran

    def to_dict(self) -> dict:
        return {"source": self.source, "device": self.device, "scope": self.scope,
                "method": self.method, "energy_j": self.energy_j, "reason": self.reason,
                "stats": self.stats}


@dataclass(frozen=True)
class Measurement:
    """What one window measured."""

    name: str
    t0_ns: int
    t1_ns: int
    readings: tuple[EnergyReading, ...]
    thermal: dict | None = None  # the GPU's temperature, clocks and reasons (bench.thermal)

    @property
    def duration_s(self) -> float:
        return (self.t1_ns - self.t0_ns) * 1e-9

    def scopes(self) -> list[str]:
        seen: list[str] = []
        for r in self.readings:
            if r.scope not in seen:
                seen.append(r.scope)
        return seen

    def energy_j(self, scope: str) -> float | None:
        """Sum over the sources of one scope; None if any of them is missing."""
        rs = [r for r in self.readings if r.scope == scope]
        if not rs or any(r.energy_j is None for r in rs):
            return None
        return sum(r.energy_j for r in rs)  # type: ignore[misc]

    def method(self, scope: str) -> str | None:
        """The scope's method; a mix of methods reports the weakest (estimate < integration)."""
        from bench.results.figures import weakest_method

        return weakest_method(r.method for r in self.readings if r.scope == scope)

    def reason(self, scope: str) -> str | None:
        """Why the scope's energy is missing, or None."""
        reasons = [r.reason for r in self.readings if r.scope == scope and r.reason]
        if not any(r.scope == scope for r in self.readings):
            return f"no {scope} sensor"
        return "; ".join(reasons) or None


@dataclass
class Window:
    """Handle yielded by :meth:`Meter.window`; ``result`` is set when the block exits."""

    name: str
    result: Measurement | None = field(default=None)


def _read(source: EnergySource) -> tuple[float | None, str | None]:
    try:
        return float(source.read_j()), None
    except SensorError as exc:
        return None, str(exc)


class Meter:
    """Reads a set of energy sources at synchronised window edges.

    Args:
        sources: energy sources (GPU counters, RAPL zones, estimates).
        sync: called before each edge is taken (``torch.cuda.synchronize`` on a GPU).
        clock_ns: the monotonic clock (replaceable in tests).
        sampler: a running sampler of the GPU sources (those with an ``index``).
        settle_s: after the window, wait until the sampler has samples this far past t1,
            so the counter's next update after the edge is seen (NVML counters refresh
            every 20-100 ms).
        thermal: a running :class:`bench.thermal.ThermalMonitor`: read just before t0 and
            just after t1, its readings give the window's ``thermal`` block.
    """

    def __init__(self, sources: Sequence[EnergySource], sync: Callable[[], None] | None = None,
                 clock_ns: Callable[[], int] = time.monotonic_ns, sampler: Any = None,
                 settle_s: float = 0.15, thermal: Any = None) -> None:
        self.sources = list(sources)
        self._sync = sync or (lambda: None)
        self._clock_ns = clock_ns
        self.sampler = sampler
        self.settle_s = settle_s
        self.thermal = thermal

    def _edge(self) -> tuple[int, list[tuple[float | None, str | None]]]:
        self._sync()
        if self.sampler is not None and self.sampler.running:
            # the trace must hold a sample before the edge to interpolate at it
            self.sampler.wait_past(self._clock_ns(), timeout_s=0.5)
        t_ns = self._clock_ns()
        return t_ns, [_read(s) for s in self.sources]

    def _sampled(self) -> bool:
        """Whether any source is read from samples after the window (settling past t1)."""
        running = self.sampler is not None and self.sampler.running
        return running or any(hasattr(s, "energy_j_at") for s in self.sources)

    @contextmanager
    def window(self, name: str, busy: Callable[[], object] | None = None) -> Iterator[Window]:
        """Measure the block; ``w.result`` holds the :class:`Measurement` afterwards.

        Args:
            busy: one unit of the window's own work, unmeasured (a generate call). Where
                sources are read from samples, it runs once just before t0 (lead-in) and
                again after t1 until the samples past the edge are in (lead-out), so
                neither edge sits on the power step between work and idle: a counter
                interpolated across a step is off by up to step x update period / 2.

        If the block raises, no measurement is made and the exception propagates.
        """
        handle = Window(name)
        sampled = self._sampled()
        if busy is not None and sampled:
            busy()  # lead-in
        th0 = self.thermal.sample_now() if self.thermal is not None else None
        t0, r0 = self._edge()
        yield handle
        t1, r1 = self._edge()
        th1 = self.thermal.sample_now() if self.thermal is not None else None
        lead_out = busy if sampled else None
        readings = []
        for s, (e0, why0), (e1, why1) in zip(self.sources, r0, r1, strict=True):
            if e0 is None or e1 is None:
                energy, reason = None, why0 or why1
            elif e1 < e0:
                energy, reason = None, f"{s.name}: counter went backwards (reset?)"
            else:
                energy, reason = e1 - e0, None
            readings.append(EnergyReading(s.name, s.device, s.scope, s.method, energy, reason))
        if self.sampler is not None and self.sampler.running:
            readings = self._from_traces(readings, t0, t1, lead_out)
        readings = self._from_sampled_sources(readings, t0, t1, lead_out)
        thermal = self.thermal.window(th0, th1) if self.thermal is not None else None
        handle.result = Measurement(name, t0, t1, tuple(readings), thermal)

    def _from_sampled_sources(self, readings: list[EnergyReading], t0: int, t1: int,
                              busy: Callable[[], object] | None = None
                              ) -> list[EnergyReading]:
        """Sources sampled on their own thread (a BMC at ~1 s): their energy interpolated
        at both edges between the samples around each, after the window (waiting for the
        first sample past ``t1``), instead of the value held at the edge."""
        out = []
        for src, r in zip(self.sources, readings, strict=True):
            at = getattr(src, "energy_j_at", None)
            if at is None:
                out.append(r)
                continue
            s: Any = src  # a sampled source (bench.devices.bmc.SampledNodeSource)
            if busy is not None:  # lead-out until the source has a sample past the edge
                end = time.monotonic() + float(getattr(s, "max_gap_s", 5.0))
                while time.monotonic() < end and not any(
                        int(x.t_ns) >= t1 for x in s.samples()[-1:]):
                    busy()
            try:
                e = at(t1) - at(t0)
            except SensorError as exc:
                out.append(EnergyReading(s.name, s.device, s.scope, s.method, None, str(exc)))
                continue
            inside = sum(1 for x in s.samples() if t0 < int(x.t_ns) <= t1)
            out.append(EnergyReading(s.name, s.device, s.scope, s.method, e, None,
                                     {"edges": "interpolated", "samples": inside,
                                      "period_s": s.period_s}))
        return out

    def _refreshed_after(self, t1: int) -> bool:
        """Whether every sampled counter shows a refresh between two reads after ``t1``."""
        for tr in self.sampler.traces(since_ns=t1):
            _, e = tr.after(t1).energy_valid()
            if e.size and not bool(np.any(np.diff(e) != 0)):
                return False
        return True

    def _from_traces(self, readings: list[EnergyReading], t0: int, t1: int,
                     busy: Callable[[], object] | None = None) -> list[EnergyReading]:
        from bench.sampler import sampled_energy

        target = t1 + int(self.settle_s * 1e9)
        if busy is None:
            self.sampler.wait_past(target)
        else:  # lead-out: the work goes on until the sampler is past the settle time
            end = time.monotonic() + 10.0
            while self.sampler.running and time.monotonic() < end and \
                    not self.sampler.wait_past(target, timeout_s=0.001):
                busy()
            # The edge's interval needs a counter refresh provably after t1: a read after
            # t1 still showing the old value, then one showing the new. A sampler stalled
            # across t1 (a loaded host) can push that past the settle time: the work goes
            # on, up to 1 s more, until every counter shows one.
            more = time.monotonic() + 1.0
            while self.sampler.running and time.monotonic() < more and \
                    not self._refreshed_after(t1):
                target += 20_000_000
                while self.sampler.running and time.monotonic() < more and \
                        not self.sampler.wait_past(target, timeout_s=0.001):
                    busy()
        # The samples from LOOKBACK_NS before the window to the settle time after it, and
        # no others: the kernels fit the counter's refresh grid to what they are given,
        # and a validator recomputes from the same samples (their range is recorded).
        first, last = t0 - LOOKBACK_NS, target
        traces = {tr.index: tr.between(first, last)
                  for tr in self.sampler.traces(since_ns=first)}
        out = []
        for s, r in zip(self.sources, readings, strict=True):
            tr = traces.get(getattr(s, "index", None))
            out.append(sampled_energy(tr, t0, t1, r) if tr is not None else r)
        return out
