"""Registry of reference architectures (config JSON) and how to build them with random weights.

Throughput and energy depend on the architecture, not on the weights, so models are
built from their configs with seeded random weights, as vLLM's dummy load format does.
Nothing is ever downloaded; real weights load only from a local path.
"""

from __future__ import annotations

import copy
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
        cfg = self.facts()
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
        cfg = self.facts()
        for k in ("n_positions", "max_position_embeddings"):
            v = getattr(cfg, k, None)
            if isinstance(v, int) and v > 0:
                return v
        return None

    def facts(self):
        """The config attributes checks and arithmetic read, and the parameter count,
        without importing transformers for a built-in model (:mod:`bench.models.facts`)."""
        from bench.models import facts

        return facts.of(self)

    def hf_config(self):
        """The transformers config object."""
        from transformers import AutoConfig

        try:
            # a deep copy: transformers edits nested dicts (rope_scaling) in place
            return AutoConfig.for_model(self.model_type, **copy.deepcopy(self.config))
        except Exception as exc:  # transformers raises many kinds for a bad config
            lines = [x.strip() for x in str(exc).splitlines() if x.strip()]
            why = lines[-1] if lines else exc.__class__.__name__
            raise BenchError(f"model {self.name}: bad config ({why})") from None

    def parameter_count(self) -> int:
        """Number of parameters (stored for a built-in model, else counted live)."""
        return self.facts().parameters

    def parameter_count_live(self) -> int:
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


def max_memory_per_gpu(free_bytes: list[float], headroom: float = 0.9) -> dict[int, int]:
    """``max_memory`` for ``device_map="auto"``: each GPU's memory it can give, less a
    share kept for activations and the KV cache (weights fill at most ``headroom``)."""
    return {i: int(f * headroom) for i, f in enumerate(free_bytes)}


def placed_blocks(model: Any) -> list[tuple[str, int]]:
    """The model's blocks in forward order with their bytes: each decoder layer (a class
    in ``_no_split_modules``) whole, and every other module that holds tensors itself."""
    keep = set(model._no_split_modules or [])
    out: list[tuple[str, int]] = []
    taken: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(t + ".") for t in taken):
            continue  # inside a block already placed
        own = list(mod.parameters(recurse=False)) + list(mod.buffers(recurse=False))
        whole = type(mod).__name__ in keep
        if not whole and not own:
            continue
        tensors = list(mod.parameters()) + list(mod.buffers()) if whole else own
        out.append((name, sum(t.numel() * t.element_size() for t in tensors)))
        if whole or not list(mod.children()):
            taken.append(name)
    return out


def device_map_over(model: Any, max_memory: dict[int, int]) -> dict[str, int]:
    """Where each block of ``model`` (built on the meta device) goes: the GPUs in order,
    each filled to an equal share of the weights (never past its ``max_memory``), decoder
    layers never split; tied input and output embeddings stay on the first GPU.

    Raises:
        torch.OutOfMemoryError: the weights do not fit on the GPUs.
    """
    import torch

    blocks = placed_blocks(model)
    gpus = sorted(max_memory)
    total = sum(b for _, b in blocks)
    share = total / len(gpus)
    tied = bool(getattr(model.config, "tie_word_embeddings", False))
    out_name = next((n for n, _ in model.named_modules()
                     if model.get_output_embeddings() is not None and
                     model.get_submodule(n) is model.get_output_embeddings()), None)
    used = dict.fromkeys(gpus, 0)
    dmap: dict[str, int] = {}
    k = 0
    for name, size in blocks:
        if tied and name == out_name:
            dmap[name] = gpus[0]  # its weight is the input embedding's
            continue
        while k < len(gpus) - 1 and used[gpus[k]] > 0 and used[gpus[k]] + size > share:
            k += 1
        g = gpus[k]
        if used[g] + size > max_memory[g]:
            raise torch.OutOfMemoryError(
                f"the weights ({total / 1e9:.3g} GB) do not fit on {len(gpus)} GPUs "
                f"(max_memory {', '.join(f'{max_memory[i] / 1e9:.3g}' for i in gpus)} GB)")
        used[g] += size
        dmap[name] = g
    return dmap


def build_over(spec: ModelSpec, dtype: str, max_memory: dict[int, int], seed: int = 0,
               device_of: Any = None) -> tuple[Any, dict[str, Any]]:
    """Build the model over several GPUs (a multi-GPU cell): a device map within
    ``max_memory`` per GPU, as ``device_map="auto"`` does, balanced over the GPUs.

    Seeded random weights: the model is built on the meta device, placed block by block
    (:func:`device_map_over`), each block allocated on its GPU and initialised there,
    then dispatched (accelerate moves activations between GPUs). Local weights load with
    ``device_map="auto"`` and ``max_memory``. Eager only: no compile.

    Args:
        max_memory: bytes per GPU index (``cuda:i``), see :func:`max_memory_per_gpu`.
        device_of: the torch device of GPU index i (tests place on the CPU).

    Returns:
        (model, device_map)
    """
    import torch
    from accelerate import dispatch_model
    from transformers import AutoModelForCausalLM

    where = device_of or (lambda i: f"cuda:{i}")
    if spec.weights:
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"  # a local path only: never a download
        try:
            model = AutoModelForCausalLM.from_pretrained(
                spec.weights, dtype=torch_dtype(dtype), local_files_only=True,
                device_map="auto", max_memory=dict(max_memory))
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot load weights from {spec.weights}: {exc}") from None
        return model.eval(), dict(getattr(model, "hf_device_map", {}) or {})
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(spec.hf_config(), dtype=torch_dtype(dtype))
    dmap = device_map_over(model, max_memory)
    for name, i in dmap.items():
        (model.get_submodule(name) if name else model).to_empty(device=where(i))
    for mod in model.modules():  # the meta build marked them; initialise for real
        if hasattr(mod, "_is_hf_initialized"):
            del mod._is_hf_initialized
    torch.manual_seed(seed)
    model.initialize_weights()
    model.tie_weights()
    model = dispatch_model(model.eval(), device_map={k: where(v) for k, v in dmap.items()})
    return model, dmap


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
        # device_map needs accelerate (a dependency); on the CPU the plain load is the same
        onto = {} if device == "cpu" else {"device_map": {"": device}}
        try:
            model = AutoModelForCausalLM.from_pretrained(
                spec.weights, dtype=torch_dtype(dtype), local_files_only=True, **onto)
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot load weights from {spec.weights}: {exc}") from None
        return model.eval()
    torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(spec.hf_config(), dtype=torch_dtype(dtype))
    return model.eval()

