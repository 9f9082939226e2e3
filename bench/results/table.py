"""The empirical table: one row per cell, stable documented columns, units in the names.

``load_table(paths)`` is the public API; ``bench table`` writes the same rows as CSV,
Parquet, JSON or Markdown. Rows from other sources (``bench import``) share the columns.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from bench.errors import BenchError
from bench.results import io, load, schema

# The columns live in a leaf module (bench.results.reference reads them too); they are
# re-exported here, where readers look for them.
from bench.results.columns import (
    COLUMN_NAMES,
    COLUMNS,
    NUMERIC_COLUMNS,
    TABLE_SCHEMA_VERSION,
    TEXT_COLUMNS,
    missing_columns,
    with_added_columns,
)

__all__ = ["COLUMNS", "COLUMN_NAMES", "NUMERIC_COLUMNS", "TABLE_SCHEMA_VERSION",
           "TEXT_COLUMNS", "load_table", "write_table"]

FORMATS = ("csv", "parquet", "json", "markdown")


def _obj(value) -> dict:
    """``value`` if it is a JSON object, else an empty one (a hostile document's shapes)."""
    return value if isinstance(value, dict) else {}


def _row(**values) -> dict:
    return {c: values.get(c) for c in COLUMN_NAMES}


def cell_engine(doc: dict, cell: dict) -> str:
    """The engine of a cell: its record's ``engine.name``, else the run's configured
    engine, else hf (documents from before the engine axis)."""
    for src in (cell, _obj(doc.get("config"))):
        e = src.get("engine")
        if isinstance(e, dict):
            e = e.get("name")
        if isinstance(e, str) and e:
            return e
    return "hf"


def rows_from_document(doc: dict, origin: str = "") -> list[dict]:
    """Table rows of one result document.

    Raises:
        BenchError: not a joulebench result document.
    """
    if not isinstance(doc, dict) or doc.get("schema") != schema.SCHEMA_ID:
        raise BenchError(f"{origin}: not a joulebench result document")
    doc = schema.upgrade(doc)
    if not isinstance(doc.get("cells"), list):
        raise BenchError(f"{origin}: result document has no cells list")
    prov = _obj(doc.get("provenance"))
    harness = _obj(prov.get("harness"))
    idle_list = doc.get("idle")
    if not isinstance(idle_list, list):
        idle_list = []
    idle = {i.get("device"): i.get("power_w") for i in idle_list if isinstance(i, dict)}
    rows = []
    for n, c in enumerate(doc["cells"]):
        if not isinstance(c, dict):
            raise BenchError(f"{origin}: a cell is not an object")
        f = _obj(c.get("figures"))
        u = _obj(c.get("uncertainty"))
        ci = u.get("output_tokens_per_j_ci")
        ci = ci if isinstance(ci, list) and len(ci) == 2 else [None, None]
        ph = _obj(c.get("phases"))
        sub = _obj(ph.get("subtraction"))
        rows.append(_row(
            table_schema_version=TABLE_SCHEMA_VERSION, source="joulebench",
            run_id=doc.get("run_id"), cell_id=c.get("cell_id"), device=c.get("device"),
            device_name=c.get("device_name"), num_devices=c.get("num_devices", 1),
            engine=cell_engine(doc, c), model=c.get("model"),
            dtype=c.get("dtype"), batch_size=c.get("batch_size"),
            input_len=c.get("input_len"), output_len=c.get("output_len"),
            status=c.get("status"), scope=c.get("scope"),
            energy_method=c.get("energy_method"),
            output_tokens_per_j=f.get("output_tokens_per_j"),
            total_tokens_per_j=f.get("total_tokens_per_j"),
            j_per_output_token=f.get("j_per_output_token"),
            output_tokens_per_s=f.get("output_tokens_per_s"),
            output_tokens_per_s_per_gpu=f.get("output_tokens_per_s_per_gpu"),
            mean_power_w=f.get("mean_power_w"),
            output_tokens_per_j_ci_low=ci[0], output_tokens_per_j_ci_high=ci[1],
            ci_level=u.get("ci_level"),
            repeats=u.get("repeats"), energy_j=f.get("energy_j"),
            duration_s=f.get("duration_s"),
            idle_power_w=c.get("idle_power_w", idle.get(c.get("device"))),
            incremental_output_tokens_per_j=f.get("incremental_output_tokens_per_j"),
            max_power_w=f.get("max_power_w"), ttft_s=ph.get("ttft_s"),
            node_tokens_per_j=f.get("node_output_tokens_per_j"),
            prefill_j_per_input_token=sub.get("prefill_j_per_input_token"),
            decode_j_per_output_token=sub.get("decode_j_per_output_token"),
            roofline_fraction=_obj(c.get("roofline")).get("fraction"),
            contended=c.get("contended"), throttled_windows=c.get("throttled_windows"),
            power_limit_w=c.get("power_limit_w"),
            node_hostname=_obj(c.get("node")).get("hostname"),
            ray_node_id=_obj(c.get("node")).get("node_id"),
            harness_version=harness.get("version"), git_commit=harness.get("commit")))
        bad = [k for k, v in rows[-1].items()
               if v is not None and not isinstance(v, (bool, int, float, str))]
        bad += [k for k in NUMERIC_COLUMNS if rows[-1][k] is not None and (
            isinstance(rows[-1][k], bool) or not isinstance(rows[-1][k], (int, float)))]
        if bad:
            raise BenchError(f"{origin}: cell {n}: {bad[0]} is not a "
                             f"{'number' if bad[0] in NUMERIC_COLUMNS else 'number or text'}")
    return rows


def result_files(path: Path) -> list[Path]:
    """The result.json files a path names: itself, its run, or every run below a folder.

    A folder without any is an empty table (a fresh ``results/``), not an error.

    Raises:
        BenchError: no such file or directory.
    """
    if path.is_file():
        return [path]
    if path.is_dir():
        direct = path / "result.json"
        if direct.is_file():
            return [direct]
        return sorted(p for p in path.rglob("result.json") if p.is_file())
    raise BenchError(f"{path}: no such file or directory")


def _numeric(df, origin):
    """The table file's numeric columns as numbers; a value that is not one is an error."""
    import pandas as pd

    for c in NUMERIC_COLUMNS:
        num = pd.to_numeric(df[c], errors="coerce")
        bad = num.isna() & df[c].notna()
        if bad.any():
            raise BenchError(f"{origin}: column {c} holds {str(df[c][bad].iloc[0])[:40]!r}, "
                             "not a number")
        df[c] = num
    return df


def load_table(paths=("results",), include_reference: bool = False):
    """One row per cell from result documents, run directories, folders and table files.

    Args:
        paths: result.json files, run directories, folders searched for result.json,
            and table files (.csv, .parquet) written by ``bench table`` or ``bench import``.
        include_reference: append the ML.ENERGY reference rows
            (``bench.results.reference.load_reference``) not already present.

    Returns:
        A pandas DataFrame with exactly :data:`COLUMN_NAMES`, in order.
    """
    import pandas as pd

    if isinstance(paths, (str, Path)):
        paths = [paths]
    frames, rows = [], []
    for p in map(Path, paths):
        if p.is_file() and p.suffix.lower() in (".csv", ".parquet"):
            df = load.read_table_file(p)
            missing = missing_columns(df.columns)
            if missing:
                raise BenchError(f"{p}: not a joulebench table (missing {missing[0]})")
            df = with_added_columns(df)
            frames.append(_numeric(df[list(COLUMN_NAMES)].copy(), p))
            continue
        for f in result_files(p):
            rows.extend(rows_from_document(load.load_document(f)[0], str(f)))
    frames.insert(0, pd.DataFrame(rows, columns=list(COLUMN_NAMES)))
    if include_reference:
        from bench.results import reference

        frames.append(reference.missing_from(frames))
    frames = [f for f in frames if len(f)]
    if not frames:
        return pd.DataFrame(columns=list(COLUMN_NAMES))
    return pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]


