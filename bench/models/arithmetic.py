"""FLOPs and bytes per token of a decoder, from its config (inputs of the energy roofline).

Notation (../shared/notes/inference.md section 6): L layers, d hidden, h query heads,
h_kv key/value heads, hd head dim (d_attn = h x hd), V vocabulary, B batch, S prompt
length, c context at a decode step. Mixture of experts: E experts, k active, ff_e the
expert MLP width.
"""

from __future__ import annotations

from dataclasses import dataclass

BYTES_PER_ELEMENT = {"fp32": 4, "bf16": 2, "fp16": 2, "fp8": 1}  # fp8: vLLM weights


@dataclass(frozen=True)
class Arithmetic:
    """Per-token arithmetic of one architecture at one dtype."""

    n_total: int  # every parameter
    n_active: int  # parameters one token uses (MoE: k of E experts)
    n_matmul: int  # parameters in matmuls per token (embedding lookup excluded)
    layers: int
    hidden: int
    d_attn: int
    kv_heads: int
    head_dim: int
    vocab: int
    experts: int  # 0 for dense
    experts_per_token: int
    expert_params_per_layer_each: int  # one expert's MLP parameters in one layer
    bytes_per_element: int
    ff: int

    @property
    def kv_bytes_per_token(self) -> int:
        """K and V of one token over all layers."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.bytes_per_element

    @property
    def weight_bytes(self) -> int:
        return self.n_total * self.bytes_per_element

    @property
    def flops_per_context_token(self) -> float:
        """4 L d_attn: attention FLOPs per token of context at one decode step."""
        return 4.0 * self.layers * self.d_attn

    def decode_flops_per_token(self, context: int) -> float:
        """2 N_mm + 4 L d_attn c: the matmuls and attention over ``context`` tokens."""
        return 2.0 * self.n_matmul + self.flops_per_context_token * context

    def prefill_flops(self, prompt_len: int) -> float:
        """One sequence's prefill with only the last token's logits (logits_to_keep=1)."""
        s = prompt_len
        lm_head = self.vocab * self.hidden
        return (s * 2.0 * (self.n_matmul - lm_head) + 2.0 * lm_head
                + 4.0 * self.layers * self.d_attn * s * s / 2)

    def weight_bytes_read(self, batch: int) -> float:
        """Weights one decode step reads; MoE reads only the experts the batch touches."""
        if not self.experts:
            return float(self.weight_bytes)
        k, e = self.experts_per_token, self.experts
        touched = e * (1 - (1 - k / e) ** batch)  # expected, uniform routing
        per = self.expert_params_per_layer_each * self.layers * self.bytes_per_element
        return self.weight_bytes - e * per + touched * per

    def decode_step_bytes(self, batch: int, context: int) -> float:
        """Weights + reading the KV cache of ``context`` tokens + writing one token's K/V."""
        return (self.weight_bytes_read(batch) + batch * context * self.kv_bytes_per_token
                + batch * self.kv_bytes_per_token)

    def memory_bytes(self, batch: int, input_len: int, output_len: int) -> float:
        """Weights + KV cache + prefill activations + fp32 logits: what a batch needs."""
        ff_act = self.experts_per_token * self.ff if self.experts else self.ff
        activations = batch * input_len * (3 * ff_act + 6 * self.hidden) * \
            self.bytes_per_element
        kv = batch * (input_len + output_len) * self.kv_bytes_per_token
        return self.weight_bytes + kv + activations + batch * self.vocab * 4

    def min_time_s(self, batch: int, input_len: int, output_len: int, peak_flops: float,
                   mem_bw: float) -> float:
        """Shortest time one generate call can take on a device (roofline per phase)."""
        t = max(batch * self.prefill_flops(input_len) / peak_flops,
                self.weight_bytes / mem_bw)
        for i in range(output_len - 1):  # the first output token comes from prefill
            c = input_len + 1 + i
            t += max(self.decode_step_bytes(batch, c) / mem_bw,
                     batch * self.decode_flops_per_token(c) / peak_flops)
        return t


def of(spec, dtype: str) -> Arithmetic:
    """The arithmetic of a :class:`bench.models.ModelSpec` at ``dtype``."""
    cfg = spec.facts()
    n_total = cfg.parameters
    L = cfg.num_hidden_layers
    d = cfg.hidden_size
    h = cfg.num_attention_heads
    h_kv = getattr(cfg, "num_key_value_heads", None) or h
    hd = getattr(cfg, "head_dim", None) or d // h
    V = cfg.vocab_size
    E = getattr(cfg, "num_experts", 0) or getattr(cfg, "num_local_experts", 0) or 0
    k = getattr(cfg, "num_experts_per_tok", 0) or 0
    ff_e = getattr(cfg, "moe_intermediate_size", 0) or 0
    ff = getattr(cfg, "intermediate_size", None) or getattr(cfg, "n_inner", None) or 4 * d
    per_expert = 3 * d * ff_e if E else 0
    n_active = n_total - L * (E - k) * per_expert if E else n_total
    tied = bool(getattr(cfg, "tie_word_embeddings", False))
    pos = getattr(cfg, "n_positions", 0) * d if cfg.model_type == "gpt2" else 0
    n_matmul = n_active - pos - (0 if tied else V * d)
    return Arithmetic(n_total=n_total, n_active=n_active, n_matmul=n_matmul, layers=L,
                      hidden=d, d_attn=h * hd, kv_heads=h_kv, head_dim=hd, vocab=V,
                      experts=E, experts_per_token=k, expert_params_per_layer_each=per_expert,
                      bytes_per_element=BYTES_PER_ELEMENT[dtype], ff=ff_e if E else ff)
