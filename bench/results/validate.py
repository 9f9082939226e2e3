"""``bench validate``: named rules that recompute and check a result document.

Each rule gives pass or fail with the reason. The loader is safe with hostile input:
no pickle and no eval, a size cap, bounded nesting, no NaN/Infinity or huge numbers,
and file references that must stay inside the run directory.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from bench.results import figures as F
from bench.results import schema
from bench.results import schema_spec as S
from bench.sweep import DEVICE_DEFAULTS

MAX_DOCUMENT_BYTES = 64 << 20
MAX_TRACE_BYTES = 8 << 30
MAX_DEPTH = 32
MAX_INT = 2 ** 63 - 1
REL_TOL = 1e-3  # 0.1%: every recomputed figure must agree this well
MIN_LOAD_POWER_FRACTION = 0.1  # no accelerator under load draws under 10% of its TDP


class Invalid(Exception):
    """The document cannot be loaded or checked at all."""


@dataclass(frozen=True)
class Check:
    """One rule's verdict."""

    rule: str
    ok: bool
    reason: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.rule}: {self.reason}"


# -- safe loading ----------------------------------------------------------------------

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
    """(result.json, run directory) for a file or a run directory."""
    p = Path(path)
    if p.is_dir():
        p = p / "result.json"
    if not p.is_file():
        raise Invalid(f"{path}: no result.json there")
    return p, p.parent


def load_document(path: Path | str) -> tuple[dict, Path]:
    """Load a result document safely; returns (document, run directory).

    Raises:
        Invalid: too large, not UTF-8, not JSON, NaN/Infinity, huge numbers, too deep,
            not an object.
    """
    f, run_dir = resolve(path)
    size = f.stat().st_size
    if size > MAX_DOCUMENT_BYTES:
        raise Invalid(f"{f}: {size} bytes is over the {MAX_DOCUMENT_BYTES >> 20} MiB cap")
    with open(f, "rb") as fh:
        raw = fh.read(MAX_DOCUMENT_BYTES + 1)
    if len(raw) > MAX_DOCUMENT_BYTES:
        raise Invalid(f"{f}: over the size cap")
    try:
        text = raw.decode("utf-8")
        doc = json.loads(text, parse_constant=_reject_constant, parse_float=_float,
                         parse_int=_int)
    except UnicodeDecodeError:
        raise Invalid(f"{f}: not UTF-8 text") from None
    except RecursionError:
        raise Invalid(f"{f}: nesting too deep") from None
    except ValueError as exc:
        raise Invalid(f"{f}: not valid JSON ({str(exc)[:120]})") from None
    if not isinstance(doc, dict):
        raise Invalid(f"{f}: the document is not a JSON object")
    if _depth(doc) > MAX_DEPTH:
        raise Invalid(f"{f}: nesting deeper than {MAX_DEPTH}")
    return schema.upgrade(doc), run_dir


# -- rules -----------------------------------------------------------------------------

_PY = {S.NUM: (int, float), S.INT: (int,), S.STR: (str,), S.OBJ: (dict,), S.ARR: (list,),
       S.NULL: (type(None),)}


def _typed(value, kinds) -> bool:
    if isinstance(value, bool):
        return False
    return any(isinstance(value, _PY[k]) for k in kinds)


def _fields(obj, spec: dict, where: str, errors: list) -> None:
    if not isinstance(obj, dict):
        errors.append(f"{where} is not an object")
        return
    for key, kinds in spec.items():
        if key not in obj:
            errors.append(f"{where}.{key} is missing")
        elif not _typed(obj[key], kinds):
            errors.append(f"{where}.{key} should be {' or '.join(kinds)}")


