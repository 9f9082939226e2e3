"""The workload: seeded synthetic prompts and generation forced to an exact length.

No timing policy lives here: the runner decides windows and repeats.
"""

from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """Tokens one generate call processes."""

    batch_size: int
    input_len: int
    output_len: int


def make_prompts(shape: Shape, vocab_size: int, seed: int = 0, device: str = "cpu"):
    """Random token ids of shape (batch, input_len), reproducible from ``seed``.

    Ids avoid the first 16 (special tokens in most vocabularies).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    low = min(16, vocab_size - 1)
    ids = torch.randint(low, vocab_size, (shape.batch_size, shape.input_len), generator=g)
    return ids.to(device)


def prepare(model, device: str = "cpu", compile: bool = True) -> None:
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

    def __call__(self, input_ids, scores):
        if self.first_ns is None:
            self.first_ns = time.monotonic_ns()
        return scores


def generate_exact(model, input_ids, output_len: int, marks: list | None = None) -> int:
    """Greedy generation of exactly ``output_len`` new tokens per sequence.

    Args:
        marks: if given, ``(start_ns, first_token_ns, end_ns)`` of this call is appended
            (CLOCK_MONOTONIC; the first-token time is when prefill's logits were ready).

    Returns:
        The number of output tokens made (batch x output_len).

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
    if marks is not None:
        marks.append((start, mark.first_ns if mark.first_ns is not None else end, end))
    made = out.shape[1] - input_ids.shape[1]
    if made != output_len:
        raise RuntimeError(f"generate made {made} tokens per sequence, not {output_len}")
    return out.shape[0] * made
