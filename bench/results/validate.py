"""``bench validate``: named rules that recompute and check a result document.

Each rule gives pass or fail with the reason. Loading is :mod:`bench.results.load`'s job
(safe with hostile input); the rules here tie every figure to its windows, every window's
energy to its readings, and every reading to the raw samples it came from.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from bench.devices import Device
from bench.errors import BenchError
from bench.results import figures as F
from bench.results import io, load, manifest, schema
from bench.results import schema_spec as S
from bench.results.load import Invalid, load_document
from bench.sweep import DEVICE_DEFAULTS, Cell, SweepConfig, device_groups, plan

REL_TOL = 1e-3  # 0.1%: every recomputed figure must agree this well
MIN_LOAD_POWER_FRACTION = 0.1  # no accelerator under load draws under 10% of its TDP
LOOKBACK_NS = 2_000_000_000  # the meter reads trace samples from this long before a window

__all__ = ["RULES", "Check", "validate"]


@dataclass(frozen=True)
class Check:
    """One rule's verdict."""

    rule: str
    ok: bool
    reason: str

    def line(self) -> str:
        return f"{'PASS' if self.ok else 'FAIL'} {self.rule}: {self.reason}"


# -- rules -----------------------------------------------------------------------------

_PY = {S.NUM: (int, float), S.INT: (int,), S.STR: (str,), S.OBJ: (dict,), S.ARR: (list,),
       S.NULL: (type(None),), S.BOOL: (bool,)}


def _typed(value, kinds) -> bool:
    if isinstance(value, bool):
        return S.BOOL in kinds
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


def _optional(obj: dict, spec: dict, where: str, errors: list) -> None:
    """Optional fields: typed where present."""
    for key, kinds in spec.items():
        if key in obj and not _typed(obj[key], kinds):
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
        _optional(c, S.CELL_OPTIONAL, where, errors)
        if c["status"] not in S.CELL_STATUSES:
            errors.append(f"{where}.status {c['status']!r} is unknown")
        for k, kinds in S.CELL_OPTIONAL.items():
            if k in c and not _typed(c[k], kinds):
                errors.append(f"{where}.{k} should be {' or '.join(kinds)}")
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
            _optional(r, S.REPEAT_OPTIONAL, rw, errors)
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


def _diff(got: Any, want: Any, where: str, errors: list[str]) -> None:
    """Append where ``got`` differs from ``want``: numbers within 0.1%, the rest exactly."""
    if isinstance(want, dict):
        if not isinstance(got, dict):
            errors.append(f"{where} is {got!r}, recomputed an object")
            return
        for k in sorted(set(want) | set(got)):
            _diff(got.get(k), want.get(k), f"{where}.{k}", errors)
    elif isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            errors.append(f"{where} does not recompute")
            return
        for i, (a, b) in enumerate(zip(got, want, strict=True)):
            _diff(a, b, f"{where}[{i}]", errors)
    elif isinstance(want, (int, float)) and not isinstance(want, bool):
        if not isinstance(got, (int, float)) or isinstance(got, bool) or not _close(got, want):
            errors.append(f"{where} is {got}, recomputed {want}")
    elif got != want:
        errors.append(f"{where} is {got!r}, recomputed {want!r}")


def _power_samples(doc: dict, run_dir: Path) -> dict[str, tuple]:
    """Valid power samples (t_ns, power_w) per device label; {} where there is no trace.

    An unreadable trace is the ``trace`` rule's finding; here it only leaves the timeline
    phases unchecked.
    """
    try:
        p = load.trace_path(doc, run_dir)
        cols = io.read_trace(p) if p is not None else None
    except Invalid:
        return {}
    return _device_samples(cols)[1] if cols is not None else {}


def _device_of(doc: dict, label: str) -> Device | None:
    """The device a cell ran on: one of the document's, or a group of its GPUs (the
    configuration's ``gpus_per_cell``)."""
    devs = [Device.from_dict(d) for d in doc["devices"]
            if isinstance(d, dict) and d.get("kind") in ("cuda", "cpu")]
    n = doc["config"].get("gpus_per_cell", 1) if isinstance(doc.get("config"), dict) else 1
    if isinstance(n, int) and not isinstance(n, bool) and n > 1:
        devs = device_groups(SweepConfig(gpus_per_cell=n), devs)[0]
    for dev in devs:
        if dev.label == label:
            return dev
    return None


