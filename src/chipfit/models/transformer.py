"""Transformer built-ins: BERT encoders and Llama-style decoders (definitions only).

Attention is written as explicit matmul + softmax + matmul, so every FLOP is
visible to the tracer (torch's FLOP counter has no formula for CPU
scaled_dot_product_attention). Sizes follow the published models: BERT-base
109,482,240 and BERT-large 335,141,888 parameters (bert-*-uncased with pooler);
Llama-2-7B 6,738,415,616 and Llama-2-70B 68,976,648,192 (GQA with 8 KV heads).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from chipfit.errors import InputError

__all__ = ["BERT", "Attention", "Decoder", "DecoderConfig", "EncoderLayer", "RMSNorm"]


class Attention(nn.Module):
    """Multi-head attention with grouped-query support (kv_heads divides heads).

    cache_round: when set, applied to the keys (after rotary) and values before attention reads them, as a
    serving engine stores them in its KV cache's format (chipfit.serve.quality sets it)."""

    cache_round: Callable[[torch.Tensor], torch.Tensor] | None = None

    def __init__(self, dim: int, heads: int, kv_heads: int | None = None, bias: bool = True) -> None:
        super().__init__()
        self.heads, self.kv_heads = heads, kv_heads or heads
        if heads % self.kv_heads:
            raise InputError(f"heads ({heads}) must be a multiple of kv_heads ({self.kv_heads})")
        self.head_dim = dim // heads
        kv_dim = self.kv_heads * self.head_dim
        self.q_proj = nn.Linear(dim, dim, bias=bias)
        self.k_proj = nn.Linear(dim, kv_dim, bias=bias)
        self.v_proj = nn.Linear(dim, kv_dim, bias=bias)
        self.o_proj = nn.Linear(dim, dim, bias=bias)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None = None,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
        past: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        b, s, _ = x.shape
        hd, g = self.head_dim, self.heads // self.kv_heads
        q = self.q_proj(x).view(b, s, self.heads, hd).transpose(1, 2)
        k = self.k_proj(x).view(b, s, self.kv_heads, hd).transpose(1, 2)
        v = self.v_proj(x).view(b, s, self.kv_heads, hd).transpose(1, 2)
        if rope is not None:
            q, k = _rotate(q, *rope), _rotate(k, *rope)
        if self.cache_round is not None:
            k, v = self.cache_round(k), self.cache_round(v)
        if past is not None:  # a preallocated cache: write this step's keys and values in place, attend over it
            at = past[0].shape[2] - s
            past[0][:, :, at:].copy_(k)
            past[1][:, :, at:].copy_(v)
            k, v = past
        # group the query heads that share a KV head: (b, kv_heads, g * s, hd)
        qg = q.reshape(b, self.kv_heads, g * s, hd)
        scores = torch.matmul(qg, k.transpose(-2, -1)) / math.sqrt(hd)
        if mask is not None:
            scores = scores + (mask.repeat(g, 1) if mask.dim() == 2 else mask)
        out = torch.matmul(torch.softmax(scores, dim=-1), v)
        out = out.reshape(b, self.heads, s, hd).transpose(1, 2).reshape(b, s, self.heads * hd)
        return self.o_proj(out)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


