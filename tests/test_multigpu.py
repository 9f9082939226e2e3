"""Multi-GPU cells (--gpus-per-cell N): groups of stand-in GPUs, energy summed with each
GPU's own kept, validate's checks of both, the placement passed to each engine."""

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from bench import models, runner
from bench.devices import Device, group
from bench.errors import BenchError
from bench.results import figures as F
from bench.results.validate import validate
from bench.sweep import Cell, SweepConfig, device_groups, plan

from .timing import counter_window_error_j, read_counter_trace

SMALL = ["--input-len", "8", "--output-len", "4", "--min-window-s", "0.5", "--repeats", "2",
         "--batch", "1", "--dtype", "fp32", "--no-phases", "--idle-s", "0.3", "--quiet"]


def gpu(i: int) -> Device:
    return Device("cuda", i, "NVIDIA H100 80GB HBM3", f"GPU-{i}", {"power_limit_w": 700.0})


def bench(*args, env):
    return subprocess.run([sys.executable, "-m", "bench", *args], capture_output=True,
                          text=True, timeout=600, env={**os.environ, **env})


def gpu_env(fake_nvml_dir, spec, tmp_path):
    return {"JOULEBENCH_MODEL_DEVICE": "cpu", "LD_LIBRARY_PATH": str(fake_nvml_dir),
            "FAKE_NVML_DEVICES": spec, "JOULEBENCH_LOCK_DIR": str(tmp_path / "locks")}


# -- grouping ---------------------------------------------------------------------------

def test_gpus_split_into_groups_in_index_order_and_the_rest_left_out():
    devs = [gpu(2), gpu(0), gpu(1)]
    groups, left = device_groups(SweepConfig(gpus_per_cell=2), devs)
    assert [g.label for g in groups] == ["gpu0+1"] and [d.label for d in left] == ["gpu2"]
    g = groups[0]
    assert g.uuid == "GPU-0,GPU-1"  # what CUDA_VISIBLE_DEVICES takes
    assert [m.uuid for m in g.members] == ["GPU-0", "GPU-1"]
    assert Device.from_dict(g.to_dict()).label == "gpu0+1"  # survives the journal
    cells = plan(SweepConfig(gpus_per_cell=2, batch_sizes=(1,)).resolved("cuda"), devs)
    assert [c.cell_id for c in cells] == ["gpu0+1/tiny-llama/bf16/b1/i32/o32"]
    four, left = device_groups(SweepConfig(gpus_per_cell=2), [gpu(i) for i in range(4)])
    assert [x.label for x in four] == ["gpu0+1", "gpu2+3"] and left == []
    one, left = device_groups(SweepConfig(), devs)
    assert one == devs and left == []


def test_too_few_gpus_and_leftovers_are_one_line():
    notes = []
    kept = runner.check_gpus_per_cell(SweepConfig(gpus_per_cell=2), [gpu(0), gpu(1), gpu(2)],
                                      notes.append)
    assert [d.index for d in kept] == [0, 1]
    assert notes == ["--gpus-per-cell 2: 3 GPUs make 1 group(s) of 2; GPU 2 left out"]
    with pytest.raises(BenchError, match="1 GPU\\(s\\) selected; a cell needs 2"):
        runner.check_gpus_per_cell(SweepConfig(gpus_per_cell=2), [gpu(0)])
    cpu = Device("cpu", None, "cpu")
    with pytest.raises(BenchError, match="0 GPU\\(s\\) selected"):
        runner.check_gpus_per_cell(SweepConfig(gpus_per_cell=4), [cpu])


