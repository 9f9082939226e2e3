"""The result document's structure, once: the validator checks it, the JSON Schema derives."""

from __future__ import annotations

NUM = "number"
INT = "integer"
STR = "string"
OBJ = "object"
ARR = "array"
NULL = "null"
BOOL = "boolean"

STATUSES = ("complete", "interrupted", "failed")
CELL_STATUSES = ("ok", "oom", "skipped", "error", "lost")
SCOPES = ("gpu", "cpu", "dram", "node", "system")
METHODS = ("counter", "power_integration", "estimate")

# field -> allowed JSON types
TOP = {"schema": (STR,), "schema_version": (INT,), "run_id": (STR,), "status": (STR,),
       "started_utc": (STR,), "finished_utc": (STR,), "provenance": (OBJ,),
       "config": (OBJ,), "devices": (ARR,), "energy_sources": (ARR,), "idle": (ARR,),
       "cells": (ARR,), "summary": (OBJ,), "trace": (OBJ,)}
CELL = {"cell_id": (STR,), "device": (STR,), "model": (STR,), "dtype": (STR,),
        "batch_size": (INT,), "input_len": (INT,), "output_len": (INT,), "status": (STR,),
        "scope": (STR,), "energy_method": (STR, NULL), "repeats": (ARR,),
        "figures": (OBJ, NULL), "uncertainty": (OBJ, NULL)}
# Optional cell fields (absent in older documents; checked where present). Issue 15: the
# power-limit axis (enforced and asked-for limit in W, the fraction of the default, the SM
# clock seen after the cell).
REPEAT = {"t0_ns": (INT,), "t1_ns": (INT,), "duration_s": (NUM,), "generate_calls": (INT,),
          "output_tokens": (INT,), "input_tokens": (INT,), "energy": (OBJ,),
          "readings": (ARR,)}
# Optional fields (absent in older documents): typed where present, never required.
# Issue 17: the window's temperature/clocks/reasons and its derived throttled flag; the
# cell's count of throttled windows and its warm-up.
CELL_OPTIONAL = {"throttled_windows": (INT, NULL), "warmup": (OBJ,),
                 # issue 15: the power-limit axis
                 "power_limit_w": (NUM, NULL), "power_limit_set_w": (NUM, NULL),
                 "power_limit_frac": (NUM, NULL), "sm_clock_mhz": (INT, NULL),
                 # issues 11 and 18: multi-GPU cells
                 "num_devices": (INT,), "device_uuids": (ARR,),
                 # issue 13: the cluster node that measured the cell (runs on Ray)
                 "node": (OBJ,)}
REPEAT_OPTIONAL = {"thermal": (OBJ, NULL), "throttled": (BOOL, NULL)}
ENERGY = {"energy_j": (NUM, NULL), "method": (STR, NULL), "reason": (STR, NULL)}
# tuple[str, ...]: the integer fields added below allow one JSON type, not two
FIGURES: dict[str, tuple[str, ...]] = {
    k: (NUM, NULL) for k in ("output_tokens_per_j", "total_tokens_per_j", "j_per_output_token",
                             "output_tokens_per_s", "mean_power_w", "energy_j", "duration_s")}
FIGURES.update({"output_tokens": (INT,), "input_tokens": (INT,)})
# Optional fields (absent in documents before them): a cell's GPUs (one, or a group that
# ran it together: --gpus-per-cell) and, in a group's windows, each GPU's own energy.
ENERGY_OPTIONAL = {"per_device": (ARR,)}
PROVENANCE = {"harness": (OBJ,), "host": (OBJ,), "libraries": (OBJ,)}
HARNESS = {"name": (STR,), "version": (STR,), "commit": (STR, NULL), "source_sha256": (STR,)}
ENUMS = {("top", "status"): STATUSES, ("cell", "status"): CELL_STATUSES,
         ("cell", "scope"): SCOPES}


def _obj(fields: dict, extra: dict | None = None, optional: dict | None = None) -> dict:
    props = {k: {"type": list(v) if len(v) > 1 else v[0]}
             for k, v in {**(optional or {}), **fields}.items()}
    for k, v in (extra or {}).items():
        props[k] = {**props.get(k, {}), **v}
    return {"type": "object", "required": sorted(fields), "properties": props}


def json_schema() -> dict:
    """The JSON Schema (draft 2020-12) of result.json, made from the tables above."""
    energy = _obj(ENERGY, {"method": {"enum": [*METHODS, None]}}, ENERGY_OPTIONAL)
    repeat = _obj(REPEAT, {"energy": {"additionalProperties": energy},
                           "t0_ns": {"minimum": 0}, "duration_s": {"minimum": 0}},
                  REPEAT_OPTIONAL)
    cell = _obj(CELL, {"status": {"enum": list(CELL_STATUSES)},
                       "scope": {"enum": list(SCOPES)},
                       "energy_method": {"enum": [*METHODS, None]},
                       "batch_size": {"minimum": 1}, "input_len": {"minimum": 1},
                       "output_len": {"minimum": 1},
                       "repeats": {"items": repeat},
                       "figures": _obj(FIGURES) | {"type": ["object", "null"]},
                       "num_devices": {"type": INT, "minimum": 1}},
                CELL_OPTIONAL)
    prov = _obj(PROVENANCE, {"harness": _obj(HARNESS)})
    top = _obj(TOP, {"schema": {"const": "joulebench/result"},
                     "schema_version": {"const": 3},
                     "status": {"enum": list(STATUSES)},
                     "cells": {"items": cell}, "provenance": prov})
    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "joulebench/result/3", "title": "joulebench result document", **top}