class EncoderLayer(nn.Module):
    """Transformer encoder layer: post-norm (BERT) or pre-norm (ViT)."""

    def __init__(
        self, dim: int, heads: int, ffn: int, *, pre_norm: bool, act: str = "gelu", eps: float = 1e-12
    ) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.attn = Attention(dim, heads)
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.fc1 = nn.Linear(dim, ffn)
        self.act = nn.GELU() if act == "gelu" else nn.ReLU()
        self.fc2 = nn.Linear(ffn, dim)
        self.norm2 = nn.LayerNorm(dim, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.pre_norm:
            x = x + self.attn(self.norm1(x), mask)
            return x + self.fc2(self.act(self.fc1(self.norm2(x))))
        x = self.norm1(x + self.attn(x, mask))
        return self.norm2(x + self.fc2(self.act(self.fc1(x))))


class BERT(nn.Module):
    """BERT encoder with embeddings and pooler; forward(input_ids) -> (sequence output, pooled)."""

    def __init__(
        self, dim: int = 768, depth: int = 12, heads: int = 12, vocab: int = 30522, max_pos: int = 512
    ) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, dim)
        self.position_embeddings = nn.Embedding(max_pos, dim)
        self.token_type_embeddings = nn.Embedding(2, dim)
        self.embed_norm = nn.LayerNorm(dim, eps=1e-12)
        self.layers = nn.ModuleList([EncoderLayer(dim, heads, 4 * dim, pre_norm=False) for _ in range(depth)])
        self.pooler = nn.Linear(dim, dim)

    def forward(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        s = input_ids.shape[1]
        pos = torch.arange(s, device=input_ids.device)
        x = (
            self.word_embeddings(input_ids)
            + self.position_embeddings(pos)
            + self.token_type_embeddings(torch.zeros_like(input_ids))
        )
        x = self.embed_norm(x)
        for layer in self.layers:
            x = layer(x)
        return x, torch.tanh(self.pooler(x[:, 0]))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


@dataclass(frozen=True)
class DecoderConfig:
    dim: int
    layers: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int = 32000
    rope_theta: float = 10000.0

    @property
    def head_dim(self) -> int:
        return self.dim // self.heads


class DecoderLayer(nn.Module):
    def __init__(self, c: DecoderConfig) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(c.dim)
        self.attn = Attention(c.dim, c.heads, c.kv_heads, bias=False)
        self.mlp_norm = RMSNorm(c.dim)
        self.gate_proj = nn.Linear(c.dim, c.ffn, bias=False)
        self.up_proj = nn.Linear(c.dim, c.ffn, bias=False)
        self.down_proj = nn.Linear(c.ffn, c.dim, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        rope: tuple[torch.Tensor, torch.Tensor],
        past: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> torch.Tensor:
        x = x + self.attn(self.attn_norm(x), mask, rope, past)
        h = self.mlp_norm(x)
        return x + self.down_proj(nn.functional.silu(self.gate_proj(h)) * self.up_proj(h))


class Decoder(nn.Module):
    """Llama-style decoder: RMSNorm, rotary positions, grouped-query attention, SwiGLU.

    forward(tokens) is a prefill; forward(tokens, kv_cache) is a decode step over `tokens` with a
    preallocated cache of shape (2, layers, batch, kv_heads, past_len + tokens, head_dim), as
    serving stacks keep it: the step writes its keys and values into the last `tokens` positions in
    place and attends over the whole cache, which is read once and never copied."""

    def __init__(self, c: DecoderConfig) -> None:
        super().__init__()
        self.config = c
        self.embed = nn.Embedding(c.vocab, c.dim)
        self.layers = nn.ModuleList([DecoderLayer(c) for _ in range(c.layers)])
        self.norm = RMSNorm(c.dim)
        self.lm_head = nn.Linear(c.dim, c.vocab, bias=False)

    def forward(self, tokens: torch.Tensor, kv_cache: torch.Tensor | None = None) -> torch.Tensor:
        c = self.config
        s = tokens.shape[1]
        past_len = 0 if kv_cache is None else kv_cache.shape[4] - s
        if past_len < 0:
            raise InputError(f"the KV cache holds {past_len + s} positions, fewer than the {s} tokens of the step")
        pos = torch.arange(past_len, past_len + s, device=tokens.device, dtype=torch.float32)
        inv = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim // 2, device=tokens.device) * 2.0 / c.head_dim))
        freqs = torch.outer(pos, inv)
        rope = (freqs.cos(), freqs.sin())  # (s, head_dim / 2): rotate the two halves
        mask = None
        if s > 1:
            mask = torch.full((s, past_len + s), float("-inf"), device=tokens.device).triu(past_len + 1)
        x = self.embed(tokens)
        for i, layer in enumerate(self.layers):
            past = None if kv_cache is None else (kv_cache[0, i], kv_cache[1, i])
            x = layer(x, mask, rope, past)
        return self.lm_head(self.norm(x))

    def kv_cache_bytes(self, batch: int, length: int, dtype: torch.dtype = torch.float32) -> int:
        """Bytes of the K and V cache for `length` positions."""
        c = self.config
        return 2 * c.layers * batch * c.kv_heads * length * c.head_dim * torch.finfo(dtype).bits // 8

    def step_kv_cache_bytes(self, inputs: Sequence[Any]) -> int:
        """The cache after a step on (tokens[, kv_cache]): the preallocated cache, or after a prefill
        the positions it filled (chipfit.trace.KVCacheModel)."""
        tokens = inputs[0]
        if len(inputs) > 1 and isinstance(inputs[1], torch.Tensor):
            return self.kv_cache_bytes(tokens.shape[0], inputs[1].shape[4], inputs[1].dtype)
        return self.kv_cache_bytes(tokens.shape[0], tokens.shape[1])

    def kv_cache_inputs(self, inputs: Sequence[Any]) -> tuple[int, ...]:
        """Which positional inputs are the cache (counted once, as the KV cache, not again as inputs)."""
        return (1,) if len(inputs) > 1 else ()