def test_auto_picks_the_fewest_gpus_that_hold_the_weights(monkeypatch):
    monkeypatch.delenv("JOULEBENCH_MEMORY_CAP_BYTES", raising=False)

    def gpus(n, mem):
        return [Device("cuda", i, "G", f"GPU-{i}", {"memory_total_bytes": mem})
                for i in range(n)]

    def auto(models_, devs):
        notes = []
        cfg = runner.auto_gpus_per_cell(SweepConfig(models=models_, gpus_per_cell="auto"),
                                        devs, notes.append)
        assert len(notes) == 1
        return cfg.gpus_per_cell

    # llama-3.1-70b bf16: 70.55e9 parameters x 2 bytes = 141.1 GB of weights; a GPU's
    # usable memory is 90% of its total: 80 GB -> 72 GB, 40 GB -> 36 GB
    assert auto(("llama-3.1-70b",), gpus(4, 80e9)) == 2  # 72 < 141.1 <= 144
    assert auto(("llama-3.1-70b",), gpus(4, 40e9)) == 4  # 108 < 141.1 <= 144
    assert auto(("llama-3.1-70b",), gpus(3, 40e9)) == 3  # none fits: all, cells oom
    assert auto(("tiny-llama", "llama-3.1-8b"), gpus(4, 80e9)) == 1  # 16.1 GB fits one
    assert auto(("tiny-llama", "llama-3.1-70b"), gpus(2, 80e9)) == 2  # the largest decides
    assert auto(("llama-3.1-70b",), [Device("cpu", None, "cpu")]) == 1
    monkeypatch.setenv("JOULEBENCH_MEMORY_CAP_BYTES", "50e9")  # per GPU, as the worker
    assert auto(("llama-3.1-70b",), gpus(4, 80e9)) == 3  # 100 < 141.1 <= 150


def test_sweep_file_key_and_bad_values(tmp_path):
    f = tmp_path / "s.toml"
    f.write_text("gpus_per_cell = 2\n")
    assert SweepConfig.from_sources({}, str(f)).gpus_per_cell == 2
    assert SweepConfig.from_sources({"gpus_per_cell": 4}, str(f)).gpus_per_cell == 4
    assert SweepConfig(gpus_per_cell=2).to_dict()["gpus_per_cell"] == 2
    assert SweepConfig(gpus_per_cell="auto").gpus_per_cell == "auto"
    for bad in ("2", 0, True, "all"):
        with pytest.raises(BenchError):
            SweepConfig(gpus_per_cell=bad)  # type: ignore[arg-type]
    with pytest.raises(BenchError, match="endpoint"):
        SweepConfig(engine="endpoint", endpoint="http://x:1/v1", gpus_per_cell=2)


