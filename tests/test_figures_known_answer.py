"""Derived figures against answers worked out by hand from small hand-made repeats.

Each expected value is written out as arithmetic on the numbers below, never computed
with a project function; only the three imports name where the figures live.
"""

from types import SimpleNamespace

import numpy as np
import pytest

from bench.results.figures import cell_figures
from bench.results.figures import phases as phases_of
from bench.roofline import cell_roofline

S = 1_000_000_000  # ns per s
BATCH, INPUT_LEN, OUTPUT_LEN = 2, 8, 4  # per call: 8 output and 16 input tokens

# calls as (start, first token, end) in ns
CALLS_A = [[0, int(0.10 * S), int(0.40 * S)], [int(0.40 * S), int(0.52 * S), int(0.80 * S)]]
CALLS_B = [[int(1.0 * S), int(1.10 * S), int(1.50 * S)],
           [int(1.5 * S), int(1.58 * S), int(2.00 * S)]]
CALLS_C = [[int(2.2 * S), int(2.35 * S), int(2.60 * S)]]


def repeat(calls, duration_s, energy_j, max_power_w=None, scope="gpu"):
    """A repeat record as cells.measure_window writes it."""
    n = len(calls)
    return {"t0_ns": calls[0][0], "t1_ns": calls[-1][2], "duration_s": duration_s,
            "generate_calls": n, "output_tokens": n * BATCH * OUTPUT_LEN,
            "input_tokens": n * BATCH * INPUT_LEN,
            "energy": {scope: {"energy_j": energy_j, "method": "counter", "reason": None}},
            "readings": [{"source": "s", "device": "gpu0", "scope": scope,
                          "method": "counter", "energy_j": energy_j, "reason": None,
                          "stats": {"max_power_w": max_power_w}}],
            "calls_ns": calls}


# A: 2 calls, 16 out / 32 in tokens, 0.8 s, 160 J; B: 2 calls, 1.0 s, 200 J;
# C: 1 call, 8 out / 16 in, 0.4 s, 64 J.
REPEATS = [repeat(CALLS_A, 0.8, 160.0, 310.0), repeat(CALLS_B, 1.0, 200.0, 320.0),
           repeat(CALLS_C, 0.4, 64.0)]


def test_cell_figures_by_hand():
    fig, _ = cell_figures(REPEATS, "gpu", idle_power_w=50.0)
    # output tokens/J: 16/160 = 0.1, 16/200 = 0.08, 8/64 = 0.125 -> median 0.1
    assert fig["output_tokens_per_j"] == pytest.approx(0.1)
    # total tokens/J: 48/160 = 0.3, 48/200 = 0.24, 24/64 = 0.375 -> 0.3
    assert fig["total_tokens_per_j"] == pytest.approx(0.3)
    # J per output token: 10, 12.5, 8 -> 10
    assert fig["j_per_output_token"] == pytest.approx(10.0)
    # output tokens/s: 16/0.8 = 20, 16/1.0 = 16, 8/0.4 = 20 -> 20
    assert fig["output_tokens_per_s"] == pytest.approx(20.0)
    # mean power: 160/0.8 = 200, 200/1.0 = 200, 64/0.4 = 160 -> 200
    assert fig["mean_power_w"] == pytest.approx(200.0)
    # incremental at 50 W idle: 16/(160 - 40) = 2/15, 16/(200 - 50) = 0.10667,
    # 8/(64 - 20) = 0.1818 -> 2/15
    assert fig["incremental_output_tokens_per_j"] == pytest.approx(2 / 15)
    assert fig["energy_j"] == pytest.approx(424.0)
    assert fig["duration_s"] == pytest.approx(2.2)
    assert (fig["output_tokens"], fig["input_tokens"]) == (40, 80)
    assert fig["max_power_w"] == 320.0


def test_throughput_per_gpu_by_hand():
    # output tokens/s 20 (above) over the GPUs that ran the cell together
    assert cell_figures(REPEATS, "gpu", None, 2)[0]["output_tokens_per_s_per_gpu"] == \
        pytest.approx(10.0)
    assert cell_figures(REPEATS, "gpu", None, 4)[0]["output_tokens_per_s_per_gpu"] == \
        pytest.approx(5.0)
    assert cell_figures(REPEATS, "gpu")[0]["output_tokens_per_s_per_gpu"] == pytest.approx(20.0)
    cpu = [repeat(CALLS_A, 0.8, 160.0, scope="cpu")]
    assert "output_tokens_per_s_per_gpu" not in cell_figures(cpu, "cpu")[0]


