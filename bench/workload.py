"""The workload: seeded synthetic prompts and generation forced to an exact length.

No timing policy lives here: the runner decides windows and repeats.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    """Tokens one generate call processes."""

    batch_size: int
    input_len: int
    output_len: int

    @property
    def output_tokens(self) -> int:
        return self.batch_size * self.output_len

    @property
    def input_tokens(self) -> int:
        return self.batch_size * self.input_len


def make_prompts(shape: Shape, vocab_size: int, seed: int = 0, device: str = "cpu"):
    """Random token ids of shape (batch, input_len), reproducible from ``seed``.

    Ids avoid the first 16 (special tokens in most vocabularies).
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    low = min(16, vocab_size - 1)
    ids = torch.randint(low, vocab_size, (shape.batch_size, shape.input_len), generator=g)
    return ids.to(device)


def prepare(model) -> None:
    """Make the model generate to exactly ``max_new_tokens``: no EOS, greedy."""
    gc = model.generation_config
    gc.eos_token_id = None
    gc.do_sample = False
    gc.temperature = None
    gc.top_p = None
    gc.top_k = None
    if gc.pad_token_id is None:
        gc.pad_token_id = 0


def generate_exact(model, input_ids, output_len: int) -> int:
    """Greedy generation of exactly ``output_len`` new tokens per sequence.

    Returns:
        The number of output tokens made (batch x output_len).

    Raises:
        RuntimeError: generation stopped at another length.
    """
    import torch

    with torch.inference_mode():
        out = model.generate(
            input_ids,
            attention_mask=torch.ones_like(input_ids),
            max_new_tokens=output_len,
            min_new_tokens=None,
            do_sample=False,
            eos_token_id=None,
        )
    made = out.shape[1] - input_ids.shape[1]
    if made != output_len:
        raise RuntimeError(f"generate made {made} tokens per sequence, not {output_len}")
    return out.shape[0] * made