def _engine_name(c: dict) -> str:
    e = c.get("engine")
    return str(e.get("name", "hf")) if isinstance(e, dict) else "hf"


def rule_figures(doc: dict, run_dir: Path) -> list[str]:
    """Every cell's record rebuilt from its raw windows (``figures.cell_record``) within 0.1%.

    The figures, the interval, the method label, both phase methods (the timeline from
    the trace's power samples), the roofline (built-in models) and the run summary.
    """
    from bench import models

    errors: list[str] = []
    power = _power_samples(doc, run_dir)
    builtin = set(models.builtin_names())
    for c in doc["cells"]:
        cid = c["cell_id"]
        if not c["repeats"]:
            if c["figures"] is not None:
                errors.append(f"{cid}: figures without repeats")
            continue
        idle_w = c.get("idle_power_w")
        # a resumed run measured the idle baseline once per session: any of them will do
        baselines = [i.get("power_w") for i in doc["idle"]
                     if isinstance(i, dict) and i.get("device") == c["device"]]
        if idle_w is not None and not any(_close(idle_w, b) for b in baselines):
            errors.append(f"{cid}: idle_power_w is not the device's idle baseline")
        dev = _device_of(doc, c["device"])
        if dev is None:
            errors.append(f"{cid}: its device is not in the document")
            continue
        ph = c.get("phases")
        sub = ph.get("subtraction") if isinstance(ph, dict) else None
        prefill = sub.get("prefill_window") if isinstance(sub, dict) else None
        cell = Cell(dev, c["model"], c["dtype"], c["batch_size"], c["input_len"],
                    c["output_len"], _engine_name(c), *_power_limit(c))
        spec = models.get(c["model"]) if c["model"] in builtin else None
        load = c.get("load") if isinstance(c.get("load"), dict) else None
        raw = F.CellRaw(cell, c["status"], c.get("error"), c["repeats"], prefill, idle_w,
                        power.get(c["device"]), spec, power_limit_w=c.get("power_limit_w"),
                        power_limit_set_w=c.get("power_limit_set_w"),
                        sm_clock_mhz=c.get("sm_clock_mhz"), load=load)
        try:
            again = F.cell_record(raw)
        except (KeyError, TypeError, ValueError, ZeroDivisionError) as exc:
            errors.append(f"{cid}: repeats cannot be recomputed ({exc})")
            continue
        if "num_devices" not in c and again.get("num_devices", 1) == 1 and again["figures"] \
                and "output_tokens_per_s_per_gpu" not in (c["figures"] or {}):
            # a one-GPU cell of a document from before multi-GPU cells: no per-GPU figure
            again["figures"].pop("output_tokens_per_s_per_gpu", None)
        for k in ("energy_method", "figures", "uncertainty"):
            _diff(c.get(k), again[k], f"{cid}: {k}", errors)
        # each window's throttled flag follows from its recorded clock event reasons
        _diff([r.get("throttled") for r in c["repeats"]],
              [r.get("throttled") for r in again["repeats"]], f"{cid}: repeats' throttled",
              errors)
        _diff(c.get("throttled_windows"), again.get("throttled_windows"),
              f"{cid}: throttled_windows", errors)
        if load is not None:  # endpoint mode: the client's load over the cell's span
            _diff(load.get("client_saturated"), again["load"]["client_saturated"],
                  f"{cid}: load.client_saturated", errors)
            inside = sum((r.get("load") or {}).get("output_tokens", 0) for r in c["repeats"])
            if not load.get("output_tokens", 0) >= inside - len(c["repeats"]):
                errors.append(f"{cid}: load.output_tokens {load.get('output_tokens')} is "
                              f"under its windows' {inside}")
        for k in ("num_devices", "device_uuids"):  # absent in documents before them
            if k in c or again.get("num_devices", 1) > 1:
                _diff(c.get(k), again.get(k), f"{cid}: {k}", errors)
        if c["status"] == "ok":
            want_ph = dict(again["phases"])
            if c["device"] not in power:  # no trace to redo the timeline from
                want_ph.pop("timeline")
            _diff({k: v for k, v in (ph or {}).items() if k in want_ph}, want_ph,
                  f"{cid}: phases", errors)
            rf = c.get("roofline")
            if spec is not None and isinstance(rf, dict):
                want_rf = again["roofline"] or {}
                _diff({k: rf.get(k) for k in want_rf}, want_rf, f"{cid}: roofline", errors)
    again_sum = F.run_summary(doc["cells"])
    summ = doc["summary"]
    if summ.get("cells") != again_sum["cells"] or summ.get("ok") != again_sum["ok"]:
        errors.append("summary counts do not match the cells")
    if not _close(summ.get("max_output_tokens_per_j"), again_sum["max_output_tokens_per_j"]):
        errors.append("summary max_output_tokens_per_j does not match the cells")
    return errors


