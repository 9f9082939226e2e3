"""Run and resume a sweep: GPU locks, planning, one device session per GPU, the journal.

:func:`run` and :func:`resume` are the library's entry points (the CLI only parses and
prints). The CPU is measured in this process; each GPU in a worker process of its own
(``bench.worker``), in parallel. Every finished cell goes to the journal (fsynced) before
the next starts; the result document is written atomically at the end, also when the
sweep is interrupted or fails. What a cell measures is in ``bench.cells``; the sweep's
configuration and plan in ``bench.sweep``.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import devices as D
from bench import models
from bench.devices import Device, Inventory
from bench.errors import BenchError
from bench.results import io
from bench.rundir import Run, open_journal
from bench.sweep import Cell, SweepConfig, device_groups, plan
from bench.worker import run_device, worker_main

__all__ = ["Cell", "GpuLock", "Outcome", "RunFailed", "SweepConfig", "execute", "pending",
           "plan", "resume", "run", "start_run"]

Event = Callable[[dict], None]


class RunFailed(Exception):
    """A device's workload failed; the finished cells are in ``result_path``."""

    def __init__(self, message: str, result_path: Path) -> None:
        super().__init__(message)
        self.result_path = result_path


@dataclass(frozen=True)
class Outcome:
    """What :func:`run` or :func:`resume` did: the run and how many cells it measured."""

    run: Run
    result_path: Path
    measured: int


