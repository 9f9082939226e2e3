"""Durable writes: an fsynced append-only journal and atomic whole-file writes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path


def _check_finite(obj, where: str = "$") -> None:
    """Refuse NaN and Infinity anywhere in a document (JSON has no such numbers)."""
    if isinstance(obj, float):
        if not math.isfinite(obj):
            raise ValueError(f"non-finite number at {where}")
    elif isinstance(obj, dict):
        for k, v in obj.items():
            _check_finite(v, f"{where}.{k}")
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _check_finite(v, f"{where}[{i}]")


def dumps(obj) -> str:
    """Strict JSON: no NaN/Infinity (ValueError instead), keys kept in order."""
    _check_finite(obj)
    return json.dumps(obj, allow_nan=False, indent=1, ensure_ascii=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_json_atomic(path: Path | str, obj) -> Path:
    """Write ``obj`` as JSON to a temporary name in the same folder, fsync, then rename."""
    path = Path(path)
    text = dumps(obj) + "\n"
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)
    return path


def append_journal(path: Path | str, record: dict) -> None:
    """Append one record as a JSON line, flushed and fsynced before returning."""
    _check_finite(record)
    line = json.dumps(record, allow_nan=False, ensure_ascii=False)
    with open(path, "a", encoding="utf-8") as f:
        f.write(line + "\n")
        f.flush()
        os.fsync(f.fileno())


def read_journal(path: Path | str) -> list[dict]:
    """Records of a journal; a torn last line (a killed writer) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
    return records


TRACE_FILE = "trace.parquet"
TRACE_COLUMNS = ("device_index", "t_ns", "energy_j", "power_w", "latency_ns", "energy_status",
                 "power_status")


def sha256_file(path: Path | str) -> str:
    """SHA-256 of a file, read in 1 MiB blocks."""
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
