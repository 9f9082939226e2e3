"""A run directory: the fsynced journal while running, result.json and trace.parquet at the end.

The journal's first line is the run header (config and devices); then one line per
finished cell, idle baseline and energy source. Raw samples are flushed after every cell
as trace part files, so a run killed with SIGKILL loses at most the cell in flight, and
``bench run --resume`` continues it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import provenance
from bench.devices import Device
from bench.errors import BenchError
from bench.results import figures, io, schema
from bench.sweep import SweepConfig

PARTS = "trace-parts"
NODE_TRACE_INDEX = io.NODE_TRACE_INDEX


@dataclass
class Run:
    """A run directory being written."""

    run_dir: Path
    run_id: str
    config: SweepConfig
    devices: list[Device]
    started_utc: str = field(default_factory=provenance.utc_now)
    cells: list[dict] = field(default_factory=list)
    sources: list[dict] = field(default_factory=list)
    idle: list[dict] = field(default_factory=list)
    nodes: list[dict] = field(default_factory=list)  # a cluster run's nodes (bench.cluster)

    @property
    def journal(self) -> Path:
        return self.run_dir / "journal.jsonl"

    @property
    def result_path(self) -> Path:
        return self.run_dir / "result.json"

    @property
    def parts_dir(self) -> Path:
        return self.run_dir / PARTS

    def add(self, record: dict) -> None:
        """Keep a record and journal it (fsynced): cell, idle or source."""
        # Kept first: SIGTERM (raised as KeyboardInterrupt) arriving during the journal's
        # fsync would otherwise leave result.json without a cell the journal already has.
        if record["type"] == "cell":
            self.cells[:] = [c for c in self.cells if not superseded(c, record, self.config)]
        {"cell": self.cells, "idle": self.idle, "source": self.sources}[record["type"]].append(
            record)
        io.append_journal(self.journal, record)

    def done_cell_ids(self) -> set[str]:
        """The cells measured: every record but ``lost`` (a lost cell is measured again)."""
        return {c["cell_id"] for c in self.cells if c.get("status") != "lost"}

    def document(self, status: str) -> dict:
        def strip(recs: list[dict]) -> list[dict]:
            return [{k: v for k, v in r.items() if k != "type"} for r in recs]

        return {
            "schema": schema.SCHEMA_ID,
            "schema_version": schema.SCHEMA_VERSION,
            "run_id": self.run_id,
            "status": status,
            "started_utc": self.started_utc,
            "finished_utc": provenance.utc_now(),
            "provenance": {**provenance.collect(),
                           **({"nodes": self.nodes} if self.nodes else {})},
            "config": self.config.to_dict(),
            "devices": [d.to_dict() for d in self.devices],
            "energy_sources": strip(self.sources),
            "idle": strip(self.idle),
            "cells": self.cells,
            "summary": figures.run_summary(self.cells),
        }

    def finish(self, status: str) -> Path:
        """Merge the trace parts and write result.json atomically."""
        doc = self.document(status)
        doc["trace"] = merge_trace_parts(self.run_dir)
        path = io.write_json_atomic(self.result_path, doc)
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        return path


def superseded(old: dict, new: dict, config: SweepConfig) -> bool:
    """Whether cell record ``new`` replaces ``old``: ``old`` is ``lost`` and ``new`` is
    the same cell (in a spread run: the same cell on any GPU of the same model)."""
    if old.get("status") != "lost":
        return False
    if not config.spread:
        return bool(old["cell_id"] == new["cell_id"])
    return bool(old.get("device_name") == new.get("device_name") and
                old["cell_id"].split("/", 1)[1] == new["cell_id"].split("/", 1)[1])


def write_trace_part(run_dir: Path, trace: Any, seq: int, session: int) -> None:
    """Write one device's new samples as a part file (the BMC's: ``NODE_TRACE_INDEX``).

    Part names sort by device, then session (wall-clock ns at its start: a resumed run's
    parts come after the killed run's), then order within the session.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = len(trace)
    if n == 0:
        return
    parts = Path(run_dir) / PARTS
    parts.mkdir(exist_ok=True)
    cols = {"device_index": [trace.index] * n}
    for name in io.TRACE_COLUMNS[1:]:
        cols[name] = getattr(trace, name)
    who = "node" if trace.index == NODE_TRACE_INDEX else f"gpu{trace.index:03d}"
    path = parts / f"{who}-{session:020d}-{seq:06d}.parquet"
    with io.atomic_path(path) as tmp:
        pq.write_table(pa.table(cols), tmp)


def merge_trace_parts(run_dir: Path) -> dict:
    """Merge the part files, and the trace.parquet a resumed run already has, into
    trace.parquet: by device, then time, each sample once.

    A run resumed after it wrote its document (a failed or interrupted one) keeps the
    samples of its earlier cells: they are in its trace.parquet, not in parts.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    parts = sorted(p for p in (Path(run_dir) / PARTS).glob("*.parquet")
                   if p.name.startswith(("gpu", "node"))) \
        if (Path(run_dir) / PARTS).is_dir() else []
    path = Path(run_dir) / io.TRACE_FILE
    tables = [pq.read_table(path)] if path.is_file() and not path.is_symlink() else []
    tables += [pq.read_table(p) for p in parts]
    if not tables:
        return {"file": None, "reason": "no sampled device (CPU energy is read at window "
                "edges)"}
    table = pa.concat_tables(tables)
    dev = table.column("device_index").to_numpy()
    t = table.column("t_ns").to_numpy()
    order = np.lexsort((t, dev))  # by device, then time (stable)
    keep = np.ones(order.size, bool)
    keep[1:] = (dev[order][1:] != dev[order][:-1]) | (t[order][1:] != t[order][:-1])
    table = table.take(pa.array(order[keep]))
    with io.atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return {"file": io.TRACE_FILE, "sha256": io.sha256_file(path), "rows": table.num_rows,
            "columns": list(io.TRACE_COLUMNS)}


def open_journal(run_dir: Path | str) -> Run:
    """Rebuild a :class:`Run` from its journal, to resume it.

    Raises:
        BenchError: no journal, or no run header in it.
    """
    run_dir = Path(run_dir)
    records = io.read_journal(run_dir / "journal.jsonl")
    if not records or records[0].get("type") != "run":
        raise BenchError(f"{run_dir}: no run journal to resume")
    head = records[0]
    try:
        config = SweepConfig.from_dict(head["config"])
        devices = [Device.from_dict(d) for d in head["devices"]]
        run = Run(run_dir, head["run_id"], config, devices, started_utc=head["started_utc"],
                  nodes=list(head.get("nodes") or []))
    except (KeyError, TypeError, ValueError) as exc:
        raise BenchError(f"{run_dir}: the journal's header is damaged ({exc})") from None
    for rec in records[1:]:
        kind = rec.get("type")
        if kind == "node":  # a node a resumed cluster run added (bench.cluster)
            run.nodes.append({k: v for k, v in rec.items() if k != "type"})
            continue
        target = {"cell": run.cells, "idle": run.idle, "source": run.sources}.get(str(kind))
        if target is not None:
            if kind == "cell":
                if rec.get("cell_id") in run.done_cell_ids():
                    continue
                run.cells[:] = [c for c in run.cells if not superseded(c, rec, run.config)]
            target.append(rec)
    return run
