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
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from bench import cells, models, provenance, roofline, workload
from bench.devices import Device
from bench.errors import BenchError, NoSensor
from bench.meter import Meter
from bench.results import io, schema

DEFAULT_MIN_WINDOW_S = {"cpu": 2.0, "cuda": 5.0}
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
        if self.min_window_s is not None and not self.min_window_s > 0:
            raise BenchError("the minimum window must be positive")
        if self.dtype is not None and self.dtype not in models.DTYPES:
            raise BenchError(f"unknown dtype {self.dtype!r}; use one of {', '.join(models.DTYPES)}")

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


@dataclass(frozen=True)
class Cell:
    """One (device, model, dtype, batch size, input length, output length)."""

    device: Device
    model: str
    dtype: str
    batch_size: int
    input_len: int
    output_len: int

    @property
    def cell_id(self) -> str:
        return (f"{self.device.label}/{self.model}/{self.dtype}/b{self.batch_size}"
                f"/i{self.input_len}/o{self.output_len}")


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


def energy_sources(device: Device, config: SweepConfig) -> tuple[list, list[dict]]:
    """The meter's sources for a device, and notes on the scopes that have none.

    GPU scope: NVML's counter for the cell's GPU. CPU and DRAM scope: RAPL where readable,
    else (CPU only) the labelled estimate.
    """
    from bench.devices import cpu, rapl

    srcs: list = []
    missing: list[dict] = []
    if device.kind == "cuda":
        from bench.devices.nvml import NvmlEnergySource

        srcs.append(NvmlEnergySource(device.index))
    try:
        rsrcs, why = rapl.sources()
    except NoSensor as exc:
        rsrcs, why = [], str(exc)
    srcs.extend(rsrcs)
    if not any(s.scope == "cpu" for s in rsrcs):
        w = config.cpu_w_per_logical_cpu or cpu.DEFAULT_W_PER_LOGICAL_CPU
        srcs.append(cpu.CpuTimeEstimateSource(w))
        missing.append({"scope": "cpu", "measured": False, "reason": why})
    if not any(s.scope == "dram" for s in rsrcs):
        missing.append({"scope": "dram", "measured": False, "reason": why or "no RAPL dram zone"})
    return srcs, missing


IDLE_WINDOW_S = 3.0


def measure_idle(device: Device, meter: Meter, seconds: float = IDLE_WINDOW_S) -> dict:
    """The device's idle power before the sweep: a window with nothing running on it.

    Reported beside the cells (incremental figures subtract it); never subtracted from
    the plain ones.
    """
    with meter.window(f"idle-{device.label}") as w:
        time.sleep(seconds)
    m = w.result
    scope = cells.primary_scope(device)
    e = m.energy_j(scope)
    return {"device": device.label, "scope": scope, "duration_s": m.duration_s,
            "energy_j": e, "power_w": e / m.duration_s if e is not None else None,
            "method": m.method(scope), "reason": m.reason(scope) if e is None else None}


def _sync_for(device: Device) -> Callable[[], None] | None:
    if device.kind != "cuda":
        return None
    import torch

    return lambda: torch.cuda.synchronize(device.torch_device)


def _is_oom(exc: BaseException) -> bool:
    import torch

    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def memory_cap_bytes(device: Device) -> float | None:
    """Memory a cell may still use on the device: free memory on a GPU, else unknown.

    ``JOULEBENCH_MEMORY_CAP_BYTES`` sets a cap instead (tests use it to simulate a GPU
    that runs out of memory; a user can use it to keep headroom).
    """
    cap = os.environ.get("JOULEBENCH_MEMORY_CAP_BYTES")
    if cap:
        return float(cap)
    if device.torch_device.startswith("cuda"):
        import torch

        free, _ = torch.cuda.mem_get_info(device.torch_device)
        return float(free)
    return None


def _fits(cell: Cell, spec, cap: float | None) -> str | None:
    """None if the cell's memory fits the cap, else why not (weights are already loaded)."""
    if cap is None:
        return None
    from bench.models import arithmetic

    a = arithmetic.of(spec, cell.dtype)
    extra = a.memory_bytes(cell.batch_size, cell.input_len, cell.output_len) - a.weight_bytes
    if os.environ.get("JOULEBENCH_MEMORY_CAP_BYTES"):
        extra += a.weight_bytes  # a simulated cap counts the whole model
    if extra > cap:
        return (f"out of memory (pre-check): needs {extra / 1e9:.3g} GB, "
                f"{cap / 1e9:.3g} GB available")
    return None


@dataclass
class Run:
    """A run directory being written: journal while running, result.json at the end."""

    run_dir: Path
    run_id: str
    config: SweepConfig
    devices: list[Device]
    started_utc: str = field(default_factory=provenance.utc_now)
    cells: list[dict] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    idle: list[dict] = field(default_factory=list)
    traces: list = field(default_factory=list)

    @property
    def journal(self) -> Path:
        return self.run_dir / "journal.jsonl"

    @property
    def result_path(self) -> Path:
        return self.run_dir / "result.json"

    def add(self, record: dict) -> None:
        io.append_journal(self.journal, record)
        self.cells.append(record)

    def document(self, status: str) -> dict:
        ok = [c for c in self.cells if c["status"] == "ok" and c["figures"]]
        tpj = [c["figures"]["output_tokens_per_j"] for c in ok
               if c["figures"]["output_tokens_per_j"] is not None]
        return {
            "schema": schema.SCHEMA_ID,
            "schema_version": schema.SCHEMA_VERSION,
            "run_id": self.run_id,
            "status": status,
            "started_utc": self.started_utc,
            "finished_utc": provenance.utc_now(),
            "provenance": provenance.collect(),
            "config": self.config.to_dict(),
            "devices": [d.to_dict() for d in self.devices],
            "energy_sources": self.sources,
            "idle": self.idle,
            "cells": self.cells,
            "summary": {
                "cells": len(self.cells),
                "ok": len(ok),
                "not_ok": len(self.cells) - len(ok),
                "max_output_tokens_per_j": max(tpj) if tpj else None,
            },
        }

    def finish(self, status: str) -> Path:
        doc = self.document(status)
        doc["trace"] = io.write_trace(self.run_dir, self.traces)
        return io.write_json_atomic(self.result_path, doc)