def rule_hashes(doc: dict, run_dir: Path) -> list[str]:
    """The trace's SHA-256; a submission's manifest and signature when present."""
    errors = []
    try:
        p = load.trace_path(doc, run_dir)
    except Invalid as exc:
        return [str(exc)]
    if p is not None and io.sha256_file(p) != doc["trace"].get("sha256"):
        errors.append(f"{p.name} does not match its recorded SHA-256")
    if (run_dir / manifest.MANIFEST).exists() or (run_dir / manifest.MANIFEST).is_symlink():
        errors.extend(manifest.verify(run_dir))
    return errors


def _windows(c: dict):
    """(name, window) for each measured window of a cell: the repeats, then the prefill one."""
    for j, r in enumerate(c["repeats"]):
        yield f"{c['cell_id']}#{j}", r
    ph = c.get("phases")
    sub = ph.get("subtraction") if isinstance(ph, dict) else None
    if isinstance(sub, dict) and isinstance(sub.get("prefill_window"), dict):
        yield f"{c['cell_id']}#prefill", sub["prefill_window"]


def _readings(w: dict) -> list[dict]:
    rds = w.get("readings", [])
    if not isinstance(rds, list) or not all(isinstance(rd, dict) for rd in rds):
        raise TypeError("readings must be a list of objects")
    return rds


def rule_energy(doc: dict) -> list[str]:
    """Each window's energy per scope is the sum of that scope's readings (None if any is)."""
    errors = []
    for c in doc["cells"]:
        for w, r in _windows(c):
            rds = _readings(r)
            for scope, e in (r.get("energy") or {}).items():
                if not isinstance(e, dict):
                    errors.append(f"{w}: energy.{scope} is not an object")
                    continue
                mine = [rd.get("energy_j") for rd in rds if rd.get("scope") == scope]
                want = None if not mine or None in mine else math.fsum(
                    x for x in mine if x is not None)
                if not _close(e.get("energy_j"), want):
                    errors.append(f"{w}: {scope} energy {e.get('energy_j')} J is not the sum "
                                  f"of its readings ({want} J)")
                per = F.window_per_device(rds, scope)
                if per is not None or "per_device" in e:  # a multi-GPU cell's own GPUs
                    _diff(e.get("per_device"), per, f"{w}: energy.{scope}.per_device",
                          errors)
            scopes = {rd.get("scope") for rd in rds}
            for scope in scopes - set(r.get("energy") or {}):
                errors.append(f"{w}: readings of scope {scope} but no energy.{scope}")
    return errors


def _device_samples(cols: dict) -> tuple[dict, dict, list[str]]:
    """Per device label: valid counter samples (t, e) and valid power samples (t, p)."""
    import numpy as np

    counter, power, errors = {}, {}, []
    for idx in np.unique(cols["device_index"]):
        m = cols["device_index"] == idx
        t = cols["t_ns"][m]
        label = "node" if idx == io.NODE_TRACE_INDEX else f"gpu{idx}"
        if np.any(np.diff(t) < 0):
            errors.append(f"{label}: trace timestamps go backwards")
            continue
        # A counter that steps down was reset or wrapped: the kernels unwrap it (they add
        # the value before the step), so a reset is accepted exactly as they read it.
        ok = cols["energy_status"][m] == 0
        counter[label] = (t[ok], cols["energy_j"][m][ok], cols["latency_ns"][m][ok])
        pok = cols["power_status"][m] == 0
        power[label] = (t[pok], cols["power_w"][m][pok])
    return counter, power, errors


