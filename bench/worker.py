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
from bench.workload import Workload, gpu_free_bytes, make_workload


def energy_sources(device: Device, config: SweepConfig,
                   parallel_gpus: int = 1) -> tuple[list[Any], list[dict]]:
    """The meter's sources for a device, and the scopes that have none (with the reason).

    GPU scope: NVML's counter. CPU and DRAM scope: RAPL where readable, else (CPU only)
    the labelled estimate. Node scope: the BMC that ``config.node_power`` names, if any.
    With ``parallel_gpus`` > 1 GPU sessions measuring at once, RAPL is not read: its
    package counters cover the whole host, so every session would count the same CPU
    joules once more; the CPU scope is then this process's labelled estimate.
    """
    cpu_w_per_thread = config.cpu_w_per_logical_cpu
    from bench.devices import cpu, rapl

    srcs: list[Any] = []
    missing: list[dict] = []
    if device.kind == "cuda":
        from bench.devices.nvml import NvmlEnergySource

        # a group of GPUs (--gpus-per-cell): one counter each, summed per window
        srcs.extend(NvmlEnergySource(m.gpu_index) for m in device.members)
    try:
        if parallel_gpus > 1:
            raise NoSensor(f"RAPL covers the host, shared by {parallel_gpus} GPU sessions "
                           "measured in parallel: not attributable to one GPU's cells")
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
    idle = {"type": "idle", "device": device.label, "scope": scope,
            "duration_s": m.duration_s, "energy_j": e,
            "power_w": figures.idle_power_w(e, m.duration_s),
            "method": m.method(scope), "reason": m.reason(scope) if e is None else None}
    per = figures.window_per_device([r.to_dict() for r in m.readings], scope)
    if per is not None:  # a group of GPUs: the baseline is their sum, each one's kept
        idle["per_device"] = per
    return idle


def memory_cap_bytes(device: Device) -> float | None:
    """Memory a cell may still use: ``JOULEBENCH_MEMORY_CAP_BYTES``, else what the GPU can give.

    What the GPU can give is its free memory plus what PyTorch holds in its cache but no
    tensor uses (reserved minus allocated): PyTorch hands that back to the next tensor,
    so counting only ``mem_get_info``'s free memory refuses batches that fit. The
    variable simulates a smaller GPU (tests use it for the out-of-memory path) or keeps
    headroom.
    """
    n = len(device.members)  # a group's memory is its GPUs' together (the variable: per GPU)
    cap = os.environ.get("JOULEBENCH_MEMORY_CAP_BYTES")
    if cap:
        return float(cap) * n
    if device.torch_device.startswith("cuda"):
        return float(sum(gpu_free_bytes(f"cuda:{i}") for i in range(n))) if n > 1 \
            else gpu_free_bytes(device.torch_device)
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


def weights_do_not_fit(spec: models.ModelSpec, dtype: str, cap: float | None) -> str | None:
    """None if the model's weights fit in ``cap`` bytes, else why not (checked before
    building, with nothing of ours loaded, so a model too big never reaches the GPU)."""
    if cap is None:
        return None
    from bench.models import arithmetic

    need = arithmetic.of(spec, dtype).weight_bytes
    if need > cap:
        return (f"out of memory (fit check): the weights need {need / 1e9:.3g} GB, "
                f"{cap / 1e9:.3g} GB available")
    return None


def _is_oom(exc: BaseException) -> bool:
    from bench.workload import is_oom

    return is_oom(exc)


def _free_memory(device: Device) -> None:
    """Release what a closed workload left: reference cycles (a compiled call refers to
    its model), dynamo's compiled code and CUDA-graph pools, PyTorch's cached blocks."""
    import gc

    gc.collect()
    if device.torch_device.startswith("cuda"):
        import torch

        torch._dynamo.reset()
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device.torch_device)


def _sync_for(device: Device) -> Callable[[], None] | None:
    if not device.torch_device.startswith("cuda"):
        return None
    import torch

    n = len(device.members)
    if n > 1:  # a group of GPUs: every one's queued work is inside the window edge
        def sync_all() -> None:
            for i in range(n):
                torch.cuda.synchronize(f"cuda:{i}")

        return sync_all
    return lambda: torch.cuda.synchronize(device.torch_device)


def other_processes(device: Device, ours: set[int]) -> list[int] | None:
    """Processes other than this harness computing on the GPU (NVML's PIDs), or None
    where unknown.

    NVML reports PIDs of the host's namespace; in a container ours differ, so PIDs are
    not compared alone: the processes are counted, less the one CUDA context this worker
    holds when no reported PID is recognisably ours. The list is NVML's PIDs less ours.
    """
    if device.kind != "cuda":
        return []
    from bench.devices import nvml

    try:
        pids = sorted({p for m in device.members for p in nvml.compute_pids(m.gpu_index)})
    except Exception:  # a sensor question; never stops the sweep
        return None
    others = [p for p in pids if p not in ours]
    if len(others) == len(pids) and _holds_cuda_context(device) and others:
        others = others[1:]  # one of them is this worker, under another namespace's PID
    return others


