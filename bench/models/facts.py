"""Architecture facts of a model (config attributes, parameter count) without transformers.

Checking a sweep, ``bench validate``'s roofline and ``bench list`` need a handful of
config attributes and the parameter count. Resolving them through transformers costs an
import of torch and transformers (about 3.5 s on a 2-core machine) and building the model
on the meta device (about 1 s more), in every process that asks. For the built-in models
they are stored in ``facts.json`` beside this file, keyed by the model's type and config;
``tests/test_models.py`` derives them again with transformers and fails if they differ
(regenerate with ``python scripts/model_facts.py``). Any other model (a model file, a
checkpoint) is resolved live, once per process.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import lru_cache
from importlib import resources
from typing import Any

# Every config attribute the facts hold. Code reading facts may ask for nothing else:
# another name raises LookupError (not AttributeError, which getattr's default would hide).
ATTRS = ("model_type", "vocab_size", "hidden_size", "num_hidden_layers",
         "num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size",
         "moe_intermediate_size", "num_experts", "num_local_experts", "num_experts_per_tok",
         "n_inner", "n_positions", "max_position_embeddings", "tie_word_embeddings")


class Facts:
    """A read-only view of the config attributes in :data:`ATTRS` plus ``parameters``.

    An attribute in ATTRS that the config does not have raises AttributeError, as the
    transformers config would (so ``getattr(facts, name, default)`` behaves the same).
    """

    def __init__(self, attrs: dict[str, Any], parameters: int | Callable[[], int]):
        self._attrs = dict(attrs)
        self._parameters = parameters

    @property
    def parameters(self) -> int:
        """The parameter count; a live one is counted when first asked (building the
        model, even on the meta device, can fail where the config alone does not)."""
        if callable(self._parameters):
            self._parameters = int(self._parameters())
        return int(self._parameters)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if name not in ATTRS:
            raise LookupError(f"config attribute {name!r} is not among the stored facts "
                              f"(bench.models.facts.ATTRS)")
        try:
            return self._attrs[name]
        except KeyError:
            raise AttributeError(name) from None

    def to_dict(self) -> dict[str, Any]:
        return {"attrs": dict(self._attrs), "parameters": self.parameters}


def key(model_type: str, config: dict) -> str:
    """The stored facts' key: the model type and the config, canonical JSON."""
    return json.dumps([model_type, config], sort_keys=True, separators=(",", ":"))


def derive(spec: Any) -> Facts:
    """The facts resolved with transformers: its config object and a meta-device model."""
    cfg = spec.hf_config()
    attrs = {k: getattr(cfg, k) for k in ATTRS if hasattr(cfg, k)}
    return Facts(attrs, spec.parameter_count_live)


@lru_cache(maxsize=1)
def _stored() -> dict[str, dict]:
    res = resources.files("bench.models") / "facts.json"
    try:
        return json.loads(res.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


@lru_cache(maxsize=64)
def _live(model_type: str, config_json: str, spec: Any) -> Facts:
    return derive(spec)


def of(spec: Any) -> Facts:
    """The facts of a :class:`bench.models.ModelSpec`: stored for a built-in whose type
    and config are those stored, else resolved with transformers (cached)."""
    if spec.weights is None:
        hit = _stored().get(key(spec.model_type, spec.config))
        if hit is not None:
            return Facts(hit["attrs"], hit["parameters"])
    return _live(spec.model_type, key(spec.model_type, spec.config), spec)
