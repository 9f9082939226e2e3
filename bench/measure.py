"""``bench measure``: the energy of any command over its whole life, GPU and CPU."""

from __future__ import annotations

import resource
import signal
import subprocess
import time
from typing import Any

from bench import devices
from bench.devices import cpu, rapl
from bench.errors import BenchError, NoSensor
from bench.meter import Meter


class ChildCpuEstimateSource:
    """Estimated CPU energy of waited-for child processes: assumed W per thread x CPU time."""

    scope = "cpu"
    method = "estimate"

    def __init__(self, w_per_logical_cpu: float = cpu.DEFAULT_W_PER_LOGICAL_CPU) -> None:
        self.w_per_logical_cpu = w_per_logical_cpu
        self.name = "cpu-estimate-children"
        self.device = "cpu"
        self.description = (f"estimate: {w_per_logical_cpu:g} W per busy logical CPU x the "
                            "command's CPU time (assumed, not measured)")

    def read_j(self) -> float:
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        return self.w_per_logical_cpu * (ru.ru_utime + ru.ru_stime)


def _cpu_sources(w_per_thread: float | None) -> tuple[list[Any], dict[str, str | None]]:
    srcs: list[Any] = []
    try:
        found, why = rapl.sources()
        srcs.extend(found)
    except NoSensor as exc:
        why = str(exc)
    notes: dict[str, str | None] = {}
    if not any(s.scope == "cpu" for s in srcs):
        srcs.append(ChildCpuEstimateSource(w_per_thread or cpu.DEFAULT_W_PER_LOGICAL_CPU))
        notes["cpu"] = why
    if not any(s.scope == "dram" for s in srcs):
        notes["dram"] = why or "no RAPL dram zone"
    return srcs, notes


def measure_command(argv: list[str], gpu: str = "all", rate_hz: float = 1000.0,
                    w_per_thread: float | None = None,
                    notify=lambda line: None) -> dict:
    """Run ``argv`` and measure GPU (sampled NVML) and CPU energy over its life.

    Returns:
        The report: duration_s, exit_code, devices[], cpu{}, dram{} (see the README).

    Raises:
        BenchError: bad --gpu value; the command cannot be started.
    """
    from bench.devices.nvml import NvmlEnergySource
    from bench.sampler import Sampler

    if not argv:
        raise BenchError("no command given (use: bench measure -- COMMAND [ARGS...])")
    inv = devices.discover()
    parsed = devices.parse_gpu_spec(gpu)
    gpus: list[devices.Device] = []
    if parsed != "none":
        if parsed in ("all", "auto") and not inv.gpus:
            notify(f"no GPU to measure ({inv.gpu_reason}); measuring the CPU only")
        else:
            gpus, _ = devices.select(gpu, inv)
    gpu_srcs = [NvmlEnergySource(g.gpu_index) for g in gpus]
    cpu_srcs, notes = _cpu_sources(w_per_thread)
    sampler = Sampler([g.gpu_index for g in gpus], rate_hz=rate_hz) if gpus else None
    exit_code = None
    try:
        if sampler:
            sampler.start()
        meter = Meter([*gpu_srcs, *cpu_srcs], sampler=sampler)
        # The child gets Ctrl-C from the terminal itself; we wait for it to finish.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            with meter.window("command") as w:
                try:
                    proc = subprocess.Popen(argv)
                except OSError as exc:
                    raise BenchError(f"cannot run {argv[0]!r}: {exc.strerror}") from None
                exit_code = proc.wait()
        finally:
            signal.signal(signal.SIGINT, old)
    finally:
        if sampler:
            sampler.stop()
        for s in gpu_srcs:
            s.close()
    m = w.result
    assert m is not None  # the window closed without an exception
    devs: list[dict[str, Any]] = []
    report: dict[str, Any] = {"duration_s": m.duration_s, "exit_code": exit_code,
                              "devices": devs}
    for g, r in zip(gpus, m.readings[:len(gpus)], strict=True):
        st = r.stats or {}
        devs.append({
            "index": g.index, "uuid": g.uuid, "name": g.name, "energy_j": r.energy_j,
            "method": r.method if r.energy_j is not None else None,
            "samples": st.get("samples"),
            "sample_rate_hz": st.get("sample_rate_hz"),
            "mean_power_w": (r.energy_j / m.duration_s if r.energy_j is not None
                             and m.duration_s > 0 else None),
            "max_power_w": st.get("max_power_w"), "edge_lag_s": st.get("edge_lag_s"),
            "reason": r.reason})
    for scope in ("cpu", "dram"):
        e = m.energy_j(scope)
        report[scope] = {"energy_j": e, "method": m.method(scope) if e is not None else None,
                         "reason": m.reason(scope) if e is None else None}
        if scope in notes and e is not None:
            report[scope]["note"] = f"RAPL unreadable: {notes[scope]}"
    report["started_monotonic_ns"] = m.t0_ns
    report["finished_unix_s"] = time.time()
    return report
