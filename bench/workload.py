"""The workload boundary: what the meter measures, behind one small interface an engine implements.

An engine is prepared once per model (built, loaded, compiled), warmed up per shape
outside any measured window, then called once per generate call inside windows; each
call returns its token counts and time marks. The Hugging Face reference path
(:class:`HfWorkload`) is the first implementation. No timing policy lives here: the
cells module decides windows and repeats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Shape:
    """Tokens one generate call processes."""

    batch_size: int
    input_len: int
    output_len: int


@dataclass(frozen=True)
class CallResult:
    """One generate call: tokens made and read, and its marks on CLOCK_MONOTONIC (ns).

    ``first_token_ns`` is when prefill's logits were ready (the first output token).
    """

    output_tokens: int
    input_tokens: int
    start_ns: int
    first_token_ns: int
    end_ns: int

    @property
    def marks(self) -> tuple[int, int, int]:
        return (self.start_ns, self.first_token_ns, self.end_ns)


class Workload(Protocol):
    """An engine as the meter sees it: prepare once, warm up, run one call at a time."""

    engine: str

    def prepare(self) -> None:
        """Build or load the model once (never inside a measured window)."""

    def warm_up(self, shape: Shape, calls: int) -> None:
        """Run ``calls`` unmeasured calls of ``shape`` (compilation, allocation, clocks)."""

    def call(self, shape: Shape) -> CallResult:
        """One generate call of exactly ``shape``: the tokens it made and its marks.

        Raises:
            RuntimeError: the engine made another number of tokens.
        """
        ...

    def describe(self) -> dict[str, Any]:
        """What ran, recorded with every cell: ``name`` (the engine), its version and the
        settings that change the figures."""
        ...

    def close(self) -> None:
        """Release the model and the engine's memory."""


def make_prompts(shape: Shape, vocab_size: int, seed: int = 0,
                 device: str = "cpu") -> torch.Tensor:
    """Random token ids of shape (batch, input_len), reproducible from ``seed``.

    Ids avoid the first 16 (special tokens in most vocabularies).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    low = min(16, vocab_size - 1)
    ids = torch.randint(low, vocab_size, (shape.batch_size, shape.input_len), generator=g)
    return ids.to(device)


def prepare(model: Any, device: str = "cpu", compile: bool = True) -> None:
    """Make the model generate to exactly ``max_new_tokens``: no EOS, greedy.

    On a CUDA device with ``compile``, a static KV cache: transformers then compiles the
    decode step (torch.compile, mode reduce-overhead, CUDA graphs) and prefill stays
    eager. On the CPU the dynamic cache, uncompiled.
    """
    gc = model.generation_config
    if device.startswith("cuda") and compile:
        gc.cache_implementation = "static"
    gc.eos_token_id = None
    gc.do_sample = False
    gc.temperature = None
    gc.top_p = None
    gc.top_k = None
    if gc.pad_token_id is None:
        gc.pad_token_id = 0


class _FirstTokenMark:
    """A logits processor that records when the first new token's logits are ready.

    Called once per step after the forward pass, outside any compiled region. Stock
    generate synchronises the host with the device every step (its stop check), so host
    time here is the device's time within one step's launch latency.
    """

    def __init__(self) -> None:
        self.first_ns: int | None = None

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.first_ns is None:
            self.first_ns = time.monotonic_ns()
        return scores


def generate_exact(model: Any, input_ids: torch.Tensor, output_len: int) -> CallResult:
    """Greedy generation of exactly ``output_len`` new tokens per sequence.

    Returns:
        The call's tokens (batch x output_len made, batch x input_len read) and marks.

    Raises:
        RuntimeError: generation stopped at another length.
    """
    import torch
    from transformers import LogitsProcessorList

    mark = _FirstTokenMark()
    start = time.monotonic_ns()
    with torch.inference_mode():
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=output_len,
            min_new_tokens=None,
            do_sample=False,
            eos_token_id=None,
            logits_processor=LogitsProcessorList([mark]),
        )
    end = time.monotonic_ns()
    made = out.shape[1] - input_ids.shape[1]
    if made != output_len:
        raise RuntimeError(f"generate made {made} tokens per sequence, not {output_len}")
    batch, input_len = input_ids.shape[0], input_ids.shape[1]
    return CallResult(batch * made, batch * input_len, start,
                      mark.first_ns if mark.first_ns is not None else end, end)


class HfWorkload:
    """The reference engine: PyTorch + Hugging Face transformers ``generate``.

    Args:
        spec: the model (``bench.models.ModelSpec``).
        dtype: fp32 | bf16 | fp16.
        torch_device: where the model runs (``cpu``, ``cuda:0``).
        seed: seed of the random weights and the prompts.
        compile: on CUDA, a static cache and torch.compile (see :func:`prepare`).
    """

    engine = "hf"

    def __init__(self, spec: Any, dtype: str, torch_device: str, seed: int = 0,
                 compile: bool = True) -> None:
        self.spec = spec
        self.dtype = dtype
        self.torch_device = torch_device
        self.seed = seed
        self.compile = compile
        self.model: Any = None
        self._prompts: dict[tuple[int, int], Any] = {}

    def prepare(self) -> None:
        from bench import models

        self.model = models.build(self.spec, self.dtype, self.torch_device, self.seed)
        prepare(self.model, self.torch_device, self.compile)

    def _ids(self, shape: Shape) -> torch.Tensor:
        key = (shape.batch_size, shape.input_len)
        if key not in self._prompts:
            self._prompts = {key: make_prompts(shape, self.spec.config["vocab_size"],
                                               self.seed, self.torch_device)}
        return self._prompts[key]

    def warm_up(self, shape: Shape, calls: int) -> None:
        for _ in range(calls):
            self.call(shape)

    def call(self, shape: Shape) -> CallResult:
        return generate_exact(self.model, self._ids(shape), shape.output_len)

    def describe(self) -> dict[str, Any]:
        from importlib import metadata

        compiled = self.torch_device.startswith("cuda") and self.compile
        cfg = getattr(self.model, "config", None)
        return {"name": self.engine, "version": metadata.version("transformers"),
                "torch": metadata.version("torch"), "compiled": compiled,
                "cache": "static" if compiled else "dynamic",
                "attention": getattr(cfg, "_attn_implementation", None)}

    def close(self) -> None:
        self.model = None
        self._prompts = {}


# Engines beyond hf: name -> the module whose ``make_workload`` builds it.
PLUGGED_ENGINES = {"vllm": "bench.engines.vllm"}


def make_workload(engine: str, spec: Any, dtype: str, torch_device: str, seed: int = 0,
                  compile: bool = True, sweep: Any = None) -> Workload:
    """The workload of ``engine`` for one model on one device (not prepared yet).

    ``sweep`` (the resolved ``SweepConfig``) sizes engines that are built once for all of
    a model's cells (vllm: its largest batch and sequence).

    Raises:
        BenchError: an engine this harness does not have.
    """
    if engine == "hf":
        return HfWorkload(spec, dtype, torch_device, seed, compile)
    if engine in PLUGGED_ENGINES:
        import importlib

        # Plugged by module name: the engine depends on this interface, never the reverse.
        module = importlib.import_module(PLUGGED_ENGINES[engine])
        return module.make_workload(spec, dtype, torch_device, seed, compile, sweep)
    from bench.errors import BenchError

    raise BenchError(f"unknown engine {engine!r}")