def new_run_id() -> str:
    """A sortable, unique run id: UTC time and 4 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def start_run(config: SweepConfig, devices: list[Device], out: Path | str | None,
              nodes: list[dict] | None = None) -> Run:
    """Create the run directory (``out``, or ``results/<run_id>``) and its journal header.

    The configuration is recorded resolved for the devices' kind (one kind per run).
    ``nodes``: a cluster run's nodes and their provenance (``bench.cluster``).
    """
    kinds = {d.kind for d in devices}
    if len(kinds) != 1:
        raise BenchError("a run measures one kind of device (GPUs or the CPU)")
    config = config.resolved(kinds.pop())
    run_id = new_run_id()
    run_dir = Path(out) if out else Path("results") / run_id
    if (run_dir / "result.json").exists() or (run_dir / "journal.jsonl").exists():
        raise BenchError(f"{run_dir} already holds a run; choose another --out or --resume it")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    run = Run(run_dir, run_id, config, devices, nodes=list(nodes or []))
    io.append_journal(run.journal, {"type": "run", "run_id": run_id,
                                    "started_utc": run.started_utc,
                                    "config": config.to_dict(),
                                    "devices": [d.to_dict() for d in devices],
                                    **({"nodes": run.nodes} if nodes else {})})
    return run


def resume_run(run_dir: Path | str, inventory: Inventory | None = None) -> Run:
    """Reopen a run from its journal to measure the cells it lacks.

    Raises:
        BenchError: no journal; a GPU of the run is not on this machine.
    """
    run = open_journal(run_dir)
    if run.devices and not run.config.is_resolved:  # a journal from before resolution
        run.config = run.config.resolved(run.devices[0].kind)
    gpus = [d for d in run.devices if d.kind == "cuda"]
    if gpus:
        inv = inventory or D.discover()
        have = {g.uuid: g for g in inv.gpus}
        for g in gpus:
            if g.uuid not in have:
                raise BenchError(f"GPU {g.index} ({g.uuid}) of this run is not on this machine")
    return run


def pending(run: Run) -> list[Cell]:
    """The run's cells that have no record yet, in plan order.

    A spread run's cell is done when any GPU of its model measured it.
    """
    done = run.done_cell_ids()
    if run.config.spread:
        slots = {(c.get("device_name"), c["cell_id"].split("/", 1)[1]) for c in run.cells
                 if c["cell_id"] in done}
        return [c for c in plan(run.config, run.devices)
                if (c.device.name, c.cell_id.split("/", 1)[1]) not in slots]
    return [c for c in plan(run.config, run.devices) if c.cell_id not in done]


def check_models(config: SweepConfig) -> None:
    """Load every model of the sweep, so a bad name or model file stops before any work.

    Raises:
        BenchError: an unknown model, an unreadable or impossible model file, lengths
            past the model's positions (GPT-2 would fail with a device-side assert).
    """
    longest = max(config.input_lens) + max(config.output_lens)
    for m in config.models:
        spec = models.get(m)
        limit = spec.max_positions
        if limit is not None and longest > limit:
            raise BenchError(f"model {spec.name} takes at most {limit} positions; the sweep "
                             f"needs {longest} (input + output length)")


def check_gpus_per_cell(config: SweepConfig, devs: list[Device],
                        on_notice: Callable[[str], None] | None = None) -> list[Device]:
    """The selected devices less the GPUs ``--gpus-per-cell`` leaves over (said in one line).

    Raises:
        BenchError: fewer GPUs selected than one cell needs (the CPU counts as none).
    """
    n = config.gpus_per_cell
    assert isinstance(n, int), "resolve --gpus-per-cell auto first (auto_gpus_per_cell)"
    if n <= 1:
        return devs
    gpus = [d for d in devs if d.kind == "cuda"]
    if len(gpus) < n:
        raise BenchError(f"--gpus-per-cell {n}: {len(gpus)} GPU(s) selected; a cell needs {n}")
    _, left = device_groups(config, devs)
    if left and on_notice:
        on_notice(f"--gpus-per-cell {n}: {len(gpus)} GPUs make {len(gpus) // n} group(s) of "
                  f"{n}; GPU {', '.join(str(d.index) for d in left)} left out")
    return [d for d in devs if d not in left]


def auto_gpus_per_cell(config: SweepConfig, devs: list[Device],
                       on_notice: Callable[[str], None] | None = None) -> SweepConfig:
    """``config`` with ``--gpus-per-cell auto`` resolved: the smallest N whose N GPUs hold
    every model's weights (the fit check, ``worker.weights_do_not_fit``, against N x 90%
    of one GPU's memory: the least of the selected GPUs', or ``JOULEBENCH_MEMORY_CAP_BYTES``);
    1 on the CPU; every selected GPU where none fits (its cells are then ``oom``, with
    the reason). Said in one line.
    """
    from dataclasses import replace

    from bench.sweep import DEVICE_DEFAULTS
    from bench.worker import weights_do_not_fit

    if config.gpus_per_cell != "auto":
        return config
    gpus = [d for d in devs if d.kind == "cuda"]
    mems = [d.info.get("memory_total_bytes") for d in gpus]
    cap = os.environ.get("JOULEBENCH_MEMORY_CAP_BYTES")
    per_gpu = float(cap) if cap else min((float(m) for m in mems if m), default=0.0) * 0.9
    n = 1
    if gpus and per_gpu > 0:
        dtype = config.dtype or DEVICE_DEFAULTS["cuda"].dtype
        n = next((k for k in range(1, len(gpus) + 1) if all(
            weights_do_not_fit(models.get(m), dtype, k * per_gpu) is None
            for m in config.models)), len(gpus))
    if on_notice:
        on_notice(f"--gpus-per-cell auto: {n} (every model's weights fit on {n} GPU(s) of "
                  f"{per_gpu / 1e9:.3g} GB usable)" if gpus and per_gpu > 0 else
                  "--gpus-per-cell auto: 1 (no GPU memory to size by)")
    return replace(config, gpus_per_cell=n)


def check_node_power(config: SweepConfig, devs: list[Device]) -> str | None:
    """Refuse a BMC the run cannot use, before anything is measured.

    The node scope is the whole chassis: with several devices measured in parallel each
    cell's node energy would hold the others' work too, so a run with ``node_power``
    measures one device.

    Returns:
        None, or why the BMC cannot be read now (the run goes on with ``node`` null).

    Raises:
        BenchError: more than one device; a bad BMC address; refused credentials.
    """
    from bench.worker import open_node_source

    if len(devs) > 1:
        raise BenchError("--node-power measures the whole node: select one device per run "
                         "(for example --gpu 0)")
    src, why = open_node_source(config)
    if src is not None:
        src.close()
    return why


def run(config: SweepConfig, gpu: str | list[int] = "auto", out: Path | str | None = None,
        on_start: Callable[[Run, list[Cell]], None] | None = None,
        on_event: Event | None = None, on_notice: Callable[[str], None] | None = None,
        inventory: Inventory | None = None) -> Outcome:
    """Measure a new sweep on the devices ``gpu`` names; always writes result.json.

    The GPUs are locked before the run directory exists (a refused run leaves nothing).

    Args:
        config: the sweep (resolved here for the devices' kind).
        gpu: ``--gpu``'s value, parsed or not (see ``bench.devices.parse_gpu_spec``).
        out: the run directory (default ``results/<run_id>``).
        on_start: called with the run and its planned cells before any measurement.
        on_event: every record and progress event as it comes.
        on_notice: one-line notices for the user (a fallback to the CPU).
        inventory: the machine's devices (default: discovered).

    Raises:
        BenchError: a bad model, device selection or run directory (nothing measured).
        RunFailed: a device's workload failed (the finished cells are kept).
        KeyboardInterrupt: Ctrl-C or SIGTERM (the finished cells are kept).
    """
    check_models(config)
    inv = inventory or D.discover()
    devs, notice = D.select(gpu, inv)
    if notice and on_notice:
        on_notice(notice)
    config = auto_gpus_per_cell(config, devs, on_notice)
    devs = check_gpus_per_cell(config, devs, on_notice)
    if config.node_power:
        why = check_node_power(config, devs)
        if why and on_notice:
            on_notice(f"node power: {why}; the node scope will be null")
    with GpuLock(devs):
        limits = _power_limits_first(config, devs, on_notice)
        run_ = start_run(config, devs, out)
        return _measure_at_limits(run_, limits, on_start, on_event, on_notice)


def resume(run_dir: Path | str, on_start: Callable[[Run, list[Cell]], None] | None = None,
           on_event: Event | None = None, inventory: Inventory | None = None,
           on_notice: Callable[[str], None] | None = None) -> Outcome:
    """Continue a run from its journal: only the cells it lacks; always writes result.json.

    A run whose every cell is measured and whose result.json exists is left as it is
    (``measured`` is 0).

    Raises:
        BenchError: no journal, a GPU of the run is missing, a GPU is locked.
        RunFailed, KeyboardInterrupt: as :func:`run`.
    """
    run_ = resume_run(run_dir, inventory)
    if not pending(run_) and run_.result_path.exists():
        with GpuLock(run_.devices):  # a killed run's power limits go back all the same
            _power_limits_first(SweepConfig(), run_.devices, on_notice)
        return Outcome(run_, run_.result_path, 0)
    with GpuLock(run_.devices):
        limits = _power_limits_first(run_.config, run_.devices, on_notice)
        return _measure_at_limits(run_, limits, on_start, on_event, on_notice)


def _power_limits_first(config: SweepConfig, devs: list[Device],
                        on_notice: Callable[[str], None] | None) -> dict:
    """Under the GPUs' locks, before any work: put back what a killed run left, then
    check the power-limit axis (see ``bench.powerlimit``)."""
    from bench import powerlimit

    for line in powerlimit.restore_stale(devs):
        if on_notice:
            on_notice(line)
    return powerlimit.check(config, devs)


def _measure_at_limits(run_: Run, limits: dict,
                       on_start: Callable[[Run, list[Cell]], None] | None,
                       on_event: Event | None,
                       on_notice: Callable[[str], None] | None) -> Outcome:
    """:func:`_measure`, the GPUs' original power limits saved before and put back after,
    however it ends (without the axis: nothing is set or put back)."""
    if not limits:
        return _measure(run_, on_start, on_event)
    from bench import powerlimit

    powerlimit.save_originals(run_.run_dir, limits, run_.devices)
    try:
        return _measure(run_, on_start, on_event)
    finally:
        try:
            lines = powerlimit.restore(run_.run_dir)
        except BenchError as exc:
            lines = [str(exc)]
        for line in lines:
            if on_notice:
                on_notice(line)


def _measure(run_: Run, on_start: Callable[[Run, list[Cell]], None] | None,
             on_event: Event | None) -> Outcome:
    todo = pending(run_)
    if on_start:
        on_start(run_, todo)
    path = execute(run_, on_event)
    return Outcome(run_, path, len(todo))


class GpuLock:
    """An exclusive lock per GPU UUID, so two bench runs never measure the same GPU.

    A file lock (flock) in ``JOULEBENCH_LOCK_DIR`` (default: the system temp folder);
    the kernel releases it when the process ends, however it ends.
    """

    def __init__(self, devices: list[Device]) -> None:
        self.devices = [d for d in devices if d.kind == "cuda"]
        self._files: list[Any] = []

    def __enter__(self) -> GpuLock:
        import fcntl
        import tempfile

        folder = Path(os.environ.get("JOULEBENCH_LOCK_DIR") or tempfile.gettempdir())
        folder.mkdir(parents=True, exist_ok=True)
        try:
            for d in self.devices:
                f = open(folder / f"joulebench-{d.uuid}.lock", "a+")  # noqa: SIM115
                try:
                    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    f.seek(0)
                    holder = f.read().strip() or "another process"
                    f.close()
                    raise BenchError(f"GPU {d.index} ({d.uuid}) is being measured by another "
                                     f"bench run ({holder})") from None
                f.seek(0)
                f.truncate()
                f.write(f"pid {os.getpid()}")
                f.flush()
                self._files.append(f)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for f in self._files:
            f.close()
        self._files.clear()


def execute(run: Run, on_record: Event | None = None,
            measure: Callable[[Run, Callable[[dict], None]], list[str]] | None = None) -> Path:
    """Measure the run's pending cells; always writes result.json, even on failure.

    The caller holds the run's GPU locks (:func:`run` and :func:`resume` do). GPUs are
    measured in worker processes, one per GPU, in parallel; the CPU in this process. Out
    of memory: the cell is recorded as ``oom`` and larger batches of that model on that
    device are skipped. A failing device is reported and the others go on; the document
    then has status ``failed`` and :class:`RunFailed` is raised. Ctrl-C or SIGTERM:
    status ``interrupted``, with every finished cell. ``measure`` replaces how the pending
    cells are measured (``bench.cluster``: on Ray actors); it returns the errors.
    """
    on_record = on_record or (lambda rec: None)
    status = "failed"
    try:
        errors = (measure or _execute)(run, on_record)
        if errors:
            raise RunFailed("; ".join(errors), run.result_path)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    except RunFailed:
        raise
    except Exception as exc:  # the workload's own failure, in this process (the CPU)
        raise RunFailed(f"{exc.__class__.__name__}: {exc}", run.result_path) from exc
    finally:
        run.finish(status)
    return run.result_path


def _emit_to(run: Run, on_record: Callable[[dict], None]) -> Callable[[dict], None]:
    def emit(rec: dict) -> None:
        if rec.get("type") != "progress":  # progress events are shown, not journaled
            run.add(rec)
        on_record(rec)

    return emit


def _execute(run: Run, on_record: Callable[[dict], None]) -> list[str]:
    todo = pending(run)
    emit = _emit_to(run, on_record)
    errors: list[str] = []
    # a worker per device cells run on: a GPU, or a group of GPUs (--gpus-per-cell)
    gpu_devs = [d for d in dict.fromkeys(c.device for c in todo) if d.kind == "cuda"]
    procs = _start_workers(run, gpu_devs, todo) if gpu_devs else None
    try:
        for dev in (d for d in run.devices if d.kind != "cuda"):
            mine = [c for c in todo if c.device == dev]
            if mine:
                run_device(dev, mine, run.config, run.run_dir, emit)
        if procs:
            errors.extend(_collect(procs, emit))
    except BaseException:
        if procs:
            _stop_workers(procs, at_once=True)  # interrupted: no need to wait for them
        raise
    if procs:
        _stop_workers(procs)
    return errors


Workers = tuple[Any, dict[str, Any]]  # the queue, and the worker process per device label


def _start_workers(run: Run, gpus: list[Device], todo: list[Cell]) -> Workers:
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = {}
    for d in gpus:
        mine = [c for c in todo if c.device == d]
        p = ctx.Process(target=worker_main, name=f"joulebench-{d.label}",
                        args=(d.to_dict(), mine, run.config, str(run.run_dir), queue,
                              os.getpid(), len(gpus)))
        p.start()
        workers[d.label] = p
    return queue, workers


def _collect(procs: Workers, emit: Callable[[dict], None]) -> list[str]:
    """Journal what the workers send until each is done; a dead worker is an error."""
    import queue as q

    queue, workers = procs
    running = set(workers)
    errors = []
    while running:
        try:
            rec = queue.get(timeout=1.0)
        except q.Empty:
            for label in list(running):
                if not workers[label].is_alive():
                    running.discard(label)
                    errors.append(f"{label}: worker exited with code "
                                  f"{workers[label].exitcode}")
            continue
        kind = rec.get("type")
        if kind == "done":
            running.discard(rec["device"])
        elif kind == "error":
            running.discard(rec["device"])
            errors.append(f"{rec['device']}: {rec['error']}")
        else:
            emit(rec)
    return errors


def _stop_workers(procs: Workers, at_once: bool = False) -> None:
    _, workers = procs
    for p in workers.values():
        p.join(timeout=0 if at_once else 5)
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