def test_cell_uncertainty_by_hand():
    _, unc = cell_figures(REPEATS, "gpu")
    assert unc["repeats"] == 3
    assert unc["output_tokens_per_j_min"] == pytest.approx(0.08)
    assert unc["output_tokens_per_j_max"] == pytest.approx(0.125)
    # the bootstrap "95%" interval of 3 repeats is [min, max] (finding 2 of the issue)
    # 3 repeats: the order-statistic interval is [min, max], coverage 1 - 2 x 1/8 = 0.75
    assert unc["output_tokens_per_j_ci"] == pytest.approx([0.08, 0.125])
    assert unc["ci_level"] == pytest.approx(0.75)


def test_even_repeats_take_the_middle_pair():
    reps = REPEATS + [repeat(CALLS_C, 0.5, 40.0)]  # 8/40 = 0.2 tokens/J, 8/0.5 = 16 tok/s
    fig, _ = cell_figures(reps, "gpu")
    # tokens/J 0.08, 0.1, 0.125, 0.2 -> (0.1 + 0.125)/2; tokens/s 16, 16, 20, 20 -> 18
    assert fig["output_tokens_per_j"] == pytest.approx(0.1125)
    assert fig["output_tokens_per_s"] == pytest.approx(18.0)
    assert fig["max_power_w"] == 320.0


def test_missing_or_idle_dominated_energy_is_none_never_zero():
    reps = [REPEATS[0], repeat(CALLS_B, 1.0, None)]
    fig, unc = cell_figures(reps, "gpu", idle_power_w=50.0)
    for k in ("output_tokens_per_j", "total_tokens_per_j", "j_per_output_token",
              "mean_power_w", "energy_j", "incremental_output_tokens_per_j"):
        assert fig[k] is None, k
    assert fig["output_tokens_per_s"] == pytest.approx(18.0)  # (20 + 16)/2: no energy needed
    assert unc["output_tokens_per_j_ci"] is None and unc["output_tokens_per_j_min"] is None
    assert unc["ci_level"] is None
    # idle 250 W: 160 - 200 < 0 J of work: no incremental figure (not a negative one)
    fig, _ = cell_figures(REPEATS, "gpu", idle_power_w=250.0)
    assert fig["incremental_output_tokens_per_j"] is None
    fig, _ = cell_figures(REPEATS, "gpu", idle_power_w=None)
    assert fig["incremental_output_tokens_per_j"] is None
    fig, _ = cell_figures([repeat(CALLS_C, 0.4, 0.0)], "gpu")
    assert fig["output_tokens_per_j"] is None and fig["mean_power_w"] == 0.0
    fig, _ = cell_figures(REPEATS, "cpu")  # another scope has no energy here
    assert fig["energy_j"] is None and fig["max_power_w"] is None


def test_ttft_and_subtraction_by_hand():
    # prefill-only window: 10 calls of one output token, 30 J -> 3 J per call
    prefill = {"generate_calls": 10, "energy": {"gpu": {"energy_j": 30.0}}}
    out = phases_of(REPEATS, prefill, "gpu", BATCH, INPUT_LEN, OUTPUT_LEN)
    # TTFT: 0.10, 0.12, 0.10, 0.08, 0.15 s -> median 0.10
    assert out["ttft_s"] == pytest.approx(0.10)
    assert out["decode_tokens_per_call"] == 6  # 2 x (4 - 1)
    sub = out["subtraction"]
    # per call: 160/2 = 80, 200/2 = 100, 64/1 = 64 J -> median 80; prefill 3 J per call
    assert sub["prefill_j_per_input_token"] == pytest.approx(3 / 16)
    assert sub["decode_j_per_output_token"] == pytest.approx((80 - 3) / 6)
    assert sub["reason"] is None and sub["prefill_window"] is prefill
    assert out["timeline"]["reason"] and "trace" in out["timeline"]["reason"]


