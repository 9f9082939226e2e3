"""The model registry: published parameter counts, arithmetic, local checkpoints."""

import json

import pytest

from bench import models
from bench.cli import main
from bench.models import arithmetic

PUBLISHED_PARAMS = {  # from the models' cards
    "llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.6e9, "qwen3-8b": 8.19e9,
    "mistral-7b": 7.25e9, "qwen3-30b-a3b": 30.5e9, "gpt2": 124e6,
}


@pytest.mark.parametrize("name, params", PUBLISHED_PARAMS.items())
def test_parameter_counts_match_the_published_ones(name, params):
    assert models.get(name).parameter_count() == pytest.approx(params, rel=0.01)


def test_arithmetic_against_the_notes():
    a = arithmetic.of(models.get("llama-3.1-8b"), "bf16")
    # notes/inference.md: Llama-8B decode = 15.0 GFLOP + 0.52 MFLOP per context token
    assert a.decode_flops_per_token(0) == pytest.approx(15.0e9, rel=0.01)
    assert a.decode_flops_per_token(1) - a.decode_flops_per_token(0) == pytest.approx(0.52e6,
                                                                                      rel=0.01)
    assert a.kv_bytes_per_token == 2 * 32 * 8 * 128 * 2
    moe = arithmetic.of(models.get("qwen3-30b-a3b"), "bf16")
    assert moe.n_active == pytest.approx(3.3e9, rel=0.03)
    # batch 64 touches nearly all 128 experts: nearly all 61 GB are read per step
    assert moe.weight_bytes_read(64) > 0.95 * moe.weight_bytes
    assert moe.weight_bytes_read(1) < 0.15 * moe.weight_bytes


def test_local_checkpoint_is_loaded_not_random(tmp_path, capsys):
    import torch

    spec = models.get("tiny-llama")
    ref = models.build(spec, "fp32", "cpu", seed=123)
    ref.save_pretrained(tmp_path / "ckpt")
    loaded = models.build(models.get(str(tmp_path / "ckpt")), "fp32", "cpu", seed=0)
    w_ref = dict(ref.named_parameters())["model.layers.0.mlp.up_proj.weight"]
    w = dict(loaded.named_parameters())["model.layers.0.mlp.up_proj.weight"]
    assert torch.equal(w_ref, w)
    out = tmp_path / "run"
    assert main(["run", "--weights", str(tmp_path / "ckpt"), "--gpu", "none", "--batch", "1",
                 "--input-len", "8", "--output-len", "4", "--min-window-s", "0.2",
                 "--repeats", "2", "--quiet", "--no-phases", "--out", str(out)]) == 0
    doc = json.loads((out / "result.json").read_text())
    assert doc["cells"][0]["status"] == "ok"
    assert doc["cells"][0]["model"] == str(tmp_path / "ckpt")
    capsys.readouterr()
    assert main(["run", "--weights", str(tmp_path), "--gpu", "none"]) == 2
    assert "config.json" in capsys.readouterr().err
