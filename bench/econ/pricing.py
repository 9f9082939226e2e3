"""Token-price classes from a model's size: registry, scenario table, then the name."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from bench.errors import BenchError

UNKNOWN = "unknown"


@dataclass(frozen=True)
class ModelSize:
    """A model's parameters in billions and where the figures come from."""

    total_b: float
    active_b: float
    source: str  # registry | model_params | name

    @property
    def moe(self) -> bool:
        """True where a token uses fewer parameters than the model has (experts)."""
        return self.active_b < self.total_b


@lru_cache(maxsize=64)
def _registry_size(name: str) -> ModelSize | None:
    """Sizes of a built-in model from its architecture (counted on the meta device)."""
    from bench import models

    if name not in models.builtin_names():
        return None
    try:
        from bench.models import arithmetic

        a = arithmetic.of(models.get(name), "bf16")
    except (ImportError, BenchError):
        return None
    return ModelSize(a.n_total / 1e9, a.n_active / 1e9, "registry")


_NUM = r"(\d+(?:\.\d+)?)"


def size_from_name(name: str) -> ModelSize | None:
    """Sizes written in a model name, or None where the name does not tell them.

    ``Qwen3-32B`` is dense 32B; ``Qwen3-30B-A3B`` is an MoE of 30B with 3B active;
    ``Mixtral-8x7B`` an MoE of at most 56B (active unknown: taken as 7B). A name with no
    size, or more than one size (``...-17B-128E``: active only), gives None.
    """
    base = str(name).rsplit("/", 1)[-1].lower()
    sizes, active, experts = [], None, None
    for tok in re.split(r"[-_\s]+", base):
        if m := re.fullmatch(_NUM + "b", tok):
            sizes.append(float(m.group(1)))
        elif m := re.fullmatch("a" + _NUM + "b", tok):
            active = float(m.group(1))
        elif m := re.fullmatch(r"(\d+)x" + _NUM + "b", tok):
            experts = (int(m.group(1)), float(m.group(2)))
        elif re.fullmatch(r"\d+e", tok):
            return None  # Llama-4 style: the size given is the active one
    if experts and not sizes:
        return ModelSize(experts[0] * experts[1], experts[1], "name")
    if len(sizes) != 1 or not sizes[0] > 0:
        return None
    total = sizes[0]
    if active is not None and 0 < active <= total:
        return ModelSize(total, active, "name")
    return ModelSize(total, total, "name") if active is None else None


def model_size(name: str, model_params: dict[str, dict] | None = None) -> ModelSize | None:
    """A model's size: the built-in registry, else ``model_params``, else the name."""
    name = str(name)
    if size := _registry_size(name):
        return size
    table = model_params or {}
    for key in (name.lower(), name.rsplit("/", 1)[-1].lower()):
        if key in table:
            e = table[key]
            return ModelSize(float(e["total_b"]), float(e["active_b"]), "model_params")
    return size_from_name(name)


def classify(size: ModelSize | None, price_classes: dict) -> str:
    """The price class of a size under a scenario's rules; ``unknown`` without a size."""
    if size is None:
        return UNKNOWN
    for top, cls in price_classes["moe" if size.moe else "dense"]:
        if top is None or size.total_b <= top:
            return cls
    return UNKNOWN  # unreachable: the last rule has no upper edge


def price_class_of(model: str, scenario) -> str:
    """The token-price class of a model under a scenario."""
    return classify(model_size(model, scenario.model_params), scenario.price_classes)


def check_priced(models, scenario) -> None:
    """Stop where a model's class has no price in the scenario.

    Raises:
        BenchError: naming the models (one line).
    """
    missing = sorted({str(m) for m in models
                      if price_class_of(m, scenario) not in scenario.prices})
    if missing:
        raise BenchError(
            f"no token price for models of unknown size: {', '.join(missing)}; pass "
            "--price-rmb-per-mtok, or in a scenario file give their sizes under "
            "[model_params] or a price for class 'unknown' under [prices]")
