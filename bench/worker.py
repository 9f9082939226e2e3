"""One device's share of a sweep: its meter, sampler, idle baseline and cells.

It runs in the main process (the CPU) or in a worker process of its own (one per GPU,
started with spawn and ``CUDA_VISIBLE_DEVICES=<UUID>``, so each GPU is measured by a
process that sees only it). Records go out through ``emit``; raw samples go to trace
part files in the run directory after every cell.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from bench import cells, models
from bench.devices import Device
from bench.errors import NoSensor
from bench.meter import Meter
from bench.results import figures
from bench.results.figures import CellRaw
from bench.sweep import Cell, SweepConfig
from bench.workload import Workload, make_workload


def energy_sources(device: Device, config: SweepConfig) -> tuple[list[Any], list[dict]]:
    """The meter's sources for a device, and the scopes that have none (with the reason).

    GPU scope: NVML's counter. CPU and DRAM scope: RAPL where readable, else (CPU only)
    the labelled estimate. Node scope: the BMC that ``config.node_power`` names, if any.
    """
    cpu_w_per_thread = config.cpu_w_per_logical_cpu
    from bench.devices import cpu, rapl

    srcs: list[Any] = []
    missing: list[dict] = []
    if device.kind == "cuda":
        from bench.devices.nvml import NvmlEnergySource

        srcs.append(NvmlEnergySource(device.gpu_index))
    try:
        rsrcs, why = rapl.sources()
    except NoSensor as exc:
        rsrcs, why = [], str(exc)
    srcs.extend(rsrcs)
    if not any(s.scope == "cpu" for s in rsrcs):
        srcs.append(cpu.CpuTimeEstimateSource(cpu_w_per_thread or cpu.DEFAULT_W_PER_LOGICAL_CPU))
        missing.append({"scope": "cpu", "measured": False, "reason": why})
    if not any(s.scope == "dram" for s in rsrcs):
        missing.append({"scope": "dram", "measured": False, "reason": why or "no RAPL dram zone"})
    if config.node_power:
        node, reason = open_node_source(config)
        if node is not None:
            srcs.append(node)
        else:
            missing.append({"scope": "node", "measured": False, "reason": reason})
    return srcs, missing


def open_node_source(config: SweepConfig) -> tuple[Any, str | None]:
    """The started BMC source ``config.node_power`` names, or None and why not.

    Raises:
        BenchError: a bad BMC address or refused credentials (configuration, not a sensor).
    """
    from bench.devices import bmc

    assert config.node_power
    try:
        return bmc.open_source(config.node_power, insecure=config.bmc_insecure,
                               ca_file=config.bmc_ca_file,
                               credentials_file=config.bmc_credentials), None
    except NoSensor as exc:
        return None, str(exc)


def measure_idle(device: Device, meter: Meter, seconds: float) -> dict:
    """The device's idle power before its cells: a window with nothing running on it."""
    with meter.window(f"idle-{device.label}") as w:
        time.sleep(seconds)
    m = w.result
    assert m is not None
    scope = figures.primary_scope(device.kind)
    e = m.energy_j(scope)
    return {"type": "idle", "device": device.label, "scope": scope,
            "duration_s": m.duration_s, "energy_j": e,
            "power_w": figures.idle_power_w(e, m.duration_s),
            "method": m.method(scope), "reason": m.reason(scope) if e is None else None}


def memory_cap_bytes(device: Device) -> float | None:
    """Memory a cell may still use: ``JOULEBENCH_MEMORY_CAP_BYTES``, else free GPU memory.

    The variable simulates a smaller GPU (tests use it for the out-of-memory path) or
    keeps headroom.
    """
    cap = os.environ.get("JOULEBENCH_MEMORY_CAP_BYTES")
    if cap:
        return float(cap)
    if device.torch_device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(device.torch_device)
        return float(free)
    return None


def does_not_fit(cell: Cell, spec: models.ModelSpec, cap: float | None) -> str | None:
    """None if the cell fits in ``cap`` bytes, else why not (loaded weights are resident)."""
    if cap is None:
        return None
    from bench.models import arithmetic

    a = arithmetic.of(spec, cell.dtype)
    need = a.memory_bytes(cell.batch_size, cell.input_len, cell.output_len)
    if not os.environ.get("JOULEBENCH_MEMORY_CAP_BYTES"):
        need -= a.weight_bytes  # free memory is measured with the weights loaded
    if need > cap:
        return (f"out of memory (pre-check): needs {need / 1e9:.3g} GB, "
                f"{cap / 1e9:.3g} GB available")
    return None


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def _free_memory(device: Device) -> None:
    import gc

    gc.collect()
    if device.torch_device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()


