"""Registry of reference architectures (config JSON) and how to build them with random weights.

Throughput and energy depend on the architecture, not on the weights, so models are
built from their configs with seeded random weights, as vLLM's dummy load format does.
Nothing is ever downloaded; real weights load only from a local path.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from bench.errors import BenchError

DTYPES = ("fp32", "bf16", "fp16")

# Config entries that count something: each must be a whole number, 1 or more.
SIZE_KEYS = ("vocab_size", "hidden_size", "intermediate_size", "moe_intermediate_size",
             "num_experts", "num_local_experts", "num_experts_per_tok", "num_hidden_layers",
             "num_attention_heads", "num_key_value_heads", "head_dim",
             "max_position_embeddings", "n_embd", "n_layer", "n_head", "n_positions",
             "n_inner")


def _check_config(origin: str, config: dict) -> None:
    """Refuse a config no model can be built from, in one line, before any work."""
    for k in SIZE_KEYS:
        v = config.get(k)
        if v is None:
            continue
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise BenchError(f"{origin}: config {k} = {v!r} must be a whole number, 1 or more")
    if "vocab_size" not in config:
        raise BenchError(f"{origin}: config needs vocab_size")


@dataclass(frozen=True)
class ModelSpec:
    """A reference architecture: a transformers config plus where its facts come from."""

    name: str
    model_type: str
    config: dict = field(hash=False)
    description: str = ""
    source: str = ""
    weights: str | None = None  # a local Hugging Face checkpoint folder; None: random

    @classmethod
    def from_dict(cls, d: dict, origin: str) -> ModelSpec:
        try:
            name, model_type, config = d["name"], d["model_type"], d["config"]
        except (KeyError, TypeError):
            raise BenchError(f"{origin}: a model file needs name, model_type and config") from None
        if not isinstance(config, dict):
            raise BenchError(f"{origin}: config must be an object")
        _check_config(origin, config)
        spec = cls(str(name), str(model_type), config, str(d.get("description", "")),
                   str(d.get("source", "")))
        spec.check()
        return spec

    def check(self) -> None:
        """Refuse an architecture transformers cannot build (shapes that do not divide).

        Raises:
            BenchError: with the model and the reason, in one line.
        """
        cfg = self.hf_config()
        heads = getattr(cfg, "num_attention_heads", None)
        kv = getattr(cfg, "num_key_value_heads", None) or heads
        hidden = getattr(cfg, "hidden_size", None)
        if heads and hidden and not getattr(cfg, "head_dim", None) and hidden % heads:
            raise BenchError(f"model {self.name}: hidden_size {hidden} is not a multiple of "
                             f"num_attention_heads {heads}")
        if heads and kv and heads % kv:
            raise BenchError(f"model {self.name}: num_attention_heads {heads} is not a "
                             f"multiple of num_key_value_heads {kv}")
        experts = getattr(cfg, "num_experts", 0) or getattr(cfg, "num_local_experts", 0) or 0
        per_tok = getattr(cfg, "num_experts_per_tok", 0) or 0
        if experts and per_tok > experts:
            raise BenchError(f"model {self.name}: num_experts_per_tok {per_tok} is over "
                             f"num_experts {experts}")

    @property
    def max_positions(self) -> int | None:
        """The longest sequence (prompt + output tokens) the architecture takes, or None."""
        cfg = self.hf_config()
        for k in ("n_positions", "max_position_embeddings"):
            v = getattr(cfg, k, None)
            if isinstance(v, int) and v > 0:
                return v
        return None

    def hf_config(self):
        """The transformers config object."""
        from transformers import AutoConfig

        try:
            return AutoConfig.for_model(self.model_type, **self.config)
        except Exception as exc:  # transformers raises many kinds for a bad config
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            why = lines[-1] if lines else exc.__class__.__name__
            raise BenchError(f"model {self.name}: bad config ({why})") from None

    def parameter_count(self) -> int:
        """Number of parameters (counted on the meta device: no memory is allocated)."""
        import torch
        from transformers import AutoModelForCausalLM

        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(self.hf_config())
        return sum(p.numel() for p in model.parameters())

    def to_dict(self) -> dict:
        return {"name": self.name, "model_type": self.model_type, "config": self.config,
                "description": self.description, "source": self.source}


def builtin_names() -> list[str]:
    """Names of the models that ship with the package."""
    files = resources.files("bench.models") / "configs"
    return sorted(p.name[:-5] for p in files.iterdir() if p.name.endswith(".json"))


def from_checkpoint(path: str) -> ModelSpec:
    """A local Hugging Face checkpoint folder (config.json + weights) as a model.

    Raises:
        BenchError: not a folder with a readable config.json.
    """
    p = Path(path)
    try:
        config = json.loads((p / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"{path} is not a checkpoint folder with a config.json "
                         f"({exc.__class__.__name__})") from None
    if not isinstance(config, dict) or "model_type" not in config:
        raise BenchError(f"{path}/config.json has no model_type")
    model_type = config["model_type"]
    cfg = {k: v for k, v in config.items()
           if k not in ("model_type", "architectures", "transformers_version", "dtype",
                        "torch_dtype")}
    _check_config(str(path), cfg)
    spec = ModelSpec(str(path), model_type, cfg, f"weights from {p.resolve()}",
                     "local checkpoint", weights=str(p))
    spec.check()
    return spec


def get(name_or_path: str) -> ModelSpec:
    """A built-in model by name, a model file (JSON) or a local checkpoint folder by path.

    Raises:
        BenchError: unknown name, unreadable or malformed file.
    """
    if Path(name_or_path).is_dir():
        return from_checkpoint(name_or_path)
    if name_or_path.endswith(".json") or "/" in name_or_path:
        path = Path(name_or_path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot read model file {path}: {exc}") from None
        return ModelSpec.from_dict(data, str(path))
    if name_or_path not in builtin_names():
        raise BenchError(
            f"unknown model {name_or_path!r}; known: {', '.join(builtin_names())}")
    res = resources.files("bench.models") / "configs" / f"{name_or_path}.json"
    return ModelSpec.from_dict(json.loads(res.read_text(encoding="utf-8")), name_or_path)


def describe(name: str, dtype: str, batches: Sequence[int], input_len: int,
             output_len: int) -> dict[str, Any]:
    """A model's facts for ``bench list``: parameters, FLOPs and bytes per token, memory.

    ``memory_bytes`` maps each batch size (as a string) to the memory a generate call of
    ``input_len`` + ``output_len`` tokens needs (weights, KV cache, activations).
    """
    from bench.models import arithmetic

    spec = get(name)
    a = arithmetic.of(spec, dtype)
    return {"name": name, "model_type": spec.model_type, "parameters": a.n_total,
            "active_parameters": a.n_active, "layers": a.layers,
            "decode_flops_per_token": a.decode_flops_per_token(0),
            "flops_per_context_token": a.flops_per_context_token,
            "weight_bytes": a.weight_bytes, "kv_bytes_per_token": a.kv_bytes_per_token,
            "memory_bytes": {str(b): a.memory_bytes(b, input_len, output_len)
                             for b in batches},
            "dtype": dtype, "input_len": input_len, "output_len": output_len,
            "description": spec.description}


def torch_dtype(name: str):
    """The torch dtype for ``fp32``, ``bf16`` or ``fp16``."""
    import torch

    table = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
    if name not in table:
        raise BenchError(f"unknown dtype {name!r}; use one of {', '.join(DTYPES)}")
    return table[name]


def build(spec: ModelSpec, dtype: str, device: str, seed: int = 0):
    """Build the model with seeded random weights, in eval mode, directly on ``device``.

    Allocating and initialising on the target device (not on the CPU, then copying)
    keeps an 8B model's build to seconds on a GPU and off the host's memory. Local
    weights load straight onto the device too (``device_map``): loading a 70B model on
    the CPU first would need 141 GB of host memory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if spec.weights:
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"  # a local path only: never a download
        try:
            model = AutoModelForCausalLM.from_pretrained(
                spec.weights, dtype=torch_dtype(dtype), local_files_only=True,
                device_map={"": device})
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot load weights from {spec.weights}: {exc}") from None
        return model.eval()
    torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(spec.hf_config(), dtype=torch_dtype(dtype))
    return model.eval()

