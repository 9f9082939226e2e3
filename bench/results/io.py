"""Durable io: the fsynced journal, one atomic whole-file write, and the trace reader."""

from __future__ import annotations

import itertools
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from bench.errors import BenchError

_serial = itertools.count()


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
        pass  # some filesystems cannot fsync a folder; the rename still happened
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as f:
        os.fsync(f.fileno())


@contextmanager
def atomic_path(path: Path | str) -> Iterator[Path]:
    """A temporary path next to ``path`` that becomes ``path`` when the block ends cleanly.

    The caller (pyarrow, matplotlib, ``open``) writes the whole file to the yielded path;
    on a clean exit it is fsynced, renamed over ``path`` with ``os.replace`` and the folder
    is fsynced, so a reader sees the old file or the new one, never a torn one. If the
    block raises, the temporary file is removed and ``path`` is left as it was.

    Raises:
        BenchError: the folder of ``path`` does not exist or cannot be written.
    """
    path = Path(path)
    if not path.parent.is_dir():
        raise BenchError(f"cannot write {path}: {path.parent} is not a folder")
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{next(_serial)}")
    try:
        yield tmp
        _fsync_file(tmp)
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(path.parent)


def _bench_error(path: Path, exc: OSError) -> BenchError:
    return BenchError(f"cannot write {path}: {exc.strerror or exc.__class__.__name__}")


def write_bytes_atomic(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path``.

    Raises:
        BenchError: the file cannot be written (missing folder, no permission, disk full).
    """
    path = Path(path)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            f.write(data)
            f.flush()
    except OSError as exc:
        raise _bench_error(path, exc) from None
    return path


def write_text_atomic(path: Path | str, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns ``path``.

    Raises:
        BenchError: the file cannot be written.
    """
    return write_bytes_atomic(path, text.encode("utf-8"))


def write_json_atomic(path: Path | str, obj) -> Path:
    """Write ``obj`` as strict JSON (:func:`dumps`) to ``path`` atomically; returns ``path``.

    Raises:
        ValueError: NaN or Infinity in ``obj`` (nothing is written).
        BenchError: the file cannot be written.
    """
    return write_text_atomic(path, dumps(obj) + "\n")


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
NODE_TRACE_INDEX = -1  # device_index of the BMC's node-power samples in trace.parquet
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


def read_trace(path: Path | str) -> dict:
    """The raw-sample trace as arrays, one per column of :data:`TRACE_COLUMNS`.

    Returns:
        {column: numpy array}; ``t_ns`` in ns, ``energy_j`` in J, ``power_w`` in W,
        ``*_status`` the NVML return code of each read (0 = success).

    Raises:
        load.Invalid: not a readable Parquet file, or a column is missing.
    """
    import pyarrow.parquet as pq

    from bench.results.load import Invalid

    path = Path(path)
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises many types (OSError, ArrowInvalid, ...)
        raise Invalid(f"{path.name} is not a readable Parquet file "
                      f"({exc.__class__.__name__})") from None
    missing = [c for c in TRACE_COLUMNS if c not in table.column_names]
    if missing:
        raise Invalid(f"{path.name} lacks column {missing[0]}")
    return {c: table.column(c).to_numpy() for c in TRACE_COLUMNS}