def test_subtraction_without_what_it_needs_says_why():
    out = phases_of(REPEATS, None, "gpu", BATCH, INPUT_LEN, OUTPUT_LEN)
    assert "not measured" in out["subtraction"]["reason"]
    prefill = {"generate_calls": 10, "energy": {"gpu": {"energy_j": None}}}
    out = phases_of(REPEATS, prefill, "gpu", BATCH, INPUT_LEN, OUTPUT_LEN)
    assert "no energy" in out["subtraction"]["reason"]
    # one output token: no decode tokens, so no decode figure (not a division by zero)
    prefill = {"generate_calls": 4, "energy": {"gpu": {"energy_j": 8.0}}}
    out = phases_of(REPEATS, prefill, "gpu", BATCH, INPUT_LEN, 1)
    assert out["subtraction"]["decode_j_per_output_token"] is None
    assert out["subtraction"]["prefill_j_per_input_token"] == pytest.approx(2 / 16)


def power_trace():
    """300 W from each call's start to its first token, 200 W from there to its end."""
    t, p = [], []
    for s, f, e in CALLS_A + CALLS_B + CALLS_C:
        t += [s, f, f, e]
        p += [300.0, 300.0, 200.0, 200.0]
    return np.array(t, np.int64), np.array(p)


def test_timeline_by_hand():
    out = phases_of(REPEATS, None, "gpu", BATCH, INPUT_LEN, OUTPUT_LEN, trace=power_trace())
    tl = out["timeline"]
    # prefill: 300 W x (0.10 + 0.12 + 0.10 + 0.08 + 0.15 = 0.55 s) = 165 J over 5 calls x 16
    assert tl["prefill_j_per_input_token"] == pytest.approx(165 / 80)
    # decode: 200 W x (0.30 + 0.28 + 0.40 + 0.42 + 0.25 = 1.65 s) = 330 J over 5 calls x 6
    assert tl["decode_j_per_output_token"] == pytest.approx(330 / 30)
    assert tl["reason"] is None


def test_timeline_needs_a_trace_that_covers_the_calls():
    t, p = power_trace()
    out = phases_of(REPEATS, None, "gpu", BATCH, INPUT_LEN, OUTPUT_LEN, trace=(t[1:], p[1:]))
    assert "cover" in out["timeline"]["reason"]
    out = phases_of(REPEATS, None, "gpu", BATCH, INPUT_LEN, OUTPUT_LEN, trace=(t[:1], p[:1]))
    assert "too few" in out["timeline"]["reason"]


class TinyDense:
    """A model spec of hand-checkable size: 2 layers, d 64, 4 heads of 16, vocabulary
    1000, tied embeddings, 1,000,000 parameters."""

    def facts(self):
        return SimpleNamespace(num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                               num_key_value_heads=4, head_dim=16, vocab_size=1000,
                               intermediate_size=256, tie_word_embeddings=True,
                               model_type="llama", parameters=1_000_000)


def test_roofline_fraction_by_hand():
    h100 = SimpleNamespace(kind="cuda", name="NVIDIA H100 80GB HBM3", info={})
    # H100: 989e12 FLOP/s bf16, 3.35e12 B/s, 700 W. bf16: 2 bytes; weights 2e6 B;
    # K/V per token 2 x 2 layers x 4 heads x 16 x 2 B = 512 B. Batch 8, 512 in, 3 out.
    # Prefill per sequence: 512 x 2 x (1e6 - 64,000 lm head) + 2 x 64,000
    # + 4 x 2 layers x 64 x 512^2 / 2 = 1,025,700,864 FLOPs; x 8 = 8,205,606,912,
    # compute bound (8.3 us > 0.6 us to read the weights).
    # Decode steps at context 513 and 514 are memory bound (18.1 MFLOP is 18 ns):
    # 2e6 + 8 x 513 x 512 + 8 x 512 = 4,105,344 and 2e6 + 8 x 514 x 512 + 4096 = 4,109,440 B.
    t = 8_205_606_912 / 989e12 + 4_105_344 / 3.35e12 + 4_109_440 / 3.35e12
    ceiling = 8 * 3 / (700 * t)
    r = cell_roofline(h100, TinyDense(), "bf16", 8, 512, 3, 0.25 * ceiling)
    assert r["min_time_s_per_call"] == pytest.approx(t, rel=1e-12)
    assert r["ceiling_output_tokens_per_j"] == pytest.approx(ceiling, rel=1e-12)
    assert r["fraction"] == pytest.approx(0.25, rel=1e-12)
    assert r["tdp_w"] == 700 and r["reason"] is None
    # fp32 runs at half the 16-bit rate and moves 4-byte elements (K/V 1024 B a token)
    t32 = (8_205_606_912 / 494.5e12 + (4e6 + 8 * 513 * 1024 + 8 * 1024) / 3.35e12
           + (4e6 + 8 * 514 * 1024 + 8 * 1024) / 3.35e12)
    r32 = cell_roofline(h100, TinyDense(), "fp32", 8, 512, 3, None)
    assert r32["min_time_s_per_call"] == pytest.approx(t32, rel=1e-12)
    assert r32["fraction"] is None


