"""The GPU path's memory, cache, attention and compile handling, shown on the CPU.

Issue 11: each test here reproduces one way the GPU path broke on an H100/H200 node, with
the model on the CPU and torch monkeypatched where only a GPU would show it.
"""

from __future__ import annotations

import json
import weakref

import pytest
import torch

from bench import models, runner, worker
from bench.devices import Device
from bench.models import arithmetic
from bench.sweep import SweepConfig
from bench.workload import HfWorkload, Shape, packed_gqa_sdpa

TINY = dict(input_lens=(8,), output_lens=(4,), min_window_s=0.05, repeats=1, phases=False,
            dtype="fp32")


def big_model_file(tmp_path, layers=16):
    """tiny-llama with more layers: a model whose weights are larger than tiny-llama's."""
    base = models.get("tiny-llama")
    doc = {"name": "big-llama", "model_type": "llama",
           "config": {**base.config, "num_hidden_layers": layers}}
    path = tmp_path / "big-llama.json"
    path.write_text(json.dumps(doc))
    return str(path)


def cells_by_model(outcome):
    out: dict[str, list] = {}
    for c in outcome.run.cells:
        name = c["model"].rsplit("/", 1)[-1].removesuffix(".json")  # a model file's path
        out.setdefault(name, []).append((c["batch_size"], c["status"], c["error"]))
    return out


# 1. A model whose build runs out of memory must not end the device's sweep.

def test_a_model_whose_build_runs_out_of_memory_is_oom_and_the_sweep_goes_on(
        tmp_path, monkeypatch):
    big = big_model_file(tmp_path)
    real = models.build

    def build(spec, *a, **kw):
        if spec.name == "big-llama":  # as a capture or allocator error wraps it on a GPU
            try:
                raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 140 GiB")
            except torch.OutOfMemoryError as exc:
                raise RuntimeError("model construction failed") from exc
        return real(spec, *a, **kw)

    monkeypatch.setattr(models, "build", build)
    cfg = SweepConfig(models=(big, "tiny-llama"), batch_sizes=(1, 2), **TINY)
    outcome = runner.run(cfg, "none", tmp_path / "run")
    got = cells_by_model(outcome)
    assert [s for _, s, _ in got["big-llama"]] == ["oom", "oom"]
    assert all("building the model" in e for _, _, e in got["big-llama"])
    assert got["tiny-llama"] == [(1, "ok", None), (2, "ok", None)]


def test_a_model_too_big_for_the_memory_is_never_built(tmp_path, monkeypatch):
    big = big_model_file(tmp_path)
    tiny_w = arithmetic.of(models.get("tiny-llama"), "fp32")
    big_w = arithmetic.of(models.get(big), "fp32").weight_bytes
    cap = tiny_w.memory_bytes(2, 8, 4) * 1.01
    assert cap < big_w  # worked out: the big model's weights alone exceed the cap
    monkeypatch.setenv("JOULEBENCH_MEMORY_CAP_BYTES", str(cap))
    built = []
    real = models.build
    monkeypatch.setattr(models, "build", lambda spec, *a, **kw: (built.append(spec.name),
                                                                 real(spec, *a, **kw))[1])
    cfg = SweepConfig(models=(big, "tiny-llama"), batch_sizes=(1, 2), **TINY)
    got = cells_by_model(runner.run(cfg, "none", tmp_path / "run"))
    assert built == ["tiny-llama"]
    assert [s for _, s, _ in got["big-llama"]] == ["oom", "oom"]
    assert all("fit check" in e and f"{big_w / 1e9:.3g} GB" in e
               for _, _, e in got["big-llama"])
    assert [s for _, s, _ in got["tiny-llama"]] == ["ok", "ok"]


# 2. The previous model must be gone before the next is built.

def test_the_previous_model_is_freed_before_the_next_build(tmp_path, monkeypatch):
    big = big_model_file(tmp_path, layers=2)
    real = models.build
    previous: list[weakref.ref] = []
    alive_at_build: list[bool] = []

    def build(spec, *a, **kw):
        alive_at_build.append(any(r() is not None for r in previous))
        model = real(spec, *a, **kw)
        # transformers' compiled call refers back to its model (a reference cycle), so
        # dropping the last reference does not free it: only a collection does
        model._cycle = [model]
        previous.append(weakref.ref(model))
        return model

    monkeypatch.setattr(models, "build", build)
    cfg = SweepConfig(models=("tiny-llama", big), batch_sizes=(1,), **TINY)
    runner.run(cfg, "none", tmp_path / "run")
    assert alive_at_build == [False, False]