def _sync_for(device: Device) -> Callable[[], None] | None:
    if not device.torch_device.startswith("cuda"):
        return None
    import torch

    return lambda: torch.cuda.synchronize(device.torch_device)


def other_processes(device: Device, ours: set[int]) -> list[int]:
    """PIDs of other processes computing on the GPU (NVML), or [] where unknown."""
    if device.kind != "cuda":
        return []
    from bench.devices import nvml

    try:
        return [p for p in nvml.compute_pids(device.gpu_index) if p not in ours]
    except Exception:  # a sensor question; never stops the sweep
        return []


def _node_trace(node: Any, after_ns: int) -> Any:
    """The BMC's samples after ``after_ns`` as a trace (device index ``NODE_TRACE_INDEX``).

    ``energy_j`` is the source's cumulative energy at each sample (its counter, or the
    trapezoid of its power readings), ``latency_ns`` the request's duration.
    """
    import numpy as np

    from bench.rundir import NODE_TRACE_INDEX
    from bench.sampler import Trace

    ss = [s for s in node.samples() if s.t_ns > after_ns]
    n = len(ss)
    return Trace(NODE_TRACE_INDEX, np.array([s.t_ns for s in ss], np.int64),
                 np.array([s.energy_j for s in ss], np.float64),
                 np.array([s.power_w for s in ss], np.float64),
                 np.array([int(s.latency_s * 1e9) for s in ss], np.int64),
                 np.zeros(n, np.int32), np.zeros(n, np.int32))


def _trace_flusher(run_dir: Path, sampler: Any, node: Any) -> Callable[[], None]:
    """A function that writes the samples since its last call as trace parts (fsynced).

    The GPU's samples (``sampler``) and the BMC's (``node``), either may be None. Part
    names carry the session (wall-clock ns at its start), so a resumed run's parts never
    collide with the killed run's.
    """
    from bench.rundir import write_trace_part

    state = {"gpu_ns": -1, "node_ns": -1, "seq": 0}
    session = time.time_ns()

    def flush() -> None:
        for key, src in (("gpu_ns", sampler), ("node_ns", node)):
            if src is None:
                continue
            if key == "gpu_ns":
                (tr,) = src.traces(since_ns=state[key])
                new = tr.after(state[key])
            else:
                new = _node_trace(src, state[key])
            write_trace_part(run_dir, new, state["seq"], session)
            if len(new):
                state[key] = int(new.t_ns[-1])
        state["seq"] += 1

    return flush