def _recompute(rd: dict, t0: int, t1: int, counter: dict, power: dict) -> float | None | str:
    """A reading's energy from the samples by its method; None where it cannot be redone.

    Returns a message instead where the reading claims samples the trace does not hold.
    """
    import numpy as np

    from bench.kernels import trace as K

    st = rd.get("stats")
    dev = rd.get("device")
    if not isinstance(st, dict) or rd.get("energy_j") is None:
        return None  # no sampler ran for this reading (CPU, RAPL, estimates)
    if rd.get("scope") == "node":  # the BMC's samples, interpolated at both edges
        if "node" not in power:
            return "no trace of the node's BMC samples"
        t, p = power["node"]
        if not (t.size >= 2 and t[0] <= t0 and t[-1] >= t1):
            return "the trace of the node does not cover the window"
        if rd.get("method") == "counter":
            tc, e, _ = counter["node"]
            return float(np.interp(t1, tc, e) - np.interp(t0, tc, e))
        return K.power_energy_j(t, p, t0, t1)[0]
    if rd.get("method") == "counter":
        if dev not in counter:
            return f"no trace for {dev}"
        t, e, lat = counter[dev]
        if st.get("counter_edges") == "fitted":
            return _fitted(rd, st, t, e, lat, power.get(dev), t0, t1)
        if st.get("counter_edges") == "interpolated":
            if not (t.size >= 2 and t[0] <= t0 and t[-1] >= t1):
                return f"the trace of {dev} does not cover the window"
            return K.counter_energy_j(t, e, t0, t1)
        # The runner interpolates whenever the samples it holds (from LOOKBACK_NS before
        # the window on) cover the window; edges read directly claim they did not.
        near = t[t >= t0 - LOOKBACK_NS]
        if near.size >= 2 and near[0] <= t0 and near[-1] >= t1:
            return f"{dev} edges marked {st.get('counter_edges')!r} but the trace covers them"
        return None
    if rd.get("method") == "power_integration":
        if dev not in power:
            return f"no trace for {dev}"
        t, p = power[dev]
        if t.size < 2:
            return f"too few power samples of {dev}"
        return K.power_energy_j(t, p, t0, t1)[0]
    return None


def _fitted(rd: dict, st: dict, t: Any, e: Any, lat: Any, power: tuple | None, t0: int,
            t1: int) -> float | str:
    """A counter reading whose refreshes were placed on their fitted grid: the estimate
    and its interval recomputed from the same samples (``trace_from_ns``..``trace_to_ns``)
    with ``kernels.trace.counter_window_bounds_j``, and the sure interval where recorded
    with ``counter_window_sure_bounds_j``; a message where an interval does not."""
    from bench.kernels import trace as K

    a, b = st.get("trace_from_ns"), st.get("trace_to_ns")
    if not isinstance(a, int) or not isinstance(b, int) or power is None:
        return f"{rd.get('device')}: a fitted counter reading without its sample range"
    keep = (t >= a) & (t <= b)
    tp, pw = power
    pkeep = (tp >= a) & (tp <= b)
    est, low, high, _ = K.counter_window_bounds_j(t[keep], e[keep], t0, t1, tp[pkeep],
                                                  pw[pkeep], lat[keep])
    for k, v in (("energy_low_j", low), ("energy_high_j", high)):
        if not _close(st.get(k), float(v)):
            return f"{rd.get('device')} {k} {st.get(k)}, recomputed {v:.6g}"
    if not _close(st.get("edge_bound_j"), max(est - low, high - est)):
        return f"{rd.get('device')} edge_bound_j does not recompute"
    if "energy_sure_low_j" in st or "energy_sure_high_j" in st:  # absent before 2026-11-30
        sure = K.counter_window_sure_bounds_j(t[keep], e[keep], t0, t1, lat[keep])
        for k, v in zip(("energy_sure_low_j", "energy_sure_high_j"), sure, strict=True):
            if not _close(st.get(k), None if v != v else float(v)):
                return f"{rd.get('device')} {k} {st.get(k)}, recomputed {v:.6g}"
    return float(est)


