"""Runs the numba NVML sampling loop on a thread for one or more GPUs and owns its buffers.

The loop (``bench.kernels.sampling.sample_loop``) releases the GIL, so sampling keeps its
rate while Python code runs in the main thread. Buffers are chunks: when one fills, the
thread appends it and starts the loop on a new one with the same deadline grid, so a long
run grows memory (about 40 bytes per sample per GPU) instead of losing samples. The
thread is always stopped and joined: by the context manager, by :meth:`Sampler.stop`, at
interpreter exit, and before a fork, so no raw-pointer write can outlive its arrays.
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from dataclasses import dataclass

import numpy as np

from bench.devices import nvml
from bench.errors import SensorError
from bench.kernels import sampling

_live: weakref.WeakSet = weakref.WeakSet()


def _stop_all() -> None:
    for s in list(_live):
        s.stop()


atexit.register(_stop_all)
if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_stop_all)


@dataclass(frozen=True)
class Trace:
    """One GPU's samples (copies; safe to keep). Times are CLOCK_MONOTONIC ns."""

    index: int
    t_ns: np.ndarray
    energy_j: np.ndarray
    power_w: np.ndarray
    latency_ns: np.ndarray
    energy_status: np.ndarray
    power_status: np.ndarray

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])

    def energy_valid(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_ns, energy_j) of the samples whose counter read succeeded."""
        ok = self.energy_status == nvml.SUCCESS
        return self.t_ns[ok], self.energy_j[ok]

    def power_valid(self) -> tuple[np.ndarray, np.ndarray]:
        """(t_ns, power_w) of the samples whose power read succeeded."""
        ok = self.power_status == nvml.SUCCESS
        return self.t_ns[ok], self.power_w[ok]

    def between(self, first_ns: int, last_ns: int) -> Trace:
        """The samples taken in [first_ns, last_ns]."""
        m = (self.t_ns >= first_ns) & (self.t_ns <= last_ns)
        return Trace(self.index, self.t_ns[m], self.energy_j[m], self.power_w[m],
                     self.latency_ns[m], self.energy_status[m], self.power_status[m])

    def after(self, t_ns: int) -> Trace:
        """The samples taken after ``t_ns``."""
        m = self.t_ns > t_ns
        return Trace(self.index, self.t_ns[m], self.energy_j[m], self.power_w[m],
                     self.latency_ns[m], self.energy_status[m], self.power_status[m])

    def last_error(self) -> int | None:
        """The latest non-success NVML code of the energy or power reads, if any."""
        # -1 marks a read that was not made (no counter, power mode none): not an error.
        def failed(status):
            return status[(status != nvml.SUCCESS) & (status >= 0)]

        bad = np.concatenate([failed(self.energy_status), failed(self.power_status)])
        return int(bad[-1]) if bad.size else None


POWER_MODES = {"instant": sampling.POWER_INSTANT, "average": sampling.POWER_AVERAGE,
               "usage": sampling.POWER_USAGE, "none": sampling.POWER_NONE}


class Sampler:
    """Samples energy counter and power of GPUs (NVML indices) at ``rate_hz``.

    Args:
        indices: NVML indices of the GPUs.
        rate_hz: target samples per second per GPU.
        power: ``auto`` (field 186 where supported, else nvmlDeviceGetPowerUsage),
            ``instant``, ``average``, ``usage`` or ``none``.
        chunk: samples per buffer chunk.
    """

    def __init__(self, indices: list[int], rate_hz: float = 1000.0, power: str = "auto",
                 chunk: int = 65536) -> None:
        if not rate_hz > 0:
            raise ValueError("rate_hz must be positive")
        if power != "auto" and power not in POWER_MODES:
            raise ValueError(f"unknown power mode {power!r}")
        self.indices = list(indices)
        self.rate_hz = float(rate_hz)
        self.period_ns = max(1, int(round(1e9 / rate_hz)))
        self.power = power
        self.chunk = int(chunk)
        self.supported: dict[int, dict[str, bool]] = {}
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._chunks: list[tuple] = []
        self._current: tuple | None = None
        self._stop = np.zeros(1, np.int64)
        self._progress = np.zeros(1, np.int64)
        self._lost = np.zeros(len(self.indices), np.int64)
        self._error: BaseException | None = None
        self._nvml_held = False
        self.started_ns: int | None = None

    # -- lifecycle ----------------------------------------------------------------
    def start(self) -> Sampler:
        """Initialise NVML, bind the loop, compile it (outside any window) and start."""
        if self._thread is not None:
            raise RuntimeError("sampler already started")
        nvml.init()
        self._nvml_held = True
        try:
            handles = [nvml.handle(i) for i in self.indices]
            sampling.bind(nvml.function_addresses(sampling.NVML_FUNCTIONS))
            modes, energy = [], []
            for i, h in zip(self.indices, handles, strict=True):
                sup = nvml.supported(h)
                self.supported[i] = sup
                energy.append(1 if sup["energy_counter"] else 0)
                modes.append(self._power_mode(sup))
            self._handles = np.array([nvml.handle_address(h) for h in handles], np.int64)
            self._modes = np.array(modes, np.int64)
            self._energy = np.array(energy, np.int64)
            self._warm_up()
        except BaseException:
            self._release()
            raise
        self._stop[0] = 0
        self.started_ns = time.monotonic_ns()
        self._thread = threading.Thread(target=self._run, name="joulebench-sampler",
                                        daemon=True)
        _live.add(self)
        self._thread.start()
        return self

    def _power_mode(self, sup: dict[str, bool]) -> int:
        if self.power == "auto":
            if sup["power_instant_field"]:
                return sampling.POWER_INSTANT
            return sampling.POWER_USAGE if sup["power_usage"] else sampling.POWER_NONE
        return POWER_MODES[self.power]

    def _new_chunk(self, n: int) -> tuple:
        d = len(self.indices)
        return (np.zeros((d, n), np.int64), np.full((d, n), np.nan), np.full((d, n), np.nan),
                np.zeros((d, n), np.int64), np.full((d, n), -1, np.int32),
                np.full((d, n), -1, np.int32))

    def _warm_up(self) -> None:
        # One real tick on a one-sample buffer: compiles or loads the cached loop now,
        # not inside a measured window.
        bufs = self._new_chunk(1)
        stop = np.zeros(1, np.int64)
        sampling.sample_loop(self._handles, self._modes, self._energy, self.period_ns,
                             time.monotonic_ns(), stop, np.zeros(1, np.int64), *bufs,
                             np.zeros(len(self.indices), np.int64))

    def _run(self) -> None:
        deadline = time.monotonic_ns()
        try:
            while self._stop[0] == 0:
                bufs = self._new_chunk(self.chunk)
                with self._lock:
                    self._current = bufs
                    self._progress[0] = 0
                n, deadline = sampling.sample_loop(
                    self._handles, self._modes, self._energy, self.period_ns, deadline,
                    self._stop, self._progress, *bufs, self._lost)
                with self._lock:
                    self._chunks.append(tuple(a[:, :n] for a in bufs))
                    self._current = None
        except BaseException as exc:  # surfaced by stop()/traces(); never silently lost
            self._error = exc

    def stop(self) -> None:
        """Stop and join the thread, then release NVML. Safe to call twice."""
        t = self._thread
        if t is not None:
            self._stop[0] = 1
            t.join()
            self._thread = None
        _live.discard(self)
        self._release()

    def _release(self) -> None:
        if self._nvml_held:
            self._nvml_held = False
            nvml.shutdown()

    def __enter__(self) -> Sampler:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None

    # -- data -----------------------------------------------------------------------
    def traces(self, since_ns: int | None = None) -> list[Trace]:
        """What was sampled, one :class:`Trace` per GPU (a consistent snapshot).

        Args:
            since_ns: leave out the whole buffer chunks before the one holding the last
                sample at or before this time (a window needs its own samples and one
                before its edge), so the cost stays that of the window, not of the run.
        """
        if self._error is not None:
            raise SensorError(f"sampler failed: {self._error}")
        with self._lock:
            parts = [p for p in self._chunks if p[0].shape[1]]
            if since_ns is not None:
                # the last chunk whose first tick (every GPU's) is at or before since_ns
                first = max((i for i, p in enumerate(parts)
                             if int(p[0][:, 0].max()) <= since_ns), default=0)
                parts = parts[first:]
            if self._current is not None:
                n = int(self._progress[0])
                parts.append(tuple(a[:, :n].copy() for a in self._current))
        out = []
        for d, idx in enumerate(self.indices):
            cols = [np.concatenate([p[c][d] for p in parts]) if parts else
                    np.zeros(0, dt) for c, dt in enumerate(
                        (np.int64, np.float64, np.float64, np.int64, np.int32, np.int32))]
            out.append(Trace(idx, *cols))
        return out

    def wait_past(self, t_ns: int, timeout_s: float = 2.0) -> bool:
        """Block until every GPU has a sample after ``t_ns`` (or the timeout); True if so."""
        end = time.monotonic() + timeout_s
        while time.monotonic() < end:
            if not self.running:
                return False
            with self._lock:
                cur = self._current
                n = int(self._progress[0])
                if cur is not None and n > 0 and cur[0][:, n - 1].min() > t_ns:
                    return True
            time.sleep(0.002)
        return False

    def lost(self) -> dict[int, bool]:
        """Which GPUs the loop saw lost (NVML's GPU_IS_LOST); it stops reading those."""
        return {i: bool(self._lost[d]) for d, i in enumerate(self.indices)}


def window_stats(tr: Trace, t0: int, t1: int) -> dict:
    """Samples inside [t0, t1]: count, achieved rate, mean and max sampled power."""
    inside = (tr.t_ns >= t0) & (tr.t_ns <= t1)
    n = int(inside.sum())
    dur = (t1 - t0) * 1e-9
    p = tr.power_w[inside & (tr.power_status == nvml.SUCCESS)]
    return {"samples": n, "sample_rate_hz": n / dur if dur > 0 else None,
            "mean_power_w": float(p.mean()) if p.size else None,
            "max_power_w": float(p.max()) if p.size else None}


def counter_edge_lag_s(t_ns, energy_j, latency_ns, edges_ns) -> float | None:
    """How late the sampler may have seen the counter updates the edges are interpolated from.

    A counter update is first seen at the sample after it, so it is stamped late by up
    to the gap before that sample (plus half a call: a sample is stamped at the middle
    of its NVML calls). Interpolating at an edge between update points a and b, at
    fraction w of the way, shifts the edge by ``|1 - w| x lag_a + |w| x lag_b``: under
    constant power P the edge's counter value is off by at most P times that. On an idle
    machine this is about one sampling period; CPU contention that delays the sampling
    thread makes it larger.

    Args:
        t_ns, energy_j, latency_ns: the valid counter samples, in time order.
        edges_ns: the window edges.

    Returns:
        The largest such shift over the edges in s, or None with fewer than two updates.
    """
    t = np.asarray(t_ns, np.int64)
    points = np.flatnonzero(np.diff(np.asarray(energy_j, np.float64)) != 0) + 1
    if points.size < 2:
        return None
    lat = np.asarray(latency_ns, np.float64)
    seen = t[points]
    lag = (seen - t[points - 1]) + lat[points - 1] / 2
    worst = 0.0
    for q in edges_ns:
        # the pair the interpolation uses: the update points on either side of q (the
        # nearest two where q is before the first or after the last: extrapolation)
        b = min(max(int(np.searchsorted(seen, q, side="right")), 1), points.size - 1)
        w = (q - seen[b - 1]) / (seen[b] - seen[b - 1])
        worst = max(worst, abs(1 - w) * lag[b - 1] + abs(w) * lag[b])
    return float(worst * 1e-9)


def _finite(x: float) -> float | None:
    """``x``, or None for NaN (JSON has no NaN)."""
    return x if x == x else None


def sampled_energy(tr: Trace, t0: int, t1: int, edge):
    """A GPU's window energy from its trace, falling back to the edge reading ``edge``.

    Counter first: its refreshes placed on their fitted regular grid (a sampler that
    falls behind under contention sees each refresh late) and interpolated at the edges,
    with an interval that holds the true energy if the power readings' range holds the
    power around the edges (``kernels.trace.counter_window_bounds_j``: ``energy_low_j``,
    ``energy_high_j``, ``edge_bound_j``) and the wider one the counter's reads alone
    allow (``counter_window_sure_bounds_j``: ``energy_sure_low_j``,
    ``energy_sure_high_j``, None where a reset leaves no top), from the samples in
    ``tr`` (its first and last times are recorded, so a validator uses the same ones);
    where fewer refreshes allow no fit, interpolated between the seen update times. Then
    integrated power where the GPU has no counter and the samples cover the window; else
    the edge reading, or None with the reason.
    """
    from dataclasses import replace

    from bench.kernels import trace as K

    stats = window_stats(tr, t0, t1)
    te, ee = tr.energy_valid()
    if te.size >= 2 and te[0] <= t0 and te[-1] >= t1:
        ok = tr.energy_status == nvml.SUCCESS
        lat = tr.latency_ns[ok]
        tp, pw = tr.power_valid()
        resets = K.counter_window_resets(te, ee, t0, t1, lat)
        if resets:  # the window may have lost energy to them (the fitted bound's top holds it)
            stats["counter_resets"] = resets
        e, low, high, period_s = K.counter_window_bounds_j(te, ee, t0, t1, tp, pw, lat)
        if e == e and low == low and high == high and e >= 0:  # not NaN
            sure_low, sure_high = K.counter_window_sure_bounds_j(te, ee, t0, t1, lat)
            stats.update(counter_edges="fitted", counter_period_s=period_s,
                         energy_low_j=low, energy_high_j=high,
                         edge_bound_j=max(e - low, high - e),
                         energy_sure_low_j=_finite(sure_low),
                         energy_sure_high_j=_finite(sure_high),
                         edge_lag_s=counter_edge_lag_s(te, ee, lat, (t0, t1)),
                         trace_from_ns=int(tr.t_ns[0]), trace_to_ns=int(tr.t_ns[-1]))
            return replace(edge, energy_j=e, method="counter", reason=None, stats=stats)
        e = K.counter_energy_j(te, ee, t0, t1)
        if e == e and e >= 0:  # not NaN
            stats["counter_edges"] = "interpolated"
            stats["edge_lag_s"] = counter_edge_lag_s(te, ee, lat, (t0, t1))
            return replace(edge, energy_j=e, method="counter", reason=None, stats=stats)
    if edge.energy_j is not None:
        stats["counter_edges"] = "read"
        return replace(edge, stats=stats)
    tp, pw = tr.power_valid()
    if tp.size >= 2:
        e, gap_s, covered = K.power_energy_j(tp, pw, t0, t1)
        stats.update(largest_gap_s=gap_s, covered_fraction=covered)
        if covered >= 0.999 and e == e:
            return replace(edge, energy_j=e, method="power_integration", reason=None,
                           stats=stats)
        reason = (f"power samples cover {covered:.1%} of the window "
                  f"(largest gap {gap_s:.3f} s; {nvml.status_text(tr.last_error())})")
        return replace(edge, energy_j=None, method="power_integration", reason=reason,
                       stats=stats)
    reason = edge.reason or nvml.status_text(tr.last_error())
    return replace(edge, energy_j=None, reason=reason, stats=stats)
