"""The sweep: cells = devices x models x dtype x lengths x batch, each measured in windows.

Per cell: warm-up generate calls (outside any window, so compile, allocation and clock
ramp-up are not measured), then ``repeats`` windows. Each window repeats generate calls
until it lasts at least ``min_window_s``. Every finished cell goes to the journal
(fsynced) before the next starts; the result document is written atomically at the end,
also when the sweep is interrupted or fails.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from bench import models
from bench.devices import Device
from bench.errors import BenchError
from bench.results import io
from bench.rundir import Run, open_journal
from bench.worker import run_device, worker_main

DEFAULT_DTYPE = {"cpu": "fp32", "cuda": "bf16"}


@dataclass(frozen=True)
class SweepConfig:
    """What to sweep and how long to measure. None means the device's default."""

    models: tuple[str, ...] = ("tiny-llama",)
    batch_sizes: tuple[int, ...] = (1, 4, 16)
    input_lens: tuple[int, ...] = (32,)
    output_lens: tuple[int, ...] = (32,)
    dtype: str | None = None
    min_window_s: float | None = None
    repeats: int = 3
    warmup: int = 1
    seed: int = 0
    cpu_w_per_logical_cpu: float | None = None
    phases: bool = True
    compile: bool = True
    idle_s: float = 3.0

    def __post_init__(self) -> None:
        if not self.models:
            raise BenchError("no model given")
        for name, vals in (("batch size", self.batch_sizes), ("input length", self.input_lens),
                           ("output length", self.output_lens)):
            if not vals or any(v < 1 for v in vals):
                raise BenchError(f"every {name} must be 1 or more")
        if self.repeats < 1:
            raise BenchError("repeats must be 1 or more")
        if self.warmup < 0:
            raise BenchError("warm-up must be 0 or more")
        if not self.idle_s > 0:
            raise BenchError("the idle window must be positive")
        if self.min_window_s is not None and not self.min_window_s > 0:
            raise BenchError("the minimum window must be positive")
        if self.dtype is not None and self.dtype not in models.DTYPES:
            raise BenchError(f"unknown dtype {self.dtype!r}; use one of {', '.join(models.DTYPES)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> SweepConfig:
        """The inverse of :meth:`to_dict` (unknown keys are an error)."""
        fields = {k: tuple(v) if isinstance(v, list) else v for k, v in d.items()}
        try:
            return cls(**fields)
        except TypeError as exc:
            raise BenchError(f"bad sweep configuration: {exc}") from None


@dataclass(frozen=True)
class Cell:
    """One (device, model, dtype, batch size, input length, output length)."""

    device: Device
    model: str
    dtype: str
    batch_size: int
    input_len: int
    output_len: int

    def with_device(self, device: Device) -> Cell:
        """The same cell on another Device object (a worker's view of its GPU)."""
        return Cell(device, self.model, self.dtype, self.batch_size, self.input_len,
                    self.output_len)

    @property
    def cell_id(self) -> str:
        return (f"{self.device.label}/{self.model}/{self.dtype}/b{self.batch_size}"
                f"/i{self.input_len}/o{self.output_len}")


def load_config_file(path: str) -> dict:
    """A sweep file (TOML) as SweepConfig keyword arguments.

    Keys are SweepConfig's fields: models, batch_sizes, input_lens, output_lens, dtype,
    min_window_s, repeats, warmup, seed, cpu_w_per_logical_cpu, phases, compile, idle_s.

    Raises:
        BenchError: unreadable, not TOML, or an unknown key.
    """
    import tomllib
    from dataclasses import fields

    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except OSError as exc:
        raise BenchError(f"cannot read sweep file {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise BenchError(f"sweep file {path}: not valid TOML ({exc})") from None
    known = {f.name for f in fields(SweepConfig)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise BenchError(f"sweep file {path}: unknown key {unknown[0]!r}; known: "
                         f"{', '.join(sorted(known))}")
    out = {}
    for k, v in data.items():
        if isinstance(v, list):
            v = tuple(v)
        out[k] = v
    for k in ("batch_sizes", "input_lens", "output_lens"):
        if k in out and (not isinstance(out[k], tuple) or
                         not all(isinstance(x, int) and not isinstance(x, bool)
                                 for x in out[k])):
            raise BenchError(f"sweep file {path}: {k} must be a list of integers")
    if "models" in out and (not isinstance(out["models"], tuple) or
                            not all(isinstance(x, str) for x in out["models"])):
        raise BenchError(f"sweep file {path}: models must be a list of names")
    return out


def plan(config: SweepConfig, devices: list[Device]) -> list[Cell]:
    """All cells, grouped so a model is built once per device and batches ascend."""
    cells = []
    for dev in devices:
        dtype = config.dtype or DEFAULT_DTYPE[dev.kind]
        for m in config.models:
            for i in config.input_lens:
                for o in config.output_lens:
                    for b in sorted(config.batch_sizes):
                        cells.append(Cell(dev, m, dtype, b, i, o))
    return cells


def new_run_id() -> str:
    """A sortable, unique run id: UTC time and 4 random hex digits."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(2)


def start_run(config: SweepConfig, devices: list[Device], out: Path | str | None) -> Run:
    """Create the run directory (``out``, or ``results/<run_id>``) and its journal header."""
    run_id = new_run_id()
    run_dir = Path(out) if out else Path("results") / run_id
    if (run_dir / "result.json").exists() or (run_dir / "journal.jsonl").exists():
        raise BenchError(f"{run_dir} already holds a run; choose another --out or --resume it")
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BenchError(f"cannot create run directory {run_dir}: {exc.strerror}") from None
    run = Run(run_dir, run_id, config, devices)
    io.append_journal(run.journal, {"type": "run", "run_id": run_id,
                                    "started_utc": run.started_utc,
                                    "config": config.to_dict(),
                                    "devices": [d.to_dict() for d in devices]})
    return run


def resume_run(run_dir: Path | str, inventory=None) -> Run:
    """Reopen a run from its journal to measure the cells it lacks.

    Raises:
        BenchError: no journal; a GPU of the run is not on this machine.
    """
    from bench import devices as D

    run = open_journal(run_dir, SweepConfig.from_dict)
    gpus = [d for d in run.devices if d.kind == "cuda"]
    if gpus:
        inv = inventory or D.discover()
        have = {g.uuid: g for g in inv.gpus}
        for g in gpus:
            if g.uuid not in have:
                raise BenchError(f"GPU {g.index} ({g.uuid}) of this run is not on this machine")
    return run


def pending(run: Run) -> list[Cell]:
    """The run's cells that have no record yet, in plan order."""
    done = run.done_cell_ids()
    return [c for c in plan(run.config, run.devices) if c.cell_id not in done]


class GpuLock:
    """An exclusive lock per GPU UUID, so two bench runs never measure the same GPU.

    A file lock (flock) in ``JOULEBENCH_LOCK_DIR`` (default: the system temp folder);
    the kernel releases it when the process ends, however it ends.
    """

    def __init__(self, devices: list[Device]) -> None:
        self.devices = [d for d in devices if d.kind == "cuda"]
        self._files: list = []

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

    def __exit__(self, *exc) -> None:
        for f in self._files:
            f.close()
        self._files.clear()


def execute(run: Run, on_record: Callable[[dict], None] | None = None,
            lock: bool = True) -> Path:
    """Measure the run's pending cells; always writes result.json, even on failure.

    GPUs are measured in worker processes, one per GPU, in parallel; the CPU in this
    process. Out of memory: the cell is recorded as ``oom`` and larger batches of that
    model on that device are skipped. A failing device is reported and the others go
    on; the document then has status ``failed``. Ctrl-C or SIGTERM: status
    ``interrupted``, with every finished cell.
    """
    on_record = on_record or (lambda rec: None)
    status = "failed"
    try:
        with GpuLock(run.devices if lock else []):
            errors = _execute(run, on_record)
        if errors:
            raise RuntimeError("; ".join(errors))
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
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
    gpu_devs = [d for d in run.devices if d.kind == "cuda" and any(c.device == d for c in todo)]
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


def _start_workers(run: Run, gpus: list[Device], todo: list[Cell]):
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    workers = {}
    for d in gpus:
        mine = [c for c in todo if c.device == d]
        p = ctx.Process(target=worker_main, name=f"joulebench-{d.label}",
                        args=(d.to_dict(), mine, run.config, str(run.run_dir), queue,
                              os.getpid()))
        p.start()
        workers[d.label] = p
    return queue, workers


def _collect(procs, emit: Callable[[dict], None]) -> list[str]:
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


def _stop_workers(procs, at_once: bool = False) -> None:
    _, workers = procs
    for p in workers.values():
        p.join(timeout=0 if at_once else 5)
        if p.is_alive():
            p.terminate()
            p.join(timeout=5)