def rule_schema(doc: dict) -> list[str]:
    """Structure and types, schema id and version."""
    errors: list[str] = []
    if doc.get("schema") != schema.SCHEMA_ID:
        return [f"schema is {doc.get('schema')!r}, not {schema.SCHEMA_ID!r}"]
    v = doc.get("schema_version")
    if isinstance(v, int) and not isinstance(v, bool) and v > schema.SCHEMA_VERSION:
        return [f"schema_version {v} is newer than this joulebench reads "
                f"({schema.SCHEMA_VERSION}); upgrade joulebench"]
    _fields(doc, S.TOP, "$", errors)
    if errors:
        return errors
    if doc["status"] not in S.STATUSES:
        errors.append(f"status {doc['status']!r} is not one of {S.STATUSES}")
    _fields(doc["provenance"], S.PROVENANCE, "$.provenance", errors)
    if not errors:
        _fields(doc["provenance"]["harness"], S.HARNESS, "$.provenance.harness", errors)
    for i, c in enumerate(doc["cells"]):
        where = f"$.cells[{i}]"
        before = len(errors)
        _fields(c, S.CELL, where, errors)
        if len(errors) > before:
            continue
        if c["status"] not in S.CELL_STATUSES:
            errors.append(f"{where}.status {c['status']!r} is unknown")
        if c["scope"] not in S.SCOPES:
            errors.append(f"{where}.scope {c['scope']!r} is unknown")
        if c["energy_method"] not in (*S.METHODS, None):
            errors.append(f"{where}.energy_method {c['energy_method']!r} is unknown")
        for k in ("batch_size", "input_len", "output_len"):
            if c[k] < 1:
                errors.append(f"{where}.{k} must be 1 or more")
        if c["figures"] is not None:
            _fields(c["figures"], S.FIGURES, f"{where}.figures", errors)
        for j, r in enumerate(c["repeats"]):
            rw = f"{where}.repeats[{j}]"
            b = len(errors)
            _fields(r, S.REPEAT, rw, errors)
            if len(errors) > b:
                continue
            for scope, e in r["energy"].items():
                _fields(e, S.ENERGY, f"{rw}.energy.{scope}", errors)
                if isinstance(e, dict) and e.get("method") not in (*S.METHODS, None):
                    errors.append(f"{rw}.energy.{scope}.method is unknown")
        if len(errors) > 20:
            break
    return errors


def _close(a, b) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return math.isclose(a, b, rel_tol=REL_TOL, abs_tol=1e-12)


def rule_figures(doc: dict) -> list[str]:
    """Every summary figure recomputed from the repeats within 0.1%."""
    errors = []
    for c in doc["cells"]:
        if not c["repeats"]:
            if c["figures"] is not None:
                errors.append(f"{c['cell_id']}: figures without repeats")
            continue
        idle_w = c.get("idle_power_w")
        # a resumed run measured the idle baseline once per session: any of them will do
        baselines = [i.get("power_w") for i in doc["idle"]
                     if isinstance(i, dict) and i.get("device") == c["device"]]
        if idle_w is not None and not any(_close(idle_w, b) for b in baselines):
            errors.append(f"{c['cell_id']}: idle_power_w is not the device's idle baseline")
        try:
            figures, unc = F.cell_figures(c["repeats"], c["scope"], idle_w)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            errors.append(f"{c['cell_id']}: repeats cannot be recomputed ({exc})")
            continue
        errors.extend(_phase_errors(c, "subtraction", None))
        errors.extend(_roofline_errors(doc, c))
        got = c["figures"] or {}
        for k, v in figures.items():
            if not _close(got.get(k), v):
                errors.append(f"{c['cell_id']}: {k} is {got.get(k)}, recomputed {v}")
        ci = (c["uncertainty"] or {}).get("output_tokens_per_j_ci95")
        if unc["output_tokens_per_j_ci95"] and (
                not isinstance(ci, list) or len(ci) != 2 or
                not all(_close(a, b) for a, b in zip(ci, unc["output_tokens_per_j_ci95"],
                                                     strict=True))):
            errors.append(f"{c['cell_id']}: confidence interval does not recompute")
    again = F.run_summary(doc["cells"])
    summ = doc["summary"]
    if summ.get("cells") != again["cells"] or summ.get("ok") != again["ok"]:
        errors.append("summary counts do not match the cells")
    if not _close(summ.get("max_output_tokens_per_j"), again["max_output_tokens_per_j"]):
        errors.append("summary max_output_tokens_per_j does not match the cells")
    return errors


