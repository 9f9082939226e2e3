"""Measurement truth: every joule ties to its samples, every cell to the plan, every label.

Each forgery below keeps the figures consistent (they recompute), so only the rules that
tie the figures to the readings, the readings to the raw samples, the cells to the config,
and the labels to the readings can catch it. A counter reset is accepted as the kernels
unwrap it.
"""

import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from bench.devices import Device
from bench.kernels import trace as K
from bench.results import figures, io
from bench.results import validate as V

from .conftest import stand_in_gpu_run


@pytest.fixture(scope="module")
def counter_run(stand_in_run):
    return stand_in_run


@pytest.fixture(scope="module")
def power_run(fake_nvml_dir, tmp_path_factory):
    """No energy counter: the runner integrates sampled power (method power_integration)."""
    return stand_in_gpu_run(fake_nvml_dir, tmp_path_factory.mktemp("truth") / "run",
                    "base_w=250,counter=0", batch_sizes=(1,))


def copy(src, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(src, dst)
    return dst


def read(run):
    return json.loads((run / "result.json").read_text())


def write(run, doc):
    (run / "result.json").write_text(json.dumps(doc))


def verdicts(run):
    return {c.rule: c for c in V.validate(run)}


def failed(run):
    return {r for r, c in verdicts(run).items() if not c.ok}


def refigure(doc):
    """Recompute every figure the way the runner does, so a forgery stays consistent."""
    from bench import models, roofline

    dev = Device.from_dict(doc["devices"][0])
    for c in doc["cells"]:
        if not c["repeats"]:
            continue
        c["figures"], c["uncertainty"] = figures.cell_figures(c["repeats"], c["scope"],
                                                             c.get("idle_power_w"))
        ph = c["phases"]
        sub = ph["subtraction"]
        again = figures.phases(c["repeats"], sub.get("prefill_window"), c["scope"],
                             c["batch_size"], c["input_len"], c["output_len"], None)
        ph["ttft_s"] = again["ttft_s"]
        ph["subtraction"] = again["subtraction"]
        c["roofline"] = roofline.cell_roofline(
            dev, models.get(c["model"]), c["dtype"], c["batch_size"], c["input_len"],
            c["output_len"], c["figures"]["output_tokens_per_j"])
    ok = [c for c in doc["cells"] if c["status"] == "ok"]
    doc["summary"]["max_output_tokens_per_j"] = max(
        c["figures"]["output_tokens_per_j"] for c in ok)


def windows(doc):
    for c in doc["cells"]:
        yield from c["repeats"]
        yield c["phases"]["subtraction"]["prefill_window"]


def test_real_runs_pass_every_rule(counter_run, power_run):
    for run in (counter_run, power_run):
        bad = [c.line() for c in V.validate(run) if not c.ok]
        assert bad == []
    methods = {rd["method"] for w in windows(read(power_run)) for rd in w["readings"]
               if rd["scope"] == "gpu"}
    assert methods == {"power_integration"}


# -- a) halved GPU energy, every figure recomputed ----------------------------------------

def _halve(doc, readings_too):
    for w in windows(doc):
        w["energy"]["gpu"]["energy_j"] /= 2
        if readings_too:
            for rd in w["readings"]:
                if rd["scope"] == "gpu":
                    rd["energy_j"] /= 2
    refigure(doc)


def test_halved_energy_fails_rule_energy(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(run)
    before = doc["cells"][0]["figures"]["output_tokens_per_j"]
    _halve(doc, readings_too=False)
    assert doc["cells"][0]["figures"]["output_tokens_per_j"] == pytest.approx(2 * before)
    write(run, doc)
    v = verdicts(run)
    assert v["figures"].ok and v["trace"].ok  # consistent: the old rules saw nothing
    assert not v["energy"].ok and "not the sum of its readings" in v["energy"].reason


@pytest.mark.parametrize("which", ["counter", "power"])
def test_halved_readings_fail_rule_trace(counter_run, power_run, tmp_path, which):
    run = copy(counter_run if which == "counter" else power_run, tmp_path)
    doc = read(run)
    _halve(doc, readings_too=True)
    write(run, doc)
    v = verdicts(run)
    assert v["figures"].ok and v["energy"].ok
    assert not v["trace"].ok and "recomputed" in v["trace"].reason
    assert ("counter" if which == "counter" else "power_integration") in v["trace"].reason


# -- b) one tampered reading ---------------------------------------------------------------

def test_tampered_reading_fails_energy_and_trace(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(run)
    (rd,) = [r for r in doc["cells"][1]["repeats"][1]["readings"] if r["scope"] == "gpu"]
    rd["energy_j"] *= 1.01
    write(run, doc)
    assert {"energy", "trace"} <= failed(run)


def test_a_reading_cannot_opt_out_of_the_recompute(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(counter_run)
    (rd,) = [r for r in doc["cells"][0]["repeats"][0]["readings"] if r["scope"] == "gpu"]
    rd["energy_j"] *= 1.01
    rd["stats"]["counter_edges"] = "read"  # as if the samples had not covered the window
    doc["cells"][0]["repeats"][0]["energy"]["gpu"]["energy_j"] = rd["energy_j"]
    refigure(doc)
    write(run, doc)
    v = verdicts(run)
    assert v["figures"].ok and v["energy"].ok
    assert "but the trace covers them" in v["trace"].reason


@pytest.mark.parametrize("key", ["energy_sure_low_j", "energy_sure_high_j"])
def test_a_tampered_sure_interval_fails_rule_trace(counter_run, tmp_path, key):
    run = copy(counter_run, tmp_path)
    doc = read(run)
    (rd,) = [r for r in doc["cells"][0]["repeats"][-1]["readings"] if r["scope"] == "gpu"]
    st = rd["stats"]
    # recorded, and wider than the premise interval it stands beside
    assert st["energy_sure_low_j"] <= st["energy_low_j"] <= rd["energy_j"]
    assert rd["energy_j"] <= st["energy_high_j"] <= st["energy_sure_high_j"]
    st[key] = st[key] * 1.01 + 0.01  # 1% and 10 mJ more (a bottom may be 0)
    write(run, doc)
    v = verdicts(run)
    assert v["energy"].ok and not v["trace"].ok and key in v["trace"].reason


# -- c) the config against the cells ---------------------------------------------------------

def test_cells_must_be_the_planned_sweep(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(run)
    doc["config"]["batch_sizes"] = [1, 4]  # the cells are b1 and b2
    write(run, doc)
    v = verdicts(run)
    assert not v["plan"].ok and "b2" in v["plan"].reason and "missing" in v["plan"].reason
    # a planned cell dropped from a complete run
    doc = read(counter_run)
    doc["cells"].pop()
    doc["summary"].update(cells=1, ok=1, not_ok=0)
    refigure(doc)
    write(run, doc)
    assert "plan" in failed(run)
    # the same run marked interrupted may lack it
    doc["status"] = "interrupted"
    write(run, doc)
    assert "plan" not in failed(run)
    # a cell twice
    doc = read(counter_run)
    doc["cells"].append(doc["cells"][0])
    write(run, doc)
    assert "twice" in verdicts(run)["plan"].reason


def test_skipped_cell_needs_an_oom_below_it(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(counter_run)
    c = doc["cells"][1]
    c.update(status="skipped", repeats=[], figures=None, uncertainty=None,
             energy_method=None, error="batch 1 ran out of memory")
    doc["summary"].update(ok=1, not_ok=1)
    refigure(doc)
    write(run, doc)
    assert "without an oom" in verdicts(run)["plan"].reason
    doc["cells"][0].update(status="oom", repeats=[], figures=None, uncertainty=None,
                           energy_method=None)
    write(run, doc)
    assert verdicts(run)["plan"].ok


# -- d) durations of every window, the prefill one included ----------------------------------

def test_prefill_window_duration_must_match_its_edges(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(counter_run)
    pw = doc["cells"][0]["phases"]["subtraction"]["prefill_window"]
    pw["duration_s"] = -pw["duration_s"]
    write(run, doc)
    v = verdicts(run)
    assert v["figures"].ok and not v["physics"].ok and "#prefill" in v["physics"].reason
    pw["t0_ns"], pw["t1_ns"] = pw["t1_ns"], pw["t0_ns"]  # negative, and consistent with it
    write(run, doc)
    assert "ends before it starts" in verdicts(run)["physics"].reason


def test_repeat_duration_off_by_a_millisecond(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(counter_run)
    doc["cells"][1]["repeats"][0]["duration_s"] += 1e-3
    write(run, doc)
    assert "does not match its timestamps" in verdicts(run)["physics"].reason


# -- e) method labels ----------------------------------------------------------------------

def test_cell_label_is_the_weakest_of_its_repeats(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(counter_run)
    doc["cells"][0]["energy_method"] = "power_integration"  # the repeats say counter
    write(run, doc)
    assert "labels" in failed(run)


def test_scope_label_must_match_its_readings(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(counter_run)
    c = doc["cells"][0]
    c["repeats"][0]["energy"]["gpu"]["method"] = "power_integration"
    c["energy_method"] = "power_integration"  # consistent with the repeats, not the readings
    write(run, doc)
    v = verdicts(run)
    assert not v["labels"].ok and "readings' weakest is 'counter'" in v["labels"].reason


def test_weakest_method_order():
    assert figures.weakest_method(["counter", "power_integration"]) == "power_integration"
    assert figures.weakest_method(["counter", "estimate", "power_integration"]) == "estimate"
    assert figures.weakest_method(["counter", None]) == "counter"
    assert figures.weakest_method([None]) is None


# -- a counter reset mid-run passes ---------------------------------------------------------

def test_counter_reset_mid_window_is_accepted(counter_run, tmp_path):
    run = copy(counter_run, tmp_path)
    doc = read(run)
    trace = pq.read_table(run / "trace.parquet").to_pandas()
    ok = np.flatnonzero(trace["energy_status"].to_numpy() == 0)
    t = trace["t_ns"].to_numpy()
    e = trace["energy_j"].to_numpy().copy()
    rep = doc["cells"][1]["repeats"][0]
    mid = (rep["t0_ns"] + rep["t1_ns"]) // 2
    # the first valid sample past the middle of the window whose value is a stale repeat
    # of the one before: the counter restarts from 0 there and loses nothing
    p = next(p for p in range(1, ok.size) if t[ok[p]] >= mid and e[ok[p]] == e[ok[p - 1]])
    e[ok[p:]] -= e[ok[p]]
    assert e[ok[p]] == 0.0 and e[ok[p - 1]] > 1.0  # a real step down to zero
    trace["energy_j"] = e
    pq.write_table(pa.Table.from_pandas(trace, preserve_index=False), run / "trace.parquet")
    doc["trace"]["sha256"] = io.sha256_file(run / "trace.parquet")
    # what the sampler records for a window holding a reset: the interval's top raised by
    # what the reset can have lost, and the count (so the cell's largest edge bound too)
    rd = rep["readings"][0]
    st = rd["stats"]
    counter, power, _ = V._device_samples(io.read_trace(run / "trace.parquet"))
    (tc, ec, lat), (tp, pw) = counter[rd["device"]], power[rd["device"]]
    keep = (tc >= st["trace_from_ns"]) & (tc <= st["trace_to_ns"])
    pkeep = (tp >= st["trace_from_ns"]) & (tp <= st["trace_to_ns"])
    est, low, high, _ = K.counter_window_bounds_j(tc[keep], ec[keep], rep["t0_ns"],
                                                  rep["t1_ns"], tp[pkeep], pw[pkeep],
                                                  lat[keep])
    assert high > st["energy_high_j"] and est == pytest.approx(rd["energy_j"], rel=1e-3)
    st.update(energy_low_j=low, energy_high_j=high, edge_bound_j=max(est - low, high - est),
              counter_resets=K.counter_window_resets(tc[keep], ec[keep], rep["t0_ns"],
                                                     rep["t1_ns"], lat[keep]))
    assert st["counter_resets"] == 1
    # the sure interval keeps its bottom and loses its top: a reset may lose any energy
    sure_low, sure_high = K.counter_window_sure_bounds_j(tc[keep], ec[keep], rep["t0_ns"],
                                                         rep["t1_ns"], lat[keep])
    assert np.isnan(sure_high) and 0 < sure_low <= est
    st.update(energy_sure_low_j=sure_low, energy_sure_high_j=None)
    cell = doc["cells"][1]
    cell["uncertainty"]["edge_bound_rel_max"] = figures._edge_bound_rel(cell["repeats"],
                                                                        cell["scope"])
    cell["uncertainty"]["sure_bound_rel_max"] = None  # a window without a sure top
    write(run, doc)
    bad = [c.line() for c in V.validate(run) if not c.ok]
    assert bad == []
    # the same reset, but the runner's reading is now 5 J more than the samples hold
    doc["cells"][1]["repeats"][0]["readings"][0]["energy_j"] += 5.0
    write(run, doc)
    assert "trace" in failed(run)


# -- the FLOP ceiling counts active parameters ----------------------------------------------

def _moe_doc(tokens_per_s):
    return {"config": {"min_window_s": 1.0},
            "devices": [{"kind": "cuda", "index": 0, "name": "NVIDIA H200"}],
            "cells": [{"cell_id": "gpu0/qwen3-30b-a3b/bf16/b256/i8/o4", "device": "gpu0",
                       "device_name": "NVIDIA H200", "model": "qwen3-30b-a3b",
                       "dtype": "bf16", "batch_size": 256, "input_len": 8, "output_len": 4,
                       "scope": "gpu", "repeats": [], "phases": None,
                       "figures": {"output_tokens_per_s": tokens_per_s,
                                   "output_tokens_per_j": 1.0, "mean_power_w": 500.0}}]}


def test_flop_ceiling_of_a_mixture_of_experts_uses_active_parameters():
    # by hand: 989e12 FLOP/s / (2 x 3,353,032,704 active) = 147,478 tokens/s, while
    # 2 x 30,532,122,624 total would give 16,196 tokens/s
    assert not [e for e in V.rule_physics(_moe_doc(50_000.0)) if "FLOP" in e]
    assert not [e for e in V.rule_physics(_moe_doc(147_000.0)) if "FLOP" in e]
    (err,) = [e for e in V.rule_physics(_moe_doc(148_000.0)) if "FLOP" in e]
    assert "1.475e+05" in err


def test_a_run_whose_counter_reset_passes(fake_nvml_dir, tmp_path):
    """The stand-in's counter restarts from 0 three seconds after NVML starts, mid-run."""
    run = stand_in_gpu_run(fake_nvml_dir, tmp_path / "run", "base_w=250,update_ms=100,reset_at_s=3",
                   batch_sizes=(1,))
    cols = io.read_trace(run / "trace.parquet")
    ok = cols["energy_status"] == 0
    e = cols["energy_j"][ok]
    assert (np.diff(e) < 0).sum() == 1  # the sampler saw the reset
    bad = [c.line() for c in V.validate(run) if not c.ok]
    assert bad == []
    # constant 250 W: every window's energy is 250 W x its duration, reset or not
    for w in windows(read(run)):
        assert w["energy"]["gpu"]["energy_j"] == pytest.approx(250 * w["duration_s"],
                                                               rel=2e-2)