# 6. Out-of-memory detection, the memory pre-check, recovery and compile fallback.

def test_out_of_memory_is_found_along_the_cause_chain():
    try:
        try:
            raise torch.OutOfMemoryError("CUDA out of memory")
        except torch.OutOfMemoryError as exc:
            raise RuntimeError("CUDA graph capture failed") from exc
    except RuntimeError as wrapped:
        assert worker._is_oom(wrapped)
    assert not worker._is_oom(RuntimeError("shape mismatch"))


def test_available_memory_counts_what_pytorch_holds_in_its_cache(monkeypatch):
    monkeypatch.delenv("JOULEBENCH_MEMORY_CAP_BYTES", raising=False)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (10e9, 80e9))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 30e9)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 18e9)
    dev = Device("cuda", 0, "NVIDIA H100 80GB HBM3", "GPU-x", {"torch_device": "cuda:0"})
    # free 10 GB + cached but unused 30 - 18 = 12 GB
    assert worker.memory_cap_bytes(dev) == pytest.approx(22e9)


def test_after_an_oom_the_model_and_compiled_state_are_rebuilt(tmp_path, monkeypatch):
    events: list[str] = []
    real_call, real_prepare, real_close = HfWorkload.call, HfWorkload.prepare, HfWorkload.close

    def call(self, shape):
        if shape.batch_size == 2 and shape.input_len == 8:
            try:
                raise torch.OutOfMemoryError("CUDA out of memory")
            except torch.OutOfMemoryError as exc:
                raise RuntimeError("cudagraph trees: capture failed") from exc
        return real_call(self, shape)

    monkeypatch.setattr(HfWorkload, "call", call)
    monkeypatch.setattr(HfWorkload, "prepare",
                        lambda self: (events.append("build"), real_prepare(self))[1])
    monkeypatch.setattr(HfWorkload, "close",
                        lambda self: (events.append("close"), real_close(self))[1])
    monkeypatch.setattr(worker, "_free_memory", lambda dev: events.append("free"))
    cfg = SweepConfig(models=("tiny-llama",), batch_sizes=(1, 2), input_lens=(8, 12),
                      output_lens=(4,), min_window_s=0.05, repeats=1, phases=False,
                      dtype="fp32")
    outcome = runner.run(cfg, "none", tmp_path / "run")
    status = [(c["input_len"], c["batch_size"], c["status"]) for c in outcome.run.cells]
    assert status == [(8, 1, "ok"), (8, 2, "oom"), (12, 1, "ok"), (12, 2, "ok")]
    # built, out of memory (closed and freed), built again from nothing
    runs = [e for i, e in enumerate(events) if i == 0 or e != events[i - 1]]
    assert runs[:5] == ["free", "build", "close", "free", "build"]


def test_a_compile_failure_falls_back_to_eager_and_says_so():
    def no_compiler(gm, example_inputs):
        raise RuntimeError("Failed to find C compiler. Please specify via CC")

    wl = HfWorkload(models.get("tiny-llama"), "fp32", "cpu", compile=True)
    wl._compile_all_devices, wl._compile_backend = True, no_compiler  # type: ignore
    wl.prepare()
    shape = Shape(1, 8, 3)
    wl.warm_up(shape, 1)
    r = wl.call(shape)
    assert r.output_tokens == 3 and r.input_tokens == 8
    d = wl.describe()
    assert d["compiled"] is False and d["mode"] == "eager (compile failed)"
    assert "C compiler" in d["compile_error"] and d["cache"] == "dynamic"
    wl.close()


# 3, 4, 5. Decode: packed GQA, the cache exactly each cell's length, one cache per group.

