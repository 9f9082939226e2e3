"""The model registry: published parameter counts, arithmetic, local checkpoints."""

import json

import pytest

from bench import models
from bench.cli import main
from bench.models import arithmetic, facts

PUBLISHED_PARAMS = {  # from the models' cards
    "llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.6e9, "qwen3-8b": 8.19e9,
    "mistral-7b": 7.25e9, "qwen3-30b-a3b": 30.5e9, "gpt2": 124e6,
}


@pytest.mark.parametrize("name, params", PUBLISHED_PARAMS.items())
def test_parameter_counts_match_the_published_ones(name, params):
    assert models.get(name).parameter_count() == pytest.approx(params, rel=0.01)
    assert models.get(name).parameter_count_live() == pytest.approx(params, rel=0.01)


@pytest.mark.parametrize("name", models.builtin_names())
def test_stored_facts_are_what_transformers_resolves(name):
    """bench/models/facts.json (read without importing transformers) against the config
    transformers builds and the model counted on the meta device, attribute by attribute.
    A transformers upgrade that changes a default fails here: regenerate with
    `python scripts/model_facts.py`."""
    spec = models.get(name)
    stored = facts.of(spec)
    cfg = spec.hf_config()
    for k in facts.ATTRS:
        if hasattr(cfg, k):
            assert getattr(stored, k) == getattr(cfg, k), k
        else:
            with pytest.raises(AttributeError):
                getattr(stored, k)
    assert stored.parameters == spec.parameter_count_live()
    assert facts.key(spec.model_type, spec.config) in facts._stored()  # not resolved live


def test_facts_refuse_an_attribute_they_do_not_hold():
    f = models.get("tiny-llama").facts()
    with pytest.raises(LookupError, match="not among the stored facts"):
        getattr(f, "rope_theta", None)  # a default must not hide a name never stored


def test_a_model_file_is_resolved_live_and_a_builtin_never_imports_transformers(tmp_path):
    import subprocess
    import sys

    code = ("import sys; from bench import models; from bench.models import arithmetic; "
            "from bench.runner import check_models; "
            "s = models.get('llama-3.1-8b'); s.check(); arithmetic.of(s, 'bf16'); "
            "print(s.max_positions, 'transformers' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split()
    assert out == ["131072", "False", "False"]
    f = tmp_path / "m.json"
    base = json.loads((models.resources.files("bench.models") / "configs" /
                       "tiny-llama.json").read_text())
    base["config"]["num_hidden_layers"] = 3  # not a built-in config: resolved live
    f.write_text(json.dumps(base))
    spec = models.get(str(f))
    assert facts.key(spec.model_type, spec.config) not in facts._stored()
    live = spec.parameter_count()
    four = models.get("tiny-llama").parameter_count()
    # one decoder layer more: (4 -> 3 layers), the embedding, head and final norm the same
    assert live == spec.parameter_count_live() and live < four


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


def test_building_the_config_leaves_the_spec_as_it_was():
    """transformers adds rope_theta to a nested rope_scaling dict in place: the spec's
    config (recorded in every result document) must not change by being built."""
    spec = models.get("llama-3.1-8b")
    before = json.dumps(spec.config, sort_keys=True)
    spec.hf_config()
    assert json.dumps(spec.config, sort_keys=True) == before