def _roofline_errors(doc: dict, c: dict) -> list[str]:
    """The cell's roofline block, recomputed from the device and the model's arithmetic."""
    from bench import models, roofline
    from bench.devices import Device

    rf = c.get("roofline")
    if not isinstance(rf, dict) or rf.get("ceiling_output_tokens_per_j") is None:
        return []
    if c["model"] not in models.builtin_names():
        return []  # a local checkpoint: its config is not in the document
    _, dev = _device_kind(doc, c["device"])
    if not dev:
        return [f"{c['cell_id']}: its device is not in the document"]
    again = roofline.cell_roofline(Device.from_dict(dev), models.get(c["model"]), c["dtype"],
                                   c["batch_size"], c["input_len"], c["output_len"],
                                   (c["figures"] or {}).get("output_tokens_per_j"))
    errors = []
    for k in ("ceiling_output_tokens_per_j", "fraction"):
        if not _close(rf.get(k), again.get(k)):
            errors.append(f"{c['cell_id']}: roofline {k} does not recompute")
    return errors


def _phase_errors(c: dict, method: str, trace) -> list[str]:
    """A cell's phase figures by ``method``, recomputed (figures.phases) and compared."""
    ph = c.get("phases")
    if not isinstance(ph, dict) or not isinstance(ph.get(method), dict) or \
            ph[method].get("reason") is not None:
        return []
    sub = ph.get("subtraction") or {}
    again = F.phases(c["repeats"], sub.get("prefill_window"), c["scope"],
                         c["batch_size"], c["input_len"], c["output_len"], trace)
    errors = []
    if method == "subtraction" and not _close(ph.get("ttft_s"), again["ttft_s"]):
        errors.append(f"{c['cell_id']}: ttft_s does not recompute")
    for k in ("prefill_j_per_input_token", "decode_j_per_output_token"):
        if not _close(ph[method].get(k), (again.get(method) or {}).get(k)):
            errors.append(f"{c['cell_id']}: {method} {k} does not recompute")
    return errors


def _safe_member(run_dir: Path, name) -> Path:
    if not isinstance(name, str) or not name or "/" in name or "\\" in name or \
            name in (".", "..") or name.startswith("~") or os.path.isabs(name):
        raise Invalid(f"file reference {name!r} must be a plain name inside the run directory")
    p = run_dir / name
    if p.is_symlink():
        raise Invalid(f"{name} is a link; links are not followed")
    if p.resolve().parent != run_dir.resolve():
        raise Invalid(f"{name} leaves the run directory")
    return p


def _trace_entry(doc: dict, run_dir: Path) -> Path | None:
    t = doc["trace"]
    if t.get("file") is None:
        return None
    p = _safe_member(run_dir, t["file"])
    if not p.is_file():
        raise Invalid(f"{t['file']} is referenced but missing")
    if p.stat().st_size > MAX_TRACE_BYTES:
        raise Invalid(f"{t['file']} is over the trace size cap")
    return p


def rule_hashes(doc: dict, run_dir: Path) -> list[str]:
    """The trace's SHA-256; a submission's manifest and signature when present."""
    from bench.results import io

    errors = []
    try:
        p = _trace_entry(doc, run_dir)
    except Invalid as exc:
        return [str(exc)]
    if p is not None and io.sha256_file(p) != doc["trace"].get("sha256"):
        errors.append(f"{p.name} does not match its recorded SHA-256")
    if (run_dir / "manifest.json").exists():
        from bench.results import submit

        errors.extend(submit.verify(run_dir))
    return errors