def _reference_attention(q, k, v, mask, scale):
    """GQA attention written out: every query head against its KV head (no SDPA)."""
    n_rep = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(n_rep, dim=1)
    v = v.repeat_interleave(n_rep, dim=1)
    w = (q @ k.transpose(-1, -2)) * scale
    w = w.masked_fill(~mask, float("-inf")).softmax(-1)
    return (w @ v).transpose(1, 2)


class _Attn(torch.nn.Module):
    num_key_value_groups = 4
    is_causal = True


def test_packed_gqa_decode_matches_the_written_out_attention():
    g = torch.Generator().manual_seed(0)
    b, h_kv, n_rep, length, d = 3, 2, 4, 11, 16
    q = torch.randn(b, h_kv * n_rep, 1, d, generator=g)
    k = torch.randn(b, h_kv, length, d, generator=g)
    v = torch.randn(b, h_kv, length, d, generator=g)
    mask = torch.zeros(b, 1, 1, length, dtype=torch.bool)
    mask[..., :7] = True  # a static cache: 7 positions filled, the rest masked
    out, _ = packed_gqa_sdpa(_Attn(), q, k, v, mask, scaling=d ** -0.5)
    assert out.shape == (b, 1, h_kv * n_rep, d)
    torch.testing.assert_close(out, _reference_attention(q, k, v, mask, d ** -0.5))


def test_packed_gqa_decode_never_expands_kv_under_compile(monkeypatch):
    import transformers.integrations.sdpa_attention as sa

    expanded = []
    real = sa.repeat_kv
    monkeypatch.setattr(sa, "repeat_kv", lambda x, n: (expanded.append(n), real(x, n))[1])
    b, h_kv, n_rep, length, d = 2, 2, 4, 9, 8
    q = torch.randn(b, h_kv * n_rep, 1, d)
    k, v = torch.randn(b, h_kv, length, d), torch.randn(b, h_kv, length, d)
    mask = torch.ones(b, 1, 1, length, dtype=torch.bool)
    mod = _Attn()

    def stock(q, k, v, m):
        return sa.sdpa_attention_forward(mod, q, k, v, m)[0]

    def ours(q, k, v, m):
        return packed_gqa_sdpa(mod, q, k, v, m)[0]

    torch._dynamo.reset()
    stock_out = torch.compile(stock, backend="eager", fullgraph=True)(q, k, v, mask)
    assert expanded == [n_rep, n_rep]  # the breakage: K and V copied to every query head
    expanded.clear()
    ours_out = torch.compile(ours, backend="eager", fullgraph=True)(q, k, v, mask)
    assert expanded == []
    torch.testing.assert_close(ours_out, stock_out)
    torch._dynamo.reset()


@pytest.fixture
def compiled_tiny(monkeypatch):
    """tiny-llama with the GPU's compiled path, on the CPU (dynamo's eager backend)."""
    wl = HfWorkload(models.get("tiny-llama"), "fp32", "cpu", compile=True)
    wl._compile_all_devices, wl._compile_backend = True, "eager"
    wl.prepare()
    caches = []
    real = wl.model.generate

    def generate(*a, **kw):
        caches.append(kw.get("cache"))
        return real(*a, **kw)

    wl.model.generate = generate
    yield wl, caches
    wl.close()


def test_each_cell_gets_its_own_cache_length_and_one_cache_per_group(compiled_tiny):
    wl, caches = compiled_tiny
    long_, short = Shape(1, 8, 8), Shape(1, 8, 2)
    wl.warm_up(long_, 1)
    wl.call(long_)
    assert wl.describe()["cache_len"] == 16
    wl.start_cell()  # as the worker does before each cell
    wl.warm_up(short, 1)
    wl.call(short)
    wl.warm_up(Shape(1, 8, 1), 1)  # the cell's prefill-only calls: still the cell's record
    d = wl.describe()
    # the shorter cell runs with its own 8 + 2, not the 16 the longer cell left behind
    assert d["cache_len"] == 10 and d["compiled"] and d["cache"] == "static"
    assert d["attention"] == "joulebench_sdpa"
    assert [c.layers[0].max_cache_len for c in caches] == [16, 16, 10, 10, 9]
    assert caches[0] is caches[1] and caches[2] is caches[3]  # one cache per group
    assert not hasattr(wl.model, "_previous_max_cache_length")