def _holds_cuda_context(device: Device) -> bool:
    """Whether this process has a CUDA context on the device (it then shows in NVML)."""
    if not device.torch_device.startswith("cuda"):
        return False
    import torch

    return bool(torch.cuda.is_initialized())


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

    state: dict[Any, int] = {"node_ns": -1, "seq": 0}
    session = time.time_ns()

    def flush() -> None:
        # one trace per sampled GPU (several for a group of GPUs), then the BMC's
        news = [] if sampler is None else [
            (tr.index, tr.after(state.get(tr.index, -1)))
            for tr in sampler.traces(since_ns=min(state.get(i, -1) for i in sampler.indices))]
        if node is not None:
            news.append(("node_ns", _node_trace(node, state["node_ns"])))
        for key, new in news:
            write_trace_part(run_dir, new, state["seq"], session)
            if len(new):
                state[key] = int(new.t_ns[-1])
        state["seq"] += 1

    return flush


def run_device(device: Device, todo: list[Cell], config: SweepConfig,
               run_dir: str | os.PathLike, emit: Callable[[dict], None],
               ours: set[int] | None = None, parallel_gpus: int = 1) -> None:
    """Measure ``todo`` (cells of this device, batches ascending) and emit every record.

    ``config`` is resolved for the device's kind (see :meth:`SweepConfig.resolved`).
    ``parallel_gpus``: how many GPU sessions measure at the same time (see
    :func:`energy_sources`).
    """
    ours = (ours or set()) | {os.getpid()}
    run_dir = Path(run_dir)
    srcs, missing = energy_sources(device, config, parallel_gpus)
    for s in srcs:
        emit({"type": "source", "device": device.label, "name": s.name, "scope": s.scope,
              "method": s.method, "description": s.description})
    for m in missing:
        emit({"type": "source", "device": device.label, **m})
    absent = {m["scope"]: m["reason"] for m in missing
              if not any(s.scope == m["scope"] for s in srcs)}
    sampler = None
    thermal = None
    flush: Callable[[], None] = lambda: None  # noqa: E731
    session = _Models(device, config)
    oom_at: dict[tuple, int] = {}
    try:
        if device.kind == "cuda":
            from bench.sampler import Sampler

            # Sampled at 1 kHz for all the device's cells: window edges are interpolated
            # between the counter's updates, not read from a stale counter.
            sampler = Sampler([m.gpu_index for m in device.members], rate_hz=1000.0).start()
            from bench.thermal import ThermalMonitor

            # temperature, clocks and clock event reasons every 100 ms, per window (a
            # group of GPUs: its first GPU's)
            thermal = ThermalMonitor(device.members[0].gpu_index).start()
        node = next((s for s in srcs if s.scope == "node"), None)
        if sampler is not None or node is not None:
            flush = _trace_flusher(run_dir, sampler, node)
        meter = Meter(srcs, sync=_sync_for(device), sampler=sampler, thermal=thermal)
        idle_w = None
        if device.kind == "cuda":
            idle = measure_idle(device, meter, config.idle_s)
            emit(idle)
            idle_w = idle["power_w"]
        from bench.powerlimit import Limiter

        limiter = Limiter(device)
        for cell in todo:
            # each cell's limit before its model and warm-up (plan groups cells by limit)
            pl_w, pl_set_w = limiter.at(cell)
            group = (cell.model, cell.dtype, cell.input_len, cell.output_len,
                     cell.power_limit_w, cell.power_limit_frac)
            loaded = session.get(cell.model, cell.dtype)
            if isinstance(loaded, str):  # the model could not be built: every cell says why
                raw = CellRaw(cell, "oom", error=loaded, pid=os.getpid())
            elif group in oom_at and cell.batch_size > oom_at[group]:
                raw = CellRaw(cell, "skipped", error=f"batch {oom_at[group]} ran out of memory",
                              pid=os.getpid())
            else:
                wl, spec = loaded
                before = other_processes(device, ours)
                raw = _run_one(cell, wl, spec, meter, config, absent, idle_w, sampler, emit)
                after = other_processes(device, ours)
                known = before is not None and after is not None
                others = sorted(set(before or []) | set(after or []))
                raw = replace(raw, contended=bool(others) if known else None,
                              other_pids=others, pid=os.getpid(), engine=wl.describe())
                if raw.status == "oom":
                    oom_at[group] = cell.batch_size
                    # Compiled code, CUDA graphs and caches of a failed call (a failed
                    # capture may hold its pool): rebuilt from nothing for the next cell.
                    session.release()
            if pl_set_w is not None:
                raw = replace(raw, power_limit_w=pl_w, power_limit_set_w=pl_set_w,
                              sm_clock_mhz=limiter.clock_mhz())
            rec = figures.cell_record(raw)
            flush()
            emit(rec)
    finally:
        session.release()
        if sampler is not None:
            sampler.stop()
        if thermal is not None:
            thermal.stop()
        flush()
        for s in srcs:
            close = getattr(s, "close", None)
            if close:
                close()