def _markdown(df) -> str:
    def cell(v):
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return ""
        return f"{v:.4g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    for rec in df.itertuples(index=False):
        lines.append("| " + " | ".join(cell(v) for v in rec) + " |")
    return "\n".join(lines) + "\n"


def format_for(out: str | None, fmt: str | None) -> str:
    """The output format: explicit, else from the file extension, else CSV."""
    if fmt:
        if fmt not in FORMATS:
            raise BenchError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
        return fmt
    if out:
        ext = Path(out).suffix.lower().lstrip(".")
        return {"md": "markdown", "csv": "csv", "parquet": "parquet", "json": "json"}.get(
            ext, "csv")
    return "csv"


def write_table(df, fmt: str, out: str | None) -> str | None:
    """Write ``df`` to ``out`` atomically (:func:`io.atomic_path`) or return the text.

    Raises:
        BenchError: parquet without ``out``, or ``out`` cannot be written.
    """
    if fmt == "parquet":
        if not out:
            raise BenchError("parquet needs --out FILE")
        try:
            with io.atomic_path(out) as tmp:
                df.to_parquet(tmp, index=False)
        except OSError as exc:
            raise BenchError(f"cannot write {out}: "
                             f"{exc.strerror or exc.__class__.__name__}") from None
        except (ValueError, TypeError) as exc:  # pyarrow's ArrowInvalid/ArrowTypeError
            raise BenchError(f"cannot write {out} as Parquet: {str(exc)[:120]}") from None
        return None
    if fmt == "csv":
        text = df.to_csv(index=False)
    elif fmt == "json":
        recs = json.loads(df.to_json(orient="records"))  # NaN -> null
        text = json.dumps(recs, allow_nan=False, indent=1) + "\n"
    else:
        text = _markdown(df)
    if not out:
        return text
    io.write_text_atomic(out, text)
    return None
