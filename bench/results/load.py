"""The safe loader: result documents and table files read once, with caps, from hostile input.

No pickle and no eval; a size cap, bounded nesting, no NaN/Infinity or huge numbers, file
references that must stay inside the run directory, and table files (CSV, Parquet) whose
read errors become one line. Every reader of results (validate, table, compare, submit,
report, the CLI) goes through here; the checks themselves live in ``validate``.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

from bench.errors import BenchError

MAX_DOCUMENT_BYTES = 64 << 20
MAX_TRACE_BYTES = 8 << 30
MAX_TABLE_BYTES = 1 << 30
MAX_DEPTH = 32
MAX_INT = 2 ** 63 - 1


class Invalid(BenchError):
    """The document or file cannot be loaded (the CLI prints it as one line, exit 2)."""


def _reject_constant(name: str):
    raise ValueError(f"{name} is not allowed")


def _float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v):
        raise ValueError(f"number {text[:20]} overflows")
    return v


def _int(text: str) -> int:
    if len(text.lstrip("-")) > 19:
        raise ValueError(f"integer {text[:20]}... is too large")
    v = int(text)
    if abs(v) > MAX_INT:
        raise ValueError(f"integer {text} is too large")
    return v


def _depth(obj) -> int:
    deepest, stack = 0, [(obj, 1)]
    while stack:
        o, d = stack.pop()
        deepest = max(deepest, d)
        if d > MAX_DEPTH:
            return d
        if isinstance(o, dict):
            stack.extend((v, d + 1) for v in o.values())
        elif isinstance(o, list):
            stack.extend((v, d + 1) for v in o)
    return deepest


def resolve(path: Path | str) -> tuple[Path, Path]:
    """(result.json, run directory) for a result file or a run directory.

    Raises:
        Invalid: no such file, or a directory without result.json.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "result.json"
        if not p.is_file():
            raise Invalid(f"{path}: a directory without result.json")
    elif not p.exists():
        raise Invalid(f"{path}: no such file or directory")
    if not p.is_file():
        raise Invalid(f"{path}: not a regular file")
    return p, p.parent


def loads_json(raw: bytes, where: str, max_bytes: int | None = None):
    """Strict JSON from bytes: UTF-8, no NaN/Infinity, no huge numbers, bounded depth.

    Raises:
        Invalid: any of those, with ``where`` naming the source.
    """
    cap = MAX_DOCUMENT_BYTES if max_bytes is None else max_bytes
    if len(raw) > cap:
        raise Invalid(f"{where}: {len(raw)} bytes is over the {cap >> 20} MiB cap")
    try:
        obj = json.loads(raw.decode("utf-8"), parse_constant=_reject_constant,
                         parse_float=_float, parse_int=_int)
    except UnicodeDecodeError:
        raise Invalid(f"{where}: not UTF-8 text") from None
    except RecursionError:
        raise Invalid(f"{where}: nesting too deep") from None
    except ValueError as exc:
        raise Invalid(f"{where}: not valid JSON ({str(exc)[:120]})") from None
    if _depth(obj) > MAX_DEPTH:
        raise Invalid(f"{where}: nesting deeper than {MAX_DEPTH}")
    return obj


def read_capped(path: Path, max_bytes: int) -> bytes:
    """A file's bytes, refusing it past ``max_bytes`` (checked before and while reading).

    Raises:
        Invalid: over the cap, or unreadable.
    """
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise Invalid(f"{path}: {size} bytes is over the {max_bytes >> 20} MiB cap")
        with open(path, "rb") as fh:
            raw = fh.read(max_bytes + 1)
    except OSError as exc:
        raise Invalid(f"{path}: cannot read ({exc.strerror or exc.__class__.__name__})") \
            from None
    if len(raw) > max_bytes:
        raise Invalid(f"{path}: over the {max_bytes >> 20} MiB cap")
    return raw


def load_document(path: Path | str) -> tuple[dict, Path]:
    """Load a result document safely, upgraded to the current schema version.

    Args:
        path: result.json or the run directory holding it.

    Returns:
        (document, run directory).

    Raises:
        Invalid: missing, too large, not UTF-8, not JSON, NaN/Infinity, huge numbers, too
            deep, not an object.
    """
    from bench.results import schema

    f, run_dir = resolve(path)
    doc = loads_json(read_capped(f, MAX_DOCUMENT_BYTES), str(f))
    if not isinstance(doc, dict):
        raise Invalid(f"{f}: the document is not a JSON object")
    return schema.upgrade(doc), run_dir


def safe_member(run_dir: Path, name) -> Path:
    """The path of file ``name`` inside ``run_dir``, refusing anything that could leave it.

    Raises:
        Invalid: not a plain file name, a symbolic link, or a path outside ``run_dir``.
    """
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or \
            name in (".", "..") or name.startswith("~") or os.path.isabs(name) or \
            "\x00" in name:
        raise Invalid(f"file reference {name!r} must be a plain name inside the run directory")
    p = Path(run_dir) / name
    if p.is_symlink():
        raise Invalid(f"{name} is a link; links are not followed")
    if p.resolve().parent != Path(run_dir).resolve():
        raise Invalid(f"{name} leaves the run directory")
    return p


def trace_path(doc: dict, run_dir: Path) -> Path | None:
    """The document's trace file, checked (inside the run directory, present, capped).

    Returns None where the document records no trace.

    Raises:
        Invalid: a bad reference, a missing file, or one over :data:`MAX_TRACE_BYTES`.
    """
    t = doc.get("trace") or {}
    if not isinstance(t, dict) or t.get("file") is None:
        return None
    p = safe_member(run_dir, t["file"])
    if not p.is_file():
        raise Invalid(f"{t['file']} is referenced but missing")
    if p.stat().st_size > MAX_TRACE_BYTES:
        raise Invalid(f"{t['file']} is over the trace size cap")
    return p


def read_table_file(path: Path | str):
    """A CSV or Parquet table file as a pandas DataFrame, every read error as one line.

    Raises:
        Invalid: missing, over :data:`MAX_TABLE_BYTES`, not CSV/Parquet by its suffix,
            or not readable as one (random bytes, a truncated file).
    """
    import pandas as pd

    p = Path(path)
    if not p.is_file():
        raise Invalid(f"{p}: no such file")
    suffix = p.suffix.lower()
    if suffix not in (".csv", ".parquet"):
        raise Invalid(f"{p}: a table file must end in .csv or .parquet")
    if p.stat().st_size > MAX_TABLE_BYTES:
        raise Invalid(f"{p}: {p.stat().st_size} bytes is over the table cap "
                      f"({MAX_TABLE_BYTES} bytes)")
    try:
        if suffix == ".csv":
            return pd.read_csv(p)
        return pd.read_parquet(p)
    except Exception as exc:  # pandas/pyarrow raise many types for a corrupt file
        kind = "CSV" if suffix == ".csv" else "Parquet"
        raise Invalid(f"{p}: not a readable {kind} table ({exc.__class__.__name__})") \
            from None