class _Models:
    """The one model a device session holds, built when a cell first needs it.

    Before a build, the previous model, its caches and compiled graphs are released
    (two models never share the GPU), and the new model's weights are checked against
    the memory the device can give. A model too big, or whose build runs out of memory,
    is remembered with the reason: its cells are recorded ``oom`` and the session goes
    on to the next model.
    """

    def __init__(self, device: Device, config: SweepConfig) -> None:
        self.device = device
        self.config = config
        self.key: tuple[str, str] | None = None
        self.held: tuple[Workload, models.ModelSpec] | None = None
        self.failed: dict[tuple[str, str], str] = {}

    def release(self) -> None:
        if self.held is not None:
            self.held[0].close()
        self.held, self.key = None, None
        _free_memory(self.device)

    def get(self, model: str, dtype: str) -> tuple[Workload, models.ModelSpec] | str:
        """The built model, or why it cannot be built on this device."""
        key = (model, dtype)
        if key in self.failed:
            return self.failed[key]
        if self.key == key and self.held is not None:
            return self.held
        self.release()
        spec = models.get(model)
        why = weights_do_not_fit(spec, dtype, memory_cap_bytes(self.device))
        if why:
            self.failed[key] = why
            return why
        wl = make_workload(self.config.engine, spec, dtype, self.device.torch_device,
                           self.config.seed, self.config.compile, sweep=self.config)
        try:
            wl.prepare()
        except Exception as exc:
            if not _is_oom(exc):
                raise
            why = f"out of memory building the model: {str(exc).splitlines()[0][:200]}"
        if why:  # outside the except block, so the traceback's tensors can be freed
            wl.close()
            del wl
            _free_memory(self.device)
            self.failed[key] = why
            return why
        self.key, self.held = key, (wl, spec)
        return self.held


def _run_one(cell: Cell, wl: Workload, spec: models.ModelSpec, meter: Meter,
             config: SweepConfig, absent: dict[str, str], idle_w: float | None,
             sampler: Any, emit: Callable[[dict], None] = lambda rec: None) -> CellRaw:
    start_cell = getattr(wl, "start_cell", None)  # an engine's optional hook
    if callable(start_cell):
        start_cell()  # the last cell's cache and graphs are not this cell's: never counted
    why = does_not_fit(cell, spec, memory_cap_bytes(cell.device))
    if why:
        return CellRaw(cell, "oom", error=why)
    try:
        repeats, prefill, warm = cells.measure_with_warmup(cell, wl, meter, config, absent,
                                                           emit)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        oom = True
    else:
        oom = False
    if oom:  # outside the except block; the caller releases the model and its graphs
        return CellRaw(cell, "oom", error="out of memory")
    trace = None
    if sampler is not None:
        trs = sampler.traces(since_ns=repeats[0]["t0_ns"] - 1_000_000_000)
        # the timeline phases need one device's power; a group of GPUs has none of its own
        trace = trs[0].power_valid() if len(trs) == 1 else None
    return CellRaw(cell, "ok", repeats=repeats, prefill=prefill, idle_power_w=idle_w,
                   trace=trace, model_spec=spec, warmup=warm)


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
                queue: Any, parent: int | None = None, parallel_gpus: int = 1) -> None:
    """Entry point of a worker process (spawn): one GPU, visible as cuda:0 (a group of GPUs:
    all of them, as cuda:0, cuda:1, ... in index order).

    ``parallel_gpus``: the number of GPU workers the runner started together.
    """
    if parent is not None:
        _die_with_parent(parent)
    uuid = device_dict.get("uuid")
    if uuid:
        os.environ["CUDA_VISIBLE_DEVICES"] = uuid  # before torch is imported here
    device = Device.from_dict(device_dict)
    device.info["torch_device"] = os.environ.get("JOULEBENCH_MODEL_DEVICE") or "cuda:0"
    todo = [c.with_device(device) for c in todo]
    try:
        run_device(device, todo, config, run_dir, queue.put, {os.getppid()},
                   parallel_gpus=parallel_gpus)
        queue.put({"type": "done", "device": device.label})
    except KeyboardInterrupt:
        queue.put({"type": "error", "device": device.label, "error": "interrupted"})
    except BaseException as exc:  # reported to the parent, which keeps what was measured
        queue.put({"type": "error", "device": device.label,
                   "error": f"{exc.__class__.__name__}: {exc}"})