def test_moe_decode_keeps_grouped_mm(monkeypatch):
    spec = models.ModelSpec("tiny-moe", "qwen3_moe", {
        "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
        "moe_intermediate_size": 32, "num_experts": 8, "num_experts_per_tok": 2,
        "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2,
        "head_dim": 16, "max_position_embeddings": 64})
    wl = HfWorkload(spec, "fp32", "cpu", compile=True)
    wl._compile_all_devices, wl._compile_backend = True, "eager"
    wl.prepare()
    model = wl.model
    model.set_experts_implementation("grouped_mm")
    # generate switches grouped_mm to batched_mm on any device but the CPU
    monkeypatch.setattr(type(model), "device", property(lambda self: torch.device("cuda")))
    with model._optimize_model_for_decode():
        during = model.get_experts_implementation()[""]
    assert during == "grouped_mm"
    assert wl.describe()["experts"] == "grouped_mm"
    wl.close()


# 8. Contention: NVML's PIDs live in the host's namespace.

def test_contention_counts_processes_not_pids(monkeypatch):
    from bench.devices import nvml

    dev = Device("cuda", 0, "NVIDIA H200", "GPU-x", {"torch_device": "cuda:0"})
    monkeypatch.setattr(worker, "_holds_cuda_context", lambda d: True)
    # in a container, NVML reports this worker under the host's PID 812345
    monkeypatch.setattr(nvml, "compute_pids", lambda i: [812345])
    assert worker.other_processes(dev, {17}) == []
    monkeypatch.setattr(nvml, "compute_pids", lambda i: [812345, 812399])
    assert len(worker.other_processes(dev, {17}) or []) == 1
    monkeypatch.setattr(worker, "_holds_cuda_context", lambda d: False)
    assert worker.other_processes(dev, {17}) == [812345, 812399]


# 8. The host's RAPL counters are not counted once per parallel GPU session.

def test_parallel_gpu_sessions_do_not_each_count_the_hosts_rapl(monkeypatch):
    from bench.devices import rapl

    class Pkg:
        scope, name, method, description = "cpu", "rapl-pkg", "counter", "RAPL package"

    monkeypatch.setattr(rapl, "sources", lambda: ([Pkg()], None))
    dev = Device("cpu", None, "CPU")
    cfg = SweepConfig()
    alone, _ = worker.energy_sources(dev, cfg, parallel_gpus=1)
    assert any(isinstance(s, Pkg) for s in alone)
    shared, missing = worker.energy_sources(dev, cfg, parallel_gpus=4)
    assert not any(isinstance(s, Pkg) for s in shared)
    (cpu,) = [m for m in missing if m["scope"] == "cpu"]
    assert "shared by 4 GPU sessions" in cpu["reason"]


def test_the_last_cells_cache_is_released_before_the_next_memory_check(compiled_tiny,
                                                                        monkeypatch):
    wl, _ = compiled_tiny
    wl.warm_up(Shape(2, 8, 4), 1)
    assert wl._cache is not None
    seen = []
    monkeypatch.setattr(worker, "memory_cap_bytes", lambda dev: seen.append(wl._cache))
    cell = runner.Cell(Device("cpu", None, "CPU"), "tiny-llama", "fp32", 4, 8, 4)
    monkeypatch.setattr(worker.cells, "measure_with_warmup", lambda *a, **k: ([], None, {}))
    worker._run_one(cell, wl, models.get("tiny-llama"), None, SweepConfig(), {}, None, None)
    assert seen == [None]


def test_local_weights_load_straight_onto_the_device(tmp_path, monkeypatch):
    import transformers

    (tmp_path / "config.json").write_text(json.dumps(
        {"model_type": "llama", **models.get("tiny-llama").config}))
    spec = models.from_checkpoint(str(tmp_path))
    seen = {}

    class Loaded:
        def eval(self):
            return self

        def to(self, *a, **kw):  # a copy after loading on the CPU: what must not happen
            seen["copied"] = True
            return self

    def from_pretrained(path, **kw):
        seen.update(kw)
        return Loaded()

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    models.build(spec, "bf16", "cuda:0")
    assert seen["device_map"] == {"": "cuda:0"} and "copied" not in seen