def test_roofline_of_an_unknown_device_says_why():
    r = cell_roofline(SimpleNamespace(kind="cuda", name="Fake GPU 0", info={}), TinyDense(),
                      "bf16", 1, 4, 3, 0.1)
    assert r["fraction"] is None and r["ceiling_output_tokens_per_j"] is None
    assert "Fake GPU 0" in r["reason"]


def test_boundaries_of_energy_and_duration():
    # 0.5 J is still energy: 8 tokens / 0.5 J = 16 tokens/J, 0.5 J / 0.4 s = 1.25 W
    fig, _ = cell_figures([repeat(CALLS_C, 0.4, 0.5)], "gpu")
    assert fig["output_tokens_per_j"] == pytest.approx(16.0)
    assert fig["mean_power_w"] == pytest.approx(1.25)
    # a zero-length window has no rate and no mean power (not a division by zero)
    fig, _ = cell_figures([repeat(CALLS_C, 0.0, 64.0)], "gpu")
    assert fig["output_tokens_per_s"] is None and fig["mean_power_w"] is None
    assert fig["output_tokens_per_j"] == pytest.approx(0.125)
    # idle 320 W over 0.5 s is all of 160 J: nothing left for the work -> None;
    # idle 319 W leaves 0.5 J: 16 tokens / 0.5 J = 32 tokens/J
    rep = repeat(CALLS_A, 0.5, 160.0)
    assert cell_figures([rep], "gpu", 320.0)[0]["incremental_output_tokens_per_j"] is None
    assert cell_figures([rep], "gpu", 319.0)[0][
        "incremental_output_tokens_per_j"] == pytest.approx(32.0)


def test_timeline_with_two_samples_and_a_trace_ending_early():
    # two samples of 250 W spanning every call: 250 x 0.55 s prefill, 250 x 1.65 s decode
    t = np.array([0, int(2.6 * S)], np.int64)
    tl = phases_of(REPEATS, None, "gpu", BATCH, INPUT_LEN, OUTPUT_LEN,
                   trace=(t, np.array([250.0, 250.0])))["timeline"]
    assert tl["prefill_j_per_input_token"] == pytest.approx(250 * 0.55 / 80)
    assert tl["decode_j_per_output_token"] == pytest.approx(250 * 1.65 / 30)
    # a trace that ends between the last call's first token and its end does not cover it
    t2 = np.array([0, int(2.5 * S)], np.int64)
    tl = phases_of(REPEATS, None, "gpu", BATCH, INPUT_LEN, OUTPUT_LEN,
                   trace=(t2, np.array([250.0, 250.0])))["timeline"]
    assert "cover" in tl["reason"]


# -- the rest of results/figures.py, by hand -------------------------------------------

from bench.results import figures as F  # noqa: E402


def test_weakest_method_by_hand():
    assert F.weakest_method(["counter", "power_integration", "counter"]) == "power_integration"
    assert F.weakest_method(["counter", "estimate", "power_integration"]) == "estimate"
    assert F.weakest_method(["counter", None]) == "counter"
    assert F.weakest_method([None]) is None and F.weakest_method([]) is None


def test_node_tokens_per_j_by_hand():
    reps = [dict(r) for r in REPEATS]
    for r, node_j in zip(reps, (400.0, 250.0, 80.0), strict=True):
        r["energy"] = {**r["energy"], "node": {"energy_j": node_j, "method": "counter",
                                               "reason": None}}
    fig, _ = cell_figures(reps, "gpu")
    # 16/400 = 0.04, 16/250 = 0.064, 8/80 = 0.1 -> median 0.064
    assert fig["node_output_tokens_per_j"] == pytest.approx(0.064)
    reps[1]["energy"]["node"] = {"energy_j": None, "method": None, "reason": "stalled"}
    assert cell_figures(reps, "gpu")[0]["node_output_tokens_per_j"] is None
    reps[1]["energy"]["node"] = {"energy_j": 0.0, "method": "counter", "reason": None}
    assert cell_figures(reps, "gpu")[0]["node_output_tokens_per_j"] is None  # never /0
    assert cell_figures(REPEATS, "gpu")[0]["node_output_tokens_per_j"] is None