def run_device(device: Device, todo: list[Cell], config: SweepConfig,
               run_dir: str | os.PathLike, emit: Callable[[dict], None],
               ours: set[int] | None = None) -> None:
    """Measure ``todo`` (cells of this device, batches ascending) and emit every record.

    ``config`` is resolved for the device's kind (see :meth:`SweepConfig.resolved`).
    """
    ours = (ours or set()) | {os.getpid()}
    run_dir = Path(run_dir)
    srcs, missing = energy_sources(device, config)
    for s in srcs:
        emit({"type": "source", "device": device.label, "name": s.name, "scope": s.scope,
              "method": s.method, "description": s.description})
    for m in missing:
        emit({"type": "source", "device": device.label, **m})
    absent = {m["scope"]: m["reason"] for m in missing
              if not any(s.scope == m["scope"] for s in srcs)}
    sampler = None
    flush: Callable[[], None] = lambda: None  # noqa: E731
    loaded: dict[tuple[str, str], tuple[Workload, models.ModelSpec]] = {}
    oom_at: dict[tuple, int] = {}
    try:
        if device.kind == "cuda":
            from bench.sampler import Sampler

            # Sampled at 1 kHz for all the device's cells: window edges are interpolated
            # between the counter's updates, not read from a stale counter.
            sampler = Sampler([device.gpu_index], rate_hz=1000.0).start()
        node = next((s for s in srcs if s.scope == "node"), None)
        if sampler is not None or node is not None:
            flush = _trace_flusher(run_dir, sampler, node)
        meter = Meter(srcs, sync=_sync_for(device), sampler=sampler)
        idle_w = None
        if device.kind == "cuda":
            idle = measure_idle(device, meter, config.idle_s)
            emit(idle)
            idle_w = idle["power_w"]
        compiled = device.torch_device.startswith("cuda") and config.compile
        last_batch = None
        for cell in todo:
            if compiled and cell.batch_size != last_batch:
                import torch

                # Static shapes per batch size: a fresh compile instead of hitting the
                # recompile limit (8), after which dynamo silently falls back to eager.
                torch._dynamo.reset()
            last_batch = cell.batch_size
            key = (cell.model, cell.dtype)
            if key not in loaded:
                for wl, _ in loaded.values():
                    wl.close()
                loaded.clear()  # one model in memory at a time
                spec = models.get(cell.model)
                wl = make_workload(cell.engine, spec, cell.dtype, device.torch_device,
                                   config.seed, config.compile, sweep=config)
                wl.prepare()
                loaded[key] = (wl, spec)
            wl, spec = loaded[key]
            group = (cell.model, cell.dtype, cell.input_len, cell.output_len)
            if group in oom_at and cell.batch_size > oom_at[group]:
                raw = CellRaw(cell, "skipped", error=f"batch {oom_at[group]} ran out of memory",
                              pid=os.getpid())
            else:
                before = other_processes(device, ours)
                raw = _run_one(cell, wl, spec, meter, config, absent, idle_w, sampler, emit)
                others = sorted(set(before) | set(other_processes(device, ours)))
                raw = replace(raw, contended=bool(others), other_pids=others, pid=os.getpid(),
                              engine=wl.describe())
                if raw.status == "oom":
                    oom_at[group] = cell.batch_size
            rec = figures.cell_record(raw)
            flush()
            emit(rec)
    finally:
        for wl, _ in loaded.values():
            wl.close()
        loaded.clear()
        if sampler is not None:
            sampler.stop()
        flush()
        for s in srcs:
            close = getattr(s, "close", None)
            if close:
                close()


def _run_one(cell: Cell, wl: Workload, spec: models.ModelSpec, meter: Meter,
             config: SweepConfig, absent: dict[str, str], idle_w: float | None,
             sampler: Any, emit: Callable[[dict], None] = lambda rec: None) -> CellRaw:
    why = does_not_fit(cell, spec, memory_cap_bytes(cell.device))
    if why:
        return CellRaw(cell, "oom", error=why)
    try:
        repeats, prefill = cells.measure(cell, wl, meter, config, absent, emit)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        oom = True
    else:
        oom = False
    if oom:  # outside the except block, so the traceback's tensors can be freed
        _free_memory(cell.device)
        return CellRaw(cell, "oom", error="out of memory")
    trace = None
    if sampler is not None:
        (tr,) = sampler.traces(since_ns=repeats[0]["t0_ns"] - 1_000_000_000)
        trace = tr.power_valid()
    return CellRaw(cell, "ok", repeats=repeats, prefill=prefill, idle_power_w=idle_w,
                   trace=trace, model_spec=spec)


def _die_with_parent(parent: int) -> None:
    """Ask Linux to kill this worker when its parent dies (prctl PR_SET_PDEATHSIG).

    Otherwise a parent killed with SIGKILL would leave its worker measuring the GPU while
    ``bench run --resume`` starts another.
    """
    import ctypes
    import signal

    try:
        ctypes.CDLL(None).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os._exit(1)


def worker_main(device_dict: dict, todo: list[Cell], config: SweepConfig, run_dir: str,
                queue: Any, parent: int | None = None) -> None:
    """Entry point of a worker process (spawn): one GPU, visible as cuda:0."""
    if parent is not None:
        _die_with_parent(parent)
    uuid = device_dict.get("uuid")
    if uuid:
        os.environ["CUDA_VISIBLE_DEVICES"] = uuid  # before torch is imported here
    device = Device.from_dict(device_dict)
    device.info["torch_device"] = os.environ.get("JOULEBENCH_MODEL_DEVICE") or "cuda:0"
    todo = [c.with_device(device) for c in todo]
    try:
        run_device(device, todo, config, run_dir, queue.put, {os.getppid()})
        queue.put({"type": "done", "device": device.label})
    except KeyboardInterrupt:
        queue.put({"type": "error", "device": device.label, "error": "interrupted"})
    except BaseException as exc:  # reported to the parent, which keeps what was measured
        queue.put({"type": "error", "device": device.label,
                   "error": f"{exc.__class__.__name__}: {exc}"})