def rule_trace(doc: dict, run_dir: Path) -> list[str]:
    """Every sampled reading recomputed from the raw samples by its method within 0.1%.

    Counter readings: the counter interpolated at the window edges between its update
    times, resets unwrapped (``kernels.trace.counter_energy_j``). Power-integration
    readings: the trapezoid integral of the valid power samples over the window
    (``kernels.trace.power_energy_j``). Also the timeline-method phase figures.
    """
    try:
        p = load.trace_path(doc, run_dir)
        if p is None:
            return []
        cols = io.read_trace(p)
    except Invalid as exc:
        return [str(exc)]
    counter, power, errors = _device_samples(cols)
    for c in doc["cells"]:
        for w, r in _windows(c):
            for rd in _readings(r):
                try:
                    again = _recompute(rd, r["t0_ns"], r["t1_ns"], counter, power)
                except ValueError as exc:
                    errors.append(f"{w}: {exc}")
                    continue
                if isinstance(again, str):
                    errors.append(f"{w}: {again}")
                elif again is not None and not _close(rd["energy_j"], again):
                    errors.append(f"{w}: {rd['device']} {rd['method']} energy "
                                  f"{rd['energy_j']:.6g} J, recomputed {again:.6g} J")
    return errors


def _plan(doc: dict) -> dict[tuple, str]:
    """The planned cells {(device, model, dtype, batch, input, output, engine): cell_id}.

    ``bench.sweep.plan`` over the document's configuration and devices.

    Raises:
        ValueError: the configuration is not a sweep this harness can plan.
    """
    try:
        config = SweepConfig.from_dict(doc["config"])
    except BenchError as exc:
        raise ValueError(str(exc)) from None
    devs = [Device.from_dict(d) for d in doc["devices"]]
    return {(x.device.name if config.spread else x.device.label, x.model, x.dtype,
             x.batch_size, x.input_len, x.output_len, x.engine, x.power_limit_w,
             x.power_limit_frac): x.cell_id
            for x in plan(config, devs)}


def _power_limit(c: dict) -> tuple[float | None, float | None]:
    """A cell's point on the power-limit axis (W, fraction); (None, None) without one."""
    frac = c.get("power_limit_frac")
    if isinstance(frac, (int, float)) and not isinstance(frac, bool):
        return None, float(frac)
    w = c.get("power_limit_set_w")
    if isinstance(w, (int, float)) and not isinstance(w, bool):
        return float(w), None
    return None, None


def _key(c: dict, spread: bool = False) -> tuple:
    """A cell's place in the plan: its device, or with ``spread`` its device's model name
    (a spread run measures each cell once per GPU model, on any GPU of that model)."""
    return (c.get("device_name") if spread else c["device"], c["model"], c["dtype"],
            c["batch_size"], c["input_len"], c["output_len"], _engine_name(c),
            *_power_limit(c))