def test_cli_refuses_too_few_gpus_in_one_line(fake_nvml_dir, tmp_path):
    env = gpu_env(fake_nvml_dir, "base_w=300", tmp_path)
    r = bench("run", "--gpu", "all", "--gpus-per-cell", "2", *SMALL,
              "--out", str(tmp_path / "run"), env=env)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "a cell needs 2" in r.stderr
    assert not (tmp_path / "run").exists()
    r = bench("run", "--gpu", "0", "--gpus-per-cell", "0", *SMALL, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr


# -- figures from raw windows (known answers) -------------------------------------------

def _window(t0_s, dur_s, e0_j, e1_j, tokens, m1="counter"):
    return {"t0_ns": int(t0_s * 1e9), "t1_ns": int((t0_s + dur_s) * 1e9), "duration_s": dur_s,
            "generate_calls": 1, "output_tokens": tokens, "input_tokens": 8,
            "energy": {"gpu": {"energy_j": e0_j + e1_j, "method": F.weakest_method(
                ["counter", m1]), "reason": None}},
            "readings": [{"source": "nvml-gpu0", "device": "gpu0", "scope": "gpu",
                          "method": "counter", "energy_j": e0_j, "reason": None,
                          "stats": None},
                         {"source": "nvml-gpu1", "device": "gpu1", "scope": "gpu",
                          "method": m1, "energy_j": e1_j, "reason": None, "stats": None}]}


def test_group_cell_figures_are_the_sum_with_each_gpus_own_kept():
    g = group([gpu(0), gpu(1)])
    cell = Cell(g, "tiny-llama", "bf16", 4, 8, 4)
    # 300 W and 500 W for 2 s, then for 3 s (the second GPU power-integrated there)
    reps = [_window(10, 2.0, 600.0, 1000.0, 80), _window(20, 3.0, 900.0, 1500.0, 80,
                                                         "power_integration")]
    rec = F.cell_record(F.CellRaw(cell, "ok", repeats=reps, idle_power_w=100.0))
    assert rec["device"] == "gpu0+1" and rec["num_devices"] == 2
    assert rec["device_uuids"] == ["GPU-0", "GPU-1"]
    f = rec["figures"]
    assert f["energy_j"] == pytest.approx(1600.0 + 2400.0)
    assert f["mean_power_w"] == pytest.approx(800.0)  # per repeat 1600/2 and 2400/3
    # output tokens/J per repeat: 80/1600 and 80/2400; median of two = their mean
    assert f["output_tokens_per_j"] == pytest.approx((80 / 1600 + 80 / 2400) / 2)
    # tokens/s per repeat 40 and 26.67 -> median 33.33, per GPU half of it
    assert f["output_tokens_per_s_per_gpu"] == pytest.approx((40 + 80 / 3) / 2 / 2)
    assert f["per_device"] == [
        {"device": "gpu0", "index": 0, "uuid": "GPU-0", "energy_j": pytest.approx(1500.0),
         "mean_power_w": pytest.approx(300.0), "method": "counter"},
        {"device": "gpu1", "index": 1, "uuid": "GPU-1", "energy_j": pytest.approx(2500.0),
         "mean_power_w": pytest.approx(500.0), "method": "power_integration"}]
    assert rec["energy_method"] == "power_integration"  # the weakest of its GPUs'
    # the window's per-GPU split, from its readings
    assert F.window_per_device(reps[0]["readings"], "gpu") == [
        {"device": "gpu0", "index": 0, "energy_j": 600.0, "method": "counter"},
        {"device": "gpu1", "index": 1, "energy_j": 1000.0, "method": "counter"}]
    one = F.cell_record(F.CellRaw(Cell(gpu(0), "tiny-llama", "bf16", 4, 8, 4), "ok",
                                  repeats=[_window(0, 2.0, 600.0, 0.0, 80)]))
    assert one["num_devices"] == 1 and "per_device" not in one["figures"]
    assert F.window_per_device(reps[0]["readings"][:1], "gpu") is None


# -- engines: what each is given ---------------------------------------------------------

def test_hf_max_memory_and_device_map_over_two_gpus():
    assert models.max_memory_per_gpu([80e9, 40e9]) == {0: 72_000_000_000, 1: 36_000_000_000}
    spec = models.get("tiny-llama")
    with torch.device("meta"):
        m = __import__("transformers").AutoModelForCausalLM.from_config(
            spec.hf_config(), dtype=torch.float32)
    blocks = dict(models.placed_blocks(m))
    # tiny-llama: vocab 32000 x hidden 256 fp32 embeddings and head, 4 decoder layers
    assert blocks["model.embed_tokens"] == 32000 * 256 * 4 == blocks["lm_head"]
    assert [k for k in blocks if k.startswith("model.layers.")] == \
        [f"model.layers.{i}" for i in range(4)]
    dmap = models.device_map_over(m, {0: 10**9, 1: 10**9})
    assert set(dmap) == set(blocks) and set(dmap.values()) == {0, 1}
    assert dmap["model.embed_tokens"] == 0 and dmap["lm_head"] == 1
    layers = [dmap[f"model.layers.{i}"] for i in range(4)]
    assert layers == sorted(layers)  # in forward order, never back
    total = sum(blocks.values())
    with pytest.raises(torch.OutOfMemoryError):
        models.device_map_over(m, {0: total // 3, 1: total // 3})


def test_hf_workload_over_two_devices_is_eager_and_labelled(monkeypatch):
    from bench import workload

    wl = workload.make_workload("hf", models.get("tiny-llama"), "fp32", "cuda:0",
                                sweep=SweepConfig(gpus_per_cell=2))
    assert wl.num_devices == 2 and not wl.compiled
    free = {"cuda:0": 50e9, "cuda:1": 20e9}
    monkeypatch.setattr(workload, "gpu_free_bytes", lambda d: free[d])
    max_memory, device_of = wl.placement()
    assert max_memory == {0: 45_000_000_000, 1: 18_000_000_000} and device_of is None
    # on the CPU (stand-in GPUs) the model is really split over two devices, both the CPU
    cpu = workload.HfWorkload(models.get("tiny-llama"), "fp32", "cpu", num_devices=2)
    cpu.prepare()
    try:
        d = cpu.describe()
        assert d["mode"] == "eager (device_map over 2 GPUs, no compile)"
        assert d["num_devices"] == 2 and d["device_map"] == "auto"
        assert set(d["blocks_per_device"]) == {"0", "1"}
        r = cpu.call(workload.Shape(2, 8, 3))
        assert r.output_tokens == 6
    finally:
        cpu.close()


def test_vllm_tensor_parallel_size_is_the_group(tmp_path):
    from bench.engines import vllm

    cfg = SweepConfig(engine="vllm", gpus_per_cell=2, batch_sizes=(1, 8))
    s = vllm.settings_for(cfg, "cuda")
    assert s.tensor_parallel_size == 2
    assert vllm.settings_for(cfg, "cpu").tensor_parallel_size == 1
    wl = vllm.make_workload(models.get("tiny-llama"), "bf16", "cuda:0", sweep=cfg)
    kw = wl.llm_kwargs(tmp_path)
    assert kw["tensor_parallel_size"] == 2 and kw["max_num_seqs"] == 8
    assert kw["enable_prefix_caching"] is False and kw["load_format"] == "dummy"


# -- end to end on stand-in GPUs ---------------------------------------------------------

def _assert_group_energy(run_dir, cell, powers_w: dict[int, float]) -> None:
    """Each GPU's reading within its trace's bound of its constant power x duration, and
    the window's energy their sum: within the summed bounds of sum(powers) x duration."""
    for rep in cell["repeats"]:
        t0, t1 = rep["t0_ns"], rep["t1_ns"]
        rds = {r["device"]: r for r in rep["readings"] if r["scope"] == "gpu"}
        assert set(rds) == {f"gpu{i}" for i in powers_w}
        lo_sum = hi_sum = 0.0
        for i, p in powers_w.items():
            rd = rds[f"gpu{i}"]
            st = rd["stats"]
            if st["counter_edges"] == "fitted":
                lo, hi = rd["energy_j"] - st["energy_high_j"], rd["energy_j"] - st["energy_low_j"]
            else:
                t, e, lat = read_counter_trace(run_dir, i)
                lo, hi = counter_window_error_j(t, e, lat, t0, t1, p)
            err = rd["energy_j"] - p * (t1 - t0) * 1e-9
            assert lo - 1e-6 <= err <= hi + 1e-6, (i, err, lo, hi)
            lo_sum, hi_sum = lo_sum + lo, hi_sum + hi
        total = rep["energy"]["gpu"]["energy_j"]
        assert total == pytest.approx(sum(rds[f"gpu{i}"]["energy_j"] for i in powers_w))
        err = total - sum(powers_w.values()) * (t1 - t0) * 1e-9
        assert lo_sum - 1e-6 <= err <= hi_sum + 1e-6
        assert [d["energy_j"] for d in rep["energy"]["gpu"]["per_device"]] == \
            [rds[f"gpu{i}"]["energy_j"] for i in powers_w]


def _fails(run_dir, rule: str) -> bool:
    return any(c.rule == rule and not c.ok for c in validate(run_dir))


def _tampered(run_dir, tmp_path, name, change):
    out = tmp_path / name
    out.mkdir()
    doc = json.loads((run_dir / "result.json").read_text())
    change(doc)
    (out / "result.json").write_text(json.dumps(doc))
    shutil.copy(run_dir / "trace.parquet", out / "trace.parquet")  # links are refused
    return out


def test_two_gpu_cell_is_the_sum_of_300_and_500_w_and_validates(fake_nvml_dir, tmp_path):
    env = gpu_env(fake_nvml_dir, "base_w=300;base_w=500;base_w=100", tmp_path)
    out = tmp_path / "run"
    r = bench("run", "--gpu", "all", "--gpus-per-cell", "2", *SMALL, "--out", str(out),
              env=env)
    assert r.returncode == 0, r.stderr
    assert "--gpus-per-cell 2: 3 GPUs make 1 group(s) of 2; GPU 2 left out" in r.stderr
    doc = json.loads((out / "result.json").read_text())
    assert doc["config"]["gpus_per_cell"] == 2
    assert [d["index"] for d in doc["devices"]] == [0, 1]  # the left-out GPU is not locked
    (c,) = doc["cells"]
    assert c["status"] == "ok" and c["device"] == "gpu0+1" and c["num_devices"] == 2
    assert c["device_uuids"] == [d["uuid"] for d in doc["devices"]]
    _assert_group_energy(out, c, {0: 300.0, 1: 500.0})
    per = c["figures"]["per_device"]
    dur = c["figures"]["duration_s"]
    for d in per:  # each GPU's readings (checked against its power above), summed
        mine = [r["energy_j"] for rep in c["repeats"] for r in rep["readings"]
                if r["device"] == d["device"]]
        assert len(mine) == 2 and d["energy_j"] == pytest.approx(mine[0] + mine[1])
        assert d["mean_power_w"] == pytest.approx(d["energy_j"] / dur)
    assert c["figures"]["output_tokens_per_s_per_gpu"] == pytest.approx(
        c["figures"]["output_tokens_per_s"] / 2)
    (idle,) = doc["idle"]
    # the idle baseline is the group's sum (its edges are not bounded here: an idle
    # window has no work around its edges, and a late sampler on a busy machine shows)
    assert idle["device"] == "gpu0+1"
    assert [x["device"] for x in idle["per_device"]] == ["gpu0", "gpu1"]
    assert idle["energy_j"] == pytest.approx(sum(x["energy_j"] for x in idle["per_device"]))
    assert idle["power_w"] == pytest.approx(idle["energy_j"] / idle["duration_s"])
    assert c["idle_power_w"] == idle["power_w"]
    assert c["engine"]["num_devices"] == 2 and not c["engine"]["compiled"]
    assert all(ch.ok for ch in validate(out)), [ch.line() for ch in validate(out)]

    def per_gpu_reading(d):
        d["cells"][0]["repeats"][0]["readings"][0]["energy_j"] *= 1.1

    def per_gpu_split(d):
        d["cells"][0]["repeats"][0]["energy"]["gpu"]["per_device"][1]["energy_j"] *= 1.1

    def the_sum(d):
        d["cells"][0]["repeats"][0]["energy"]["gpu"]["energy_j"] *= 1.1

    def the_per_gpu_figure(d):
        d["cells"][0]["figures"]["per_device"][0]["energy_j"] *= 1.1

    def the_group(d):
        d["cells"][0]["num_devices"] = 1

    # the journal's configuration plans the same group cells: a resume finds none left
    from bench.rundir import open_journal

    assert runner.pending(open_journal(out)) == []
    same = _tampered(out, tmp_path, "same", lambda d: None)  # the copy itself passes
    assert all(ch.ok for ch in validate(same)), [ch.line() for ch in validate(same)]
    for name, change, rules in (("reading", per_gpu_reading, ("trace", "energy")),
                                ("split", per_gpu_split, ("energy",)),
                                ("sum", the_sum, ("energy", "figures")),
                                ("figure", the_per_gpu_figure, ("figures",)),
                                ("group", the_group, ("figures",))):
        bad = _tampered(out, tmp_path, name, change)
        for rule in rules:
            assert _fails(bad, rule), (name, rule)
    dropped = _tampered(out, tmp_path, "dropped", lambda d: d["cells"][0].pop("num_devices"))
    assert _fails(dropped, "figures")  # a group's cell cannot pass as a one-GPU cell


def test_four_gpus_make_two_groups_each_with_its_own_sum(fake_nvml_dir, tmp_path):
    env = gpu_env(fake_nvml_dir, "base_w=300;base_w=500;base_w=100;base_w=200", tmp_path)
    out = tmp_path / "run"
    r = bench("run", "--gpu", "all", "--gpus-per-cell", "2", *SMALL, "--out", str(out),
              env=env)
    assert r.returncode == 0, r.stderr
    assert "left out" not in r.stderr
    doc = json.loads((out / "result.json").read_text())
    by = {c["device"]: c for c in doc["cells"]}
    assert set(by) == {"gpu0+1", "gpu2+3"}
    _assert_group_energy(out, by["gpu0+1"], {0: 300.0, 1: 500.0})
    _assert_group_energy(out, by["gpu2+3"], {2: 100.0, 3: 200.0})
    assert by["gpu0+1"]["pid"] != by["gpu2+3"]["pid"]  # one worker per group
    assert all(ch.ok for ch in validate(out)), [ch.line() for ch in validate(out)]
    # the table: one row per cell, the group's size and the engine as columns
    from bench.results.table import rows_from_document

    rows = {r["device"]: r for r in rows_from_document(copy.deepcopy(doc))}
    assert rows["gpu2+3"]["num_devices"] == 2 and rows["gpu2+3"]["engine"] == "hf"
    assert rows["gpu2+3"]["output_tokens_per_s_per_gpu"] == pytest.approx(
        rows["gpu2+3"]["output_tokens_per_s"] / 2)


# -- endpoint mode: the client's load block is built by cell_record ---------------------

def test_endpoint_load_block_is_derived_in_cell_record():
    cell = Cell(gpu(0), "m", "bf16", 8, 16, 8, "endpoint")
    reps = [_window(10, 2.0, 600.0, 1000.0, 64), _window(20, 2.0, 600.0, 1000.0, 64)]
    reps[0]["load"] = {"output_tokens": 64, "client": {"client_saturated": False}}
    reps[1]["load"] = {"output_tokens": 64, "client": {"client_saturated": True}}
    span = {"output_tokens": 150, "request_errors": 0, "client_saturated": False}
    rec = F.cell_record(F.CellRaw(cell, "ok", repeats=reps, load=span))
    # saturated in the second window: the cell says so, whatever the span block held
    assert rec["load"] == {"output_tokens": 150, "request_errors": 0,
                           "client_saturated": True}
    reps[1]["load"]["client"]["client_saturated"] = False
    assert F.cell_record(F.CellRaw(cell, "ok", repeats=reps, load=span))["load"][
        "client_saturated"] is False
    assert "load" not in F.cell_record(F.CellRaw(cell, "ok", repeats=reps))


def test_a_groups_window_edges_synchronise_every_gpu(monkeypatch):
    from bench import worker

    seen = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda d=None: seen.append(d))
    g = group([gpu(2), gpu(3)])
    g.info["torch_device"] = "cuda:0"  # as the worker sees its group: cuda:0 and cuda:1
    sync = worker._sync_for(g)
    assert sync is not None
    sync()
    assert seen == ["cuda:0", "cuda:1"]
    one = Device("cuda", 2, "G", "GPU-2", {"torch_device": "cuda:0"})
    sync = worker._sync_for(one)
    assert sync is not None
    seen.clear()
    sync()
    assert seen == ["cuda:0"]


def test_a_one_gpu_document_from_before_multi_gpu_cells_still_validates(fake_nvml_dir,
                                                                       tmp_path):
    env = gpu_env(fake_nvml_dir, "base_w=300", tmp_path)
    out = tmp_path / "run"
    r = bench("run", "--gpu", "0", *SMALL, "--out", str(out), env=env)
    assert r.returncode == 0, r.stderr
    doc = json.loads((out / "result.json").read_text())
    (c,) = doc["cells"]
    assert c["num_devices"] == 1 and c["figures"]["output_tokens_per_s_per_gpu"] == \
        pytest.approx(c["figures"]["output_tokens_per_s"])
    assert all(ch.ok for ch in validate(out)), [ch.line() for ch in validate(out)]

    def older(d):  # as main wrote it: no group fields
        cell = d["cells"][0]
        for k in ("num_devices", "device_uuids"):
            cell.pop(k)
        cell["figures"].pop("output_tokens_per_s_per_gpu")
        d["config"].pop("gpus_per_cell")

    assert all(ch.ok for ch in validate(_tampered(out, tmp_path, "older", older)))

    def forged(d):  # a per-GPU figure that does not recompute still fails
        d["cells"][0]["figures"]["output_tokens_per_s_per_gpu"] *= 2

    assert _fails(_tampered(out, tmp_path, "forged", forged), "figures")