def test_edge_bound_rel_by_hand():
    reps = [dict(r) for r in REPEATS]
    for r, bound_j in zip(reps, (1.6, 1.0, 1.28), strict=True):
        (rd,) = r["readings"]
        r["readings"] = [{**rd, "stats": {**rd["stats"], "edge_bound_j": bound_j}}]
    _, unc = cell_figures(reps, "gpu")
    # 1.6/160 = 1%, 1/200 = 0.5%, 1.28/64 = 2% -> the largest, 2%
    assert unc["edge_bound_rel_max"] == pytest.approx(0.02)
    assert cell_figures(REPEATS, "gpu")[1]["edge_bound_rel_max"] is None  # no bound given


def test_sure_bound_rel_by_hand():
    reps = [dict(r) for r in REPEATS]
    for r, (low, high) in zip(reps, ((150.0, 163.0), (199.0, 230.0), (60.0, 66.0)),
                              strict=True):
        (rd,) = r["readings"]
        r["readings"] = [{**rd, "stats": {**rd["stats"], "energy_sure_low_j": low,
                                          "energy_sure_high_j": high}}]
    _, unc = cell_figures(reps, "gpu")
    # the farther end from each window's energy: 160 - 150 = 10 J of 160 (6.25%),
    # 230 - 200 = 30 J of 200 (15%), 64 - 60 = 4 J of 64 (6.25%) -> the largest, 15%
    assert unc["sure_bound_rel_max"] == pytest.approx(0.15)
    assert unc["edge_bound_rel_max"] is None  # the premise bound is another field
    # a window without a top (a reset inside it) leaves the cell without one
    reps[0]["readings"][0]["stats"]["energy_sure_high_j"] = None
    assert cell_figures(reps, "gpu")[1]["sure_bound_rel_max"] is None
    assert cell_figures(REPEATS, "gpu")[1]["sure_bound_rel_max"] is None  # none recorded


def test_idle_power_and_run_summary_by_hand():
    assert F.idle_power_w(30.0, 0.5) == pytest.approx(60.0)
    assert F.idle_power_w(None, 0.5) is None and F.idle_power_w(3.0, 0.0) is None
    cells = [{"status": "ok", "figures": {"output_tokens_per_j": 0.2}},
             {"status": "ok", "figures": {"output_tokens_per_j": 0.5}},
             {"status": "oom", "figures": None},
             {"status": "ok", "figures": {"output_tokens_per_j": None}}]
    assert F.run_summary(cells) == {"cells": 4, "ok": 3, "not_ok": 1,
                                    "max_output_tokens_per_j": 0.5}
    assert F.run_summary([])["max_output_tokens_per_j"] is None


def test_small_and_zero_energies_at_the_boundaries():
    # half a joule is energy like any other; zero is none (no division by it)
    small = repeat(CALLS_C, 0.4, 0.5)
    small["energy"]["node"] = {"energy_j": 0.5, "method": "counter", "reason": None}
    small["readings"][0]["stats"]["edge_bound_j"] = 0.01
    fig, unc = cell_figures([small], "gpu")
    assert fig["node_output_tokens_per_j"] == pytest.approx(8 / 0.5)
    assert unc["edge_bound_rel_max"] == pytest.approx(0.01 / 0.5)
    zero = repeat(CALLS_C, 0.4, 0.0)
    zero["readings"][0]["stats"]["edge_bound_j"] = 0.01
    assert cell_figures([zero], "gpu")[1]["edge_bound_rel_max"] is None


def test_interval_of_two_repeats_and_of_one():
    # 2 repeats: [min, max] = [0.08, 0.1] holds the median with probability 1 - 2/4 = 0.5
    _, unc = cell_figures(REPEATS[:2], "gpu")
    assert unc["output_tokens_per_j_ci"] == pytest.approx([0.08, 0.1])
    assert unc["ci_level"] == pytest.approx(0.5)
    # 1 repeat: no interval at all (a point says nothing of the spread)
    _, unc = cell_figures(REPEATS[:1], "gpu")
    assert unc["output_tokens_per_j_ci"] is None and unc["ci_level"] is None
    assert unc["output_tokens_per_j_min"] == unc["output_tokens_per_j_max"] == pytest.approx(0.1)
