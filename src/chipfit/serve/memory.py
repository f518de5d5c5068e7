"""What a serving deployment holds in memory, per chip, and how many sequences its KV cache admits.

Weights at their storage format, split over tensor- and pipeline-parallel chips; the KV cache in pages of
`PAGE_TOKENS` tokens at the cache's format; one iteration's live activations; and the share of memory
the runtime keeps for itself. What is left holds KV pages, and a sequence needs a whole page for every
started `PAGE_TOKENS` of its context. Sources: vLLM's defaults (block_size 16, gpu_memory_utilization 0.9),
`vllm/config` in vllm-project/vllm.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from chipfit.errors import InputError
from chipfit.formats import storage_bytes
from chipfit.serve.config import AttentionKind, LlmConfig

__all__ = [
    "MEMORY_UTILIZATION", "PAGE_TOKENS", "ServingMemory", "kv_bytes_per_token", "params_per_chip", "serving_memory",
]  # fmt: skip

PAGE_TOKENS = 16  # vLLM's default KV block: 16 tokens
MEMORY_UTILIZATION = 0.9  # vLLM's default gpu_memory_utilization: the rest is the runtime's (context, allocator)
LOGITS_BYTES = 4  # logits are computed in FP32 for sampling


def kv_bytes_per_token(cfg: LlmConfig, kv_format: str, tp: int = 1, pp: int = 1) -> float:
    """KV cache bytes one token adds on each chip: its pipeline stage's layers, and its tensor-parallel
    share of the KV heads (a KV head is replicated when there are more TP ranks than KV heads; MLA's one
    latent per token is replicated on every TP rank)."""
    layers = math.ceil(cfg.layers / pp)
    if cfg.attention is AttentionKind.MLA:
        elements = layers * (cfg.kv_lora_rank + cfg.qk_rope_head_dim)
    else:
        elements = 2 * layers * math.ceil(cfg.kv_heads / tp) * cfg.head_dim
    return storage_bytes(kv_format, elements)


def params_per_chip(cfg: LlmConfig, tp: int = 1, pp: int = 1, expert_parallel: bool = False) -> float:
    """Weights one chip holds: its pipeline stage's share of everything split over the tensor-parallel
    ranks; under expert parallelism the routed experts are spread whole over the ranks and the rest (attention,
    shared experts, embeddings) is replicated on each."""
    if not expert_parallel:
        return cfg.params / (tp * pp)
    experts = cfg.moe_layers * cfg.experts * cfg._mlp_params(cfg.expert_width)
    return (experts / tp + (cfg.params - experts)) / pp


@dataclass(frozen=True)
class ServingMemory:
    """One chip's memory in a tp x pp deployment (bytes)."""

    capacity_bytes: float
    weights_bytes: float
    activations_bytes: float
    reserve_bytes: float
    kv_bytes_per_token: float
    page_tokens: int = PAGE_TOKENS

    @property
    def kv_budget_bytes(self) -> float:
        """What is left for KV pages (negative: the weights do not fit)."""
        return self.capacity_bytes - self.reserve_bytes - self.weights_bytes - self.activations_bytes

    @property
    def fits(self) -> bool:
        return self.kv_pages >= 1

    @property
    def kv_pages(self) -> int:
        return max(0, math.floor(self.kv_budget_bytes / (self.page_tokens * self.kv_bytes_per_token)))

    @property
    def kv_tokens(self) -> int:
        return self.kv_pages * self.page_tokens

    def max_sequences(self, context_tokens: int) -> int:
        """Sequences of `context_tokens` (input + output) whose caches fit at once."""
        if context_tokens < 1:
            raise InputError(f"a sequence holds at least one token, got {context_tokens}")
        return self.kv_pages // math.ceil(context_tokens / self.page_tokens)

    def as_dict(self) -> dict[str, float | int]:
        return {**asdict(self), "kv_budget_bytes": self.kv_budget_bytes, "kv_pages": self.kv_pages}


def serving_memory(
    cfg: LlmConfig,
    capacity_bytes: float,
    weight_format: str,
    kv_format: str,
    *,
    tp: int = 1,
    pp: int = 1,
    expert_parallel: bool = False,
    token_budget: int = 8192,
    activation_format: str = "bfloat16",
    utilization: float = MEMORY_UTILIZATION,
) -> ServingMemory:
    """Per-chip memory of `cfg` served on tp x pp chips of `capacity_bytes` each (`expert_parallel`: experts
    whole on each rank, attention and its cache data-parallel, so each rank caches every KV head of its own
    sequences).

    token_budget: tokens one iteration runs (chunked prefill's budget), whose activations are live at once:
    assumed one layer's transients for every token (the residual, the normalized input, attention's
    output and the MLP's intermediate: 3 x hidden + 2 x its TP share of the MLP width) and FP32 logits for
    each sequence's sampled position, taken as one per 128 tokens of budget (assumed)."""
    if tp < 1 or pp < 1:
        raise InputError(f"tp and pp must be >= 1, got tp={tp}, pp={pp}")
    if not 0 < utilization <= 1:
        raise InputError(f"utilization is a fraction of memory in (0, 1], got {utilization}")
    weights = storage_bytes(weight_format, params_per_chip(cfg, tp, pp, expert_parallel))
    width = 3 * cfg.hidden_size + 2 * math.ceil(max(cfg.intermediate_size, cfg.expert_width) / tp)
    acts = storage_bytes(activation_format, token_budget * width)
    acts += math.ceil(token_budget / 128) * cfg.vocab_size / tp * LOGITS_BYTES
    return ServingMemory(
        capacity_bytes=capacity_bytes,
        weights_bytes=weights,
        activations_bytes=acts,
        reserve_bytes=(1 - utilization) * capacity_bytes,
        kv_bytes_per_token=kv_bytes_per_token(cfg, kv_format, 1 if expert_parallel else tp, pp),
    )
