"""Compiled decode attends over the current context, bucketed, not the whole static cache.

Issue 11, item 3: with a static cache of input + output positions, every compiled decode
step attended over all of them. Shown on the CPU with dynamo's eager backend: a recording
backend notes, per compiled graph, the key length its attention reads, and which graph
ran at each step.
"""

from __future__ import annotations

import pytest
import torch

from bench import models
from bench.workload import HfWorkload, Shape, attention_bucket, decode_spans, graphs_compiled


class RecordingBackend:
    """A dynamo backend (eager) that records each graph's SDPA key lengths and each run."""

    def __init__(self) -> None:
        self.graphs: list[tuple[int, ...]] = []
        self.runs: list[tuple[int, ...]] = []

    def __deepcopy__(self, memo):  # generate deep-copies its config: keep this one
        return self

    def __call__(self, gm, example_inputs):
        lens = tuple(int(n.args[1].meta["example_value"].shape[-2]) for n in gm.graph.nodes
                     if n.op == "call_function"
                     and "scaled_dot_product_attention" in str(n.target))
        self.graphs.append(lens)

        def run(*args):
            self.runs.append(lens)
            return gm.forward(*args)

        return run


def compiled_tiny(bucket: int | None, backend=None) -> tuple[HfWorkload, list]:
    """tiny-llama on the compiled path (CPU, eager backend); also returns the token ids
    of every generate call."""
    wl = HfWorkload(models.get("tiny-llama"), "fp32", "cpu", compile=True)
    wl._compile_all_devices, wl._compile_backend = True, backend or "eager"
    wl.attention_bucket = bucket
    wl.prepare()
    outs: list = []
    real = wl.model.generate

    def generate(*a, **kw):
        out = real(*a, **kw)
        outs.append(out)
        return out

    wl.model.generate = generate
    return wl, outs


def eager_tokens(ids: torch.Tensor, output_len: int) -> torch.Tensor:
    wl = HfWorkload(models.get("tiny-llama"), "fp32", "cpu", compile=False)
    wl.prepare()
    with torch.inference_mode():
        out = wl.model.generate(ids, attention_mask=torch.ones_like(ids),
                                max_new_tokens=output_len, do_sample=False,
                                eos_token_id=None)
    wl.close()
    return out


def test_decode_spans_and_bucket_worked_by_hand():
    # 512 in, 256 out: decode steps attend 513 .. 767 keys; by 128 -> 640 then 768
    assert decode_spans(Shape(1, 512, 256), 128) == [640, 768]
    assert attention_bucket(Shape(1, 512, 256)) == 128
    # 128 in, 1024 out by 64: 192 .. 1152 would be 16 graphs; the bucket grows to 128
    # (keys 129 .. 1151 -> 256, 384, ..., 1152: 8 graphs)
    shape = Shape(1, 128, 1024)
    assert attention_bucket(shape, 64, max_buckets=8) == 128
    assert decode_spans(shape, 128) == [256, 384, 512, 640, 768, 896, 1024, 1152]
    # one output token: prefill only, no decode step
    assert decode_spans(Shape(1, 8, 1), 4) == []


def test_compiled_decode_attends_the_bucketed_context_with_one_graph_per_bucket():
    backend = RecordingBackend()
    wl, outs = compiled_tiny(4, backend)
    shape = Shape(2, 8, 10)
    try:
        before = graphs_compiled()
        wl.warm_up(shape, 2)
        assert graphs_compiled() - before == 3, backend.graphs
        # 4 layers, so 4 attention calls per graph; decode keys 9 .. 17 by 4, cache 18
        assert backend.graphs == [(12,) * 4, (16,) * 4, (18,) * 4]  # one per bucket
        backend.runs.clear()
        r = wl.call(shape)
        per_step = [lens[0] for lens in backend.runs]
        assert per_step == [12, 12, 12, 12, 16, 16, 16, 16, 18]  # 9 decode steps
        assert len(backend.graphs) == 3  # nothing compiled in the measured call
        assert r.output_tokens == 2 * 10 and r.input_tokens == 2 * 8
        assert outs[-1].shape == (2, 18)
        d = wl.describe()
        assert d["attention_span"] == "current context, bucketed by 4"
        assert d["attention_bucket"] == 4 and d["attention_buckets"] == [12, 16, 18]
        assert d["cache"] == "static" and d["cache_len"] == 18
        assert d["graphs_compiled_in_warm_up"] == 3 and d["graphs_compiled_in_windows"] == 0
        ids = wl._ids(shape)
    finally:
        wl.close()
    # token for token what eager generate (dynamic cache, no compile) makes
    assert torch.equal(outs[-1], eager_tokens(ids, 10))
    assert all(torch.equal(o, outs[-1]) for o in outs)


def test_the_full_static_cache_is_what_it_replaces():
    backend = RecordingBackend()
    wl, outs = compiled_tiny(None, backend)
    shape = Shape(2, 8, 10)
    try:
        wl.warm_up(shape, 1)
        backend.runs.clear()
        wl.call(shape)
        # every step read all 18 positions, with one graph
        assert [lens[0] for lens in backend.runs] == [18] * 9
        assert backend.graphs == [(18,) * 4]
        assert wl.describe()["attention_span"] == "full static cache"
        assert wl.describe()["attention_buckets"] is None
    finally:
        wl.close()
    assert torch.equal(outs[0], outs[1])


def test_prefill_attends_the_prompt_and_the_span_is_cleared_after_the_call():
    import bench.workload as w

    seen = []
    real = w._AttendCurrentContext._set

    def record(self, keys):
        seen.append(keys)
        real(self, keys)

    wl, _ = compiled_tiny(4)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(w._AttendCurrentContext, "_set", record)
            wl.call(Shape(1, 6, 5))
        # prefill 6 keys, then decode 7 .. 10 keys by 4 (cache 11), one after the last step
        assert seen == [6, 8, 8, 11, 11, 11]
        assert w._attended_keys is None
    finally:
        wl.close()


def test_a_new_cell_shape_compiles_its_own_buckets_in_warm_up():
    backend = RecordingBackend()
    wl, outs = compiled_tiny(8, backend)
    try:
        wl.warm_up(Shape(1, 8, 4), 1)  # keys 9 .. 11 -> 12 (cache 12)
        wl.call(Shape(1, 8, 4))
        wl.start_cell()
        wl.warm_up(Shape(1, 16, 12), 1)  # keys 17 .. 27 -> 24, 28
        n = len(backend.graphs)
        wl.call(Shape(1, 16, 12))
        d = wl.describe()
        assert backend.graphs == [(12,) * 4, (24,) * 4, (28,) * 4] and n == 3
        assert d["attention_buckets"] == [24, 28] and d["graphs_compiled_in_windows"] == 0
        assert d["graphs_compiled_in_warm_up"] == 2
    finally:
        wl.close()


def test_the_recompile_limit_covers_every_bucket():
    # past dynamo's limit the step would quietly run eagerly: 8 buckets need 8 graphs.
    # (Not monkeypatch: dynamo's config is a module whose attributes pytest's undo may
    # delete, and a deleted config reads as missing in every later test.)
    before = torch._dynamo.config.recompile_limit
    torch._dynamo.config.recompile_limit = 8
    wl, _ = compiled_tiny(128)
    try:
        wl.cache_for(Shape(1, 120, 900))  # decode keys 121 .. 1019, cache 1020
        assert wl._spans == [128, 256, 384, 512, 640, 768, 896, 1020]
        assert torch._dynamo.config.recompile_limit == 10
    finally:
        wl.close()
        torch._dynamo.config.recompile_limit = before
