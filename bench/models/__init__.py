"""Registry of reference architectures (config JSON) and how to build them with random weights.

Throughput and energy depend on the architecture, not on the weights, so models are
built from their configs with seeded random weights, as vLLM's dummy load format does.
Nothing is ever downloaded; real weights load only from a local path.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bench.errors import BenchError

DTYPES = ("fp32", "bf16", "fp16")


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
        return cls(str(name), str(model_type), config, str(d.get("description", "")),
                   str(d.get("source", "")))

    def hf_config(self):
        """The transformers config object."""
        from transformers import AutoConfig

        try:
            return AutoConfig.for_model(self.model_type, **self.config)
        except (ValueError, TypeError) as exc:
            raise BenchError(f"model {self.name}: bad config ({exc})") from None

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
    return ModelSpec(str(path), model_type, cfg, f"weights from {p.resolve()}",
                     "local checkpoint", weights=str(p))


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
    keeps an 8B model's build to seconds on a GPU and off the host's memory.
    """
    import torch
    from transformers import AutoModelForCausalLM

    if spec.weights:
        import os

        os.environ["HF_HUB_OFFLINE"] = "1"  # a local path only: never a download
        try:
            model = AutoModelForCausalLM.from_pretrained(
                spec.weights, dtype=torch_dtype(dtype), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise BenchError(f"cannot load weights from {spec.weights}: {exc}") from None
        return model.to(device).eval()
    torch.manual_seed(seed)
    if device.startswith("cuda"):
        torch.cuda.manual_seed_all(seed)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(spec.hf_config(), dtype=torch_dtype(dtype))
    return model.eval()