def rule_plan(doc: dict) -> list[str]:
    """The cells are the configured sweep: none extra, none twice, none missing unexplained.

    A complete run has every planned cell (an ``oom`` or ``skipped`` status explains one
    without figures; ``skipped`` needs an ``oom`` at a smaller batch of the same model and
    lengths); an interrupted or failed run may lack cells. Ids match their fields.
    """
    for k in ("models", "batch_sizes", "input_lens", "output_lens"):
        v = doc["config"].get(k)
        if not isinstance(v, list) or not v:
            return [f"config.{k} is not a non-empty list"]
    planned = _plan(doc)
    spread = doc["config"].get("spread") is True
    errors, seen = [], set()
    for c in doc["cells"]:
        key = _key(c, spread)
        if key not in planned:
            errors.append(f"{c['cell_id']}: not in the configured sweep")
        elif spread and c["cell_id"].split("/", 1)[1] != planned[key].split("/", 1)[1]:
            errors.append(f"{c['cell_id']}: id does not match its fields ({planned[key]})")
        elif not spread and c["cell_id"] != planned[key]:
            errors.append(f"{c['cell_id']}: id does not match its fields ({planned[key]})")
        if key in seen:
            errors.append(f"{c['cell_id']}: appears twice")
        seen.add(key)
        if c["status"] == "ok" and not c["repeats"]:
            errors.append(f"{c['cell_id']}: status ok without repeats")
        if c["status"] != "ok" and c["figures"] is not None:
            errors.append(f"{c['cell_id']}: status {c['status']} with figures")
        if c["status"] == "skipped":
            group = (c["device"], key[1], key[2], key[4], key[5], *key[7:])
            if not any(o["status"] == "oom" and (o["device"], o["model"], o["dtype"],
                       o["input_len"], o["output_len"], *_power_limit(o)) == group and
                       o["batch_size"] < c["batch_size"] for o in doc["cells"]):
                errors.append(f"{c['cell_id']}: skipped without an oom at a smaller batch")
    missing = [cid for k, cid in planned.items() if k not in seen]
    if missing and doc["status"] == "complete":
        errors.append(f"{len(missing)} planned cell(s) missing from a complete run: "
                      f"{', '.join(missing[:3])}")
    return errors

def _device_kind(doc: dict, label: str) -> tuple[str, dict]:
    for d in doc["devices"]:
        if not isinstance(d, dict):
            continue
        dl = f"gpu{d.get('index')}" if d.get("kind") == "cuda" else "cpu"
        if dl == label.split("+")[0]:  # a group of GPUs: its first
            return d.get("kind", "cpu"), d
    return ("cuda" if label.startswith("gpu") else "cpu"), {}


def _window_time_errors(w: str, r: dict) -> list[str]:
    """A window's edges in order and its duration_s equal to them."""
    t0, t1, dur = r.get("t0_ns"), r.get("t1_ns"), r.get("duration_s")
    if not isinstance(t0, int) or not isinstance(t1, int) or isinstance(t0, bool) or \
            isinstance(t1, bool) or not isinstance(dur, (int, float)) or isinstance(dur, bool):
        return [f"{w}: t0_ns, t1_ns and duration_s must be numbers"]
    if not t0 < t1:
        return [f"{w}: window ends before it starts"]
    if dur <= 0 or not math.isclose(dur, (t1 - t0) * 1e-9, rel_tol=1e-9, abs_tol=1e-9):
        return [f"{w}: duration_s {dur:.6g} does not match its timestamps "
                f"({(t1 - t0) * 1e-9:.6g} s)"]
    return []