def _read_trace(p: Path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(p)
    except Exception as exc:  # pyarrow raises many types for a corrupt file
        raise Invalid(f"{p.name} is not a readable Parquet file "
                      f"({exc.__class__.__name__})") from None
    from bench.results.io import TRACE_COLUMNS

    missing = [c for c in TRACE_COLUMNS if c not in table.column_names]
    if missing:
        raise Invalid(f"{p.name} lacks column {missing[0]}")
    return {c: table.column(c).to_numpy() for c in TRACE_COLUMNS}


def rule_trace(doc: dict, run_dir: Path) -> list[str]:
    """Energies recomputed from the raw samples within 0.1%; samples monotonic."""
    import numpy as np

    from bench.kernels import trace as K

    try:
        p = _trace_entry(doc, run_dir)
        if p is None:
            return []
        cols = _read_trace(p)
    except Invalid as exc:
        return [str(exc)]
    errors = []
    per_dev, power = {}, {}
    for idx in np.unique(cols["device_index"]):
        m = cols["device_index"] == idx
        t = cols["t_ns"][m]
        if np.any(np.diff(t) < 0):
            errors.append(f"gpu{idx}: trace timestamps go backwards")
            continue
        ok = cols["energy_status"][m] == 0
        e = cols["energy_j"][m][ok]
        if np.any(np.diff(e) < 0):
            errors.append(f"gpu{idx}: energy counter goes backwards in the trace")
        per_dev[f"gpu{idx}"] = (t[ok], e)
        pok = cols["power_status"][m] == 0
        power[f"gpu{idx}"] = (t[pok], cols["power_w"][m][pok])
    for c in doc["cells"]:
        for j, r in enumerate(c["repeats"]):
            for rd in r.get("readings", []):
                st = rd.get("stats") or {}
                if st.get("counter_edges") != "interpolated" or rd.get("energy_j") is None:
                    continue
                if rd.get("device") not in per_dev:
                    errors.append(f"{c['cell_id']}#{j}: no trace for {rd.get('device')}")
                    continue
                t, e = per_dev[rd["device"]]
                try:
                    again = K.counter_energy_j(t, e, r["t0_ns"], r["t1_ns"])
                except ValueError as exc:
                    errors.append(f"{c['cell_id']}#{j}: {exc}")
                    continue
                if not _close(rd["energy_j"], again):
                    errors.append(f"{c['cell_id']}#{j}: {rd['device']} energy "
                                  f"{rd['energy_j']:.6g} J, recomputed {again:.6g} J")
        if c["device"] in power:
            errors.extend(_phase_errors(c, "timeline", power[c["device"]]))
    return errors


def _device_kind(doc: dict, label: str) -> tuple[str, dict]:
    for d in doc["devices"]:
        if not isinstance(d, dict):
            continue
        dl = f"gpu{d.get('index')}" if d.get("kind") == "cuda" else "cpu"
        if dl == label:
            return d.get("kind", "cpu"), d
    return ("cuda" if label.startswith("gpu") else "cpu"), {}


def rule_physics(doc: dict) -> list[str]:
    """Power within 1.5x TDP, throughput under the FLOP roofline, windows and tokens sane."""
    from bench import models
    from bench.devices import specs

    errors = []
    min_window = doc["config"].get("min_window_s")
    for c in doc["cells"]:
        kind, dev = _device_kind(doc, c["device"])
        spec = specs.lookup(c.get("device_name") or dev.get("name"))
        tdp = spec.tdp_w if spec else dev.get("power_limit_w")
        floor_s = min_window if isinstance(min_window, (int, float)) else DEVICE_DEFAULTS[
            "cuda" if kind == "cuda" else "cpu"].min_window_s
        last_t1 = None
        for j, r in enumerate(c["repeats"]):
            w = f"{c['cell_id']}#{j}"
            if not r["t0_ns"] < r["t1_ns"]:
                errors.append(f"{w}: window ends before it starts")
            elif not math.isclose(r["duration_s"], (r["t1_ns"] - r["t0_ns"]) * 1e-9,
                                  rel_tol=1e-9, abs_tol=1e-9):
                errors.append(f"{w}: duration_s does not match its timestamps")
            if last_t1 is not None and r["t0_ns"] < last_t1:
                errors.append(f"{w}: windows overlap or go back in time")
            last_t1 = r["t1_ns"]
            if r["duration_s"] < floor_s * (1 - 1e-9):
                errors.append(f"{w}: window {r['duration_s']:.3g} s is under the "
                              f"{floor_s:g} s minimum")
            if r["output_tokens"] != r["generate_calls"] * c["batch_size"] * c["output_len"] \
                    or r["input_tokens"] != r["generate_calls"] * c["batch_size"] * \
                    c["input_len"]:
                errors.append(f"{w}: token counts are not calls x batch x length")
            for scope, e in r["energy"].items():
                if isinstance(e, dict) and isinstance(e.get("energy_j"), (int, float)) \
                        and e["energy_j"] < 0:
                    errors.append(f"{w}: negative {scope} energy")
        f = c["figures"] or {}
        p = f.get("mean_power_w")
        if c["scope"] == "gpu" and tdp and p is not None and p > 1.5 * tdp:
            errors.append(f"{c['cell_id']}: mean power {p:.4g} W is over 1.5 x TDP {tdp:g} W")
        n_params = None
        if spec and c["scope"] == "gpu" and c["model"] in models.builtin_names():
            n_params = models.get(c["model"]).parameter_count()
        if n_params:
            tps_max = spec.bf16_flops / (2 * n_params)  # each token needs >= 2N FLOPs
            tps = f.get("output_tokens_per_s")
            if tps is not None and tps > tps_max:
                errors.append(f"{c['cell_id']}: {tps:.4g} tokens/s is over the FLOP roofline "
                              f"{tps_max:.4g}")
            tpj = f.get("output_tokens_per_j")
            tpj_max = tps_max / (MIN_LOAD_POWER_FRACTION * spec.tdp_w)
            if tpj is not None and tpj > tpj_max:
                errors.append(f"{c['cell_id']}: {tpj:.4g} tokens/J is over the ceiling "
                              f"{tpj_max:.4g}")
    return errors


_SHA = re.compile(r"^[0-9a-f]{64}$")


def _utc(s) -> datetime | None:
    try:
        return datetime.strptime(s, "%Y-%m-%dT%H:%M:%S.%fZ")
    except (TypeError, ValueError):
        return None


def rule_provenance(doc: dict) -> list[str]:
    """Who and what made the document: harness, commit, sources, host, libraries, times."""
    errors = []
    prov = doc["provenance"]
    h = prov["harness"]
    if not _SHA.match(h.get("source_sha256", "")):
        errors.append("harness.source_sha256 is not a SHA-256")
    if h.get("commit") is None and not h.get("reason"):
        errors.append("harness.commit is null without a reason")
    for k in ("os", "cpu"):
        if not prov["host"].get(k):
            errors.append(f"host.{k} is missing")
    for k in ("python", "torch", "transformers"):
        if not prov["libraries"].get(k):
            errors.append(f"libraries.{k} is missing")
    t0, t1 = _utc(doc["started_utc"]), _utc(doc["finished_utc"])
    if t0 is None or t1 is None:
        errors.append("started_utc/finished_utc are not UTC timestamps")
    elif t1 < t0:
        errors.append("finished_utc is before started_utc")
    if not doc["devices"]:
        errors.append("no devices recorded")
    return errors


def rule_estimates(doc: dict) -> list[str]:
    """An estimate is labelled as one wherever it appears."""
    errors = []
    for c in doc["cells"]:
        methods = {r["energy"].get(c["scope"], {}).get("method") for r in c["repeats"]}
        if "estimate" in methods and c["energy_method"] != "estimate":
            errors.append(f"{c['cell_id']}: estimated energy labelled {c['energy_method']!r}")
        for r in c["repeats"]:
            for rd in r.get("readings", []):
                if isinstance(rd, dict) and rd.get("source", "").find("estimate") >= 0 \
                        and rd.get("method") != "estimate":
                    errors.append(f"{c['cell_id']}: {rd['source']} not labelled an estimate")
    return errors


RULES = ("schema", "hashes", "figures", "trace", "physics", "provenance", "estimates")


def validate(path: Path | str) -> list[Check]:
    """Every rule's verdict for one document (file or run directory)."""
    try:
        doc, run_dir = load_document(path)
    except Invalid as exc:
        return [Check("load", False, str(exc))]
    except OSError as exc:
        return [Check("load", False, f"{path}: {exc.strerror or exc}")]
    errs = rule_schema(doc)
    out = [Check("schema", not errs, "; ".join(errs[:3]) or "structure and types as "
                 f"{schema.SCHEMA_ID} v{schema.SCHEMA_VERSION}")]
    if errs:
        return out  # the other rules need the structure
    for name, fn, args in (("hashes", rule_hashes, (doc, run_dir)),
                           ("figures", rule_figures, (doc,)),
                           ("trace", rule_trace, (doc, run_dir)),
                           ("physics", rule_physics, (doc,)),
                           ("provenance", rule_provenance, (doc,)),
                           ("estimates", rule_estimates, (doc,))):
        try:
            errs = fn(*args)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            errs = [f"cannot check ({exc.__class__.__name__}: {exc})"]
        out.append(Check(name, not errs, "; ".join(errs[:3]) + (
            f" (+{len(errs) - 3} more)" if len(errs) > 3 else "") if errs else "ok"))
    return out