def start_run(config: SweepConfig, devices: list[Device], out: Path | str | None) -> Run:
    """Create the run directory (``out``, or ``results/<run_id>``) and its journal header."""
    run_id = new_run_id()
    run_dir = Path(out) if out else Path("results") / run_id
    if (run_dir / "result.json").exists() or (run_dir / "journal.jsonl").exists():
        raise BenchError(f"{run_dir} already holds a run; choose another --out")
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


def execute(run: Run, on_cell: Callable[[dict], None] | None = None) -> Path:
    """Measure every cell of the run; always writes result.json, even on failure.

    Out of memory: the cell is recorded as ``oom`` and larger batches of that model on
    that device are skipped. Any other exception is recorded, the document is written
    with status ``failed``, and the exception propagates.
    """
    on_cell = on_cell or (lambda rec: None)
    status = "failed"
    try:
        _execute(run, on_cell)
        status = "complete"
    except KeyboardInterrupt:
        status = "interrupted"
        raise
    finally:
        run.finish(status)
    return run.result_path


def _execute(run: Run, on_cell: Callable[[dict], None]) -> None:
    done = {c["cell_id"] for c in run.cells}
    cells = [c for c in plan(run.config, run.devices) if c.cell_id not in done]
    built: dict = {}
    oom_at: dict = {}
    for dev in run.devices:
        srcs, missing = energy_sources(dev, run.config)
        run.sources.extend([{"device": dev.label, "name": s.name, "scope": s.scope,
                             "method": s.method, "description": s.description} for s in srcs])
        run.sources.extend([{"device": dev.label, **m} for m in missing])
        sampler = None
        if dev.kind == "cuda":
            from bench.sampler import Sampler

            # Sampled at 1 kHz for the whole device's cells: window edges are then
            # interpolated between the counter's updates, not read from a stale counter.
            sampler = Sampler([dev.index], rate_hz=1000.0).start()
        meter = Meter(srcs, sync=_sync_for(dev), sampler=sampler)
        idle_w = None
        if dev.kind == "cuda":
            idle = measure_idle(dev, meter)
            run.idle.append(idle)
            idle_w = idle["power_w"]
        absent = {m["scope"]: m["reason"] for m in missing
                  if not any(s.scope == m["scope"] for s in srcs)}
        try:
            for cell in (c for c in cells if c.device == dev):
                key = (cell.model, cell.dtype)
                if key not in built:
                    built.clear()  # one model in memory at a time
                    spec = models.get(cell.model)
                    model = models.build(spec, cell.dtype, dev.torch_device, run.config.seed)
                    workload.prepare(model)
                    built[key] = (model, spec)
                model, spec = built[key]
                group = (dev.label, cell.model, cell.dtype, cell.input_len, cell.output_len)
                if group in oom_at and cell.batch_size > oom_at[group]:
                    rec = cells.record(cell, "skipped",
                                       error=f"batch {oom_at[group]} ran out of memory")
                else:
                    rec = _run_one(cell, model, spec, meter, run.config, absent, idle_w,
                                   sampler)
                    if rec["status"] == "oom":
                        oom_at[group] = cell.batch_size
                run.add(rec)
                on_cell(rec)
        finally:
            built.clear()
            if sampler is not None:
                sampler.stop()
                run.traces.extend(sampler.traces())
            for s in srcs:
                close = getattr(s, "close", None)
                if close:
                    close()


def _run_one(cell: Cell, model, spec, meter: Meter, config: SweepConfig,
             absent: dict[str, str], idle_w: float | None, sampler) -> dict:
    why = _fits(cell, spec, memory_cap_bytes(cell.device))
    if why:
        return cells.record(cell, "oom", error=why)
    min_window_s = config.min_window_s or DEFAULT_MIN_WINDOW_S[cell.device.kind]
    try:
        repeats, prefill = cells.measure(cell, model, spec.config["vocab_size"], meter,
                                         config, min_window_s, absent, config.phases)
    except Exception as exc:
        if not _is_oom(exc):
            raise
        oom = True
    else:
        oom = False
    if oom:  # outside the except block, so the traceback's tensors can be freed
        _free_memory(cell.device)
        return cells.record(cell, "oom", error="out of memory")
    scope = cells.primary_scope(cell.device)
    trace = None
    if sampler is not None:
        tr = next(t for t in sampler.traces() if t.index == cell.device.index)
        trace = tr.power_valid()
    ph = cells.phases(repeats, prefill, scope, cell.batch_size, cell.input_len,
                      cell.output_len, trace)
    rec = cells.record(cell, "ok", repeats, idle_power_w=idle_w, phases_block=ph)
    rec["roofline"] = roofline.cell_roofline(
        cell.device, spec, cell.dtype, cell.batch_size, cell.input_len, cell.output_len,
        rec["figures"]["output_tokens_per_j"])
    return rec


def _free_memory(device: Device) -> None:
    import gc

    gc.collect()
    if device.kind == "cuda":
        import torch

        torch.cuda.empty_cache()