def rule_physics(doc: dict) -> list[str]:
    """Power within 1.5x TDP, throughput under the FLOP roofline, windows and tokens sane.

    The FLOP ceiling counts a model's active parameters (a mixture of experts uses k of E).
    Every window (the repeats and the prefill-only one) has t0 < t1 and a duration equal
    to its timestamps.
    """
    from bench import models
    from bench.devices import specs
    from bench.models import arithmetic

    errors = []
    min_window = doc["config"].get("min_window_s")
    for c in doc["cells"]:
        kind, dev = _device_kind(doc, c["device"])
        spec = specs.lookup(c.get("device_name") or dev.get("name"))
        tdp = spec.tdp_w if spec else dev.get("power_limit_w")
        nd = c.get("num_devices", 1)
        nd = nd if isinstance(nd, int) and not isinstance(nd, bool) and nd >= 1 else 1
        if tdp:
            tdp *= nd  # a group of GPUs draws up to N times one GPU's TDP
        floor_s = min_window if isinstance(min_window, (int, float)) else DEVICE_DEFAULTS[
            "cuda" if kind == "cuda" else "cpu"].min_window_s
        last_t1 = None
        for w, r in _windows(c):
            errors.extend(_window_time_errors(w, r))
            if w.endswith("#prefill"):  # one-token calls after the repeats
                if r.get("output_tokens") != r.get("generate_calls", 0) * c["batch_size"] \
                        or r.get("input_tokens") != r.get("generate_calls", 0) * \
                        c["batch_size"] * c["input_len"]:
                    errors.append(f"{w}: token counts are not calls x batch x length")
                continue
            if last_t1 is not None and r["t0_ns"] < last_t1:
                errors.append(f"{w}: windows overlap or go back in time")
            last_t1 = r["t1_ns"]
            if r["duration_s"] < floor_s * (1 - 1e-9):
                errors.append(f"{w}: window {r['duration_s']:.3g} s is under the "
                              f"{floor_s:g} s minimum")
            if _engine_name(c) == "endpoint":
                # a closed loop has no whole calls: the window counts the tokens that
                # arrived inside it, at most a full output per request that streamed there
                if not 0 < r["output_tokens"] <= r["generate_calls"] * c["output_len"] \
                        or not 0 <= r["input_tokens"] <= r["generate_calls"] * c["input_len"]:
                    errors.append(f"{w}: token counts exceed streaming requests x length")
            elif r["output_tokens"] != r["generate_calls"] * c["batch_size"] * \
                    c["output_len"] or r["input_tokens"] != r["generate_calls"] * \
                    c["batch_size"] * c["input_len"]:
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
            # a token of a mixture-of-experts model touches only its active parameters
            n_params = arithmetic.of(models.get(c["model"]), c["dtype"]).n_active
        if n_params and spec:
            tps_max = spec.bf16_flops * nd / (2 * n_params)  # each token needs >= 2N FLOPs
            tps = f.get("output_tokens_per_s")
            if tps is not None and tps > tps_max:
                errors.append(f"{c['cell_id']}: {tps:.4g} tokens/s is over the FLOP roofline "
                              f"{tps_max:.4g}")
            tpj = f.get("output_tokens_per_j")
            tpj_max = tps_max / (MIN_LOAD_POWER_FRACTION * spec.tdp_w * nd)
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


def rule_labels(doc: dict) -> list[str]:
    """Method labels: a cell's is its repeats' weakest, a scope's is its readings' weakest.

    estimate < power_integration < counter. An estimate is labelled as one wherever it
    appears.
    """
    errors = []
    for c in doc["cells"]:
        methods = [r["energy"].get(c["scope"], {}).get("method") for r in c["repeats"]]
        want = F.weakest_method(methods)
        if c["energy_method"] != want:
            errors.append(f"{c['cell_id']}: energy_method {c['energy_method']!r}, its "
                          f"repeats' weakest is {want!r}")
        for w, r in _windows(c):
            rds = _readings(r)
            for scope, e in (r.get("energy") or {}).items():
                got = e.get("method") if isinstance(e, dict) else None
                wanted = F.weakest_method(rd.get("method") for rd in rds
                                          if rd.get("scope") == scope)
                if got != wanted:
                    errors.append(f"{w}: {scope} method {got!r}, its readings' weakest is "
                                  f"{wanted!r}")
            for rd in rds:
                if "estimate" in str(rd.get("source", "")) and rd.get("method") != "estimate":
                    errors.append(f"{w}: {rd.get('source')} not labelled an estimate")
    return errors


RULES = ("schema", "hashes", "figures", "energy", "trace", "plan", "physics", "provenance",
         "labels")


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
                           ("figures", rule_figures, (doc, run_dir)),
                           ("energy", rule_energy, (doc,)),
                           ("trace", rule_trace, (doc, run_dir)),
                           ("plan", rule_plan, (doc,)),
                           ("physics", rule_physics, (doc,)),
                           ("provenance", rule_provenance, (doc,)),
                           ("labels", rule_labels, (doc,))):
        try:
            errs = fn(*args)
        except (LookupError, TypeError, ValueError, AttributeError, ArithmeticError) as exc:
            errs = [f"cannot check ({exc.__class__.__name__}: {exc})"]
        out.append(Check(name, not errs, "; ".join(errs[:3]) + (
            f" (+{len(errs) - 3} more)" if len(errs) > 3 else "") if errs else "ok"))
    return out
