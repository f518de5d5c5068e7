"""Language-model architectures for serving, read from Hugging Face-style `config.json` files.

One parser serves both the built-in presets (`chipfit/serve/configs/*.json`, each a copy of the published
configuration's fields with its `_source`) and a user's `--config config.json`: `LlmConfig.from_dict`.
Everything else (parameter counts, the KV cache's elements per token) is derived from the fields, never
typed in, so a preset's published parameter count checks the parser and the derivation together.

Families: Llama-style decoders (llama, mistral, qwen2: grouped-query attention, gated MLP), mixtures of
experts (mixtral; deepseek_v2/v3 with shared experts), multi-head latent attention (deepseek_v2/v3: the
cache holds one compressed latent and one shared rotary key per token and layer), and GPT-J (gptj:
attention and a plain GELU MLP in parallel off one LayerNorm, with biases).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from chipfit.errors import InputError
from chipfit.paths import read_data_file

__all__ = ["AttentionKind", "LlmConfig", "MlpKind", "get_llm", "llm_names", "load_config"]

CONFIGS = Path(__file__).resolve().parent / "configs"


class AttentionKind(StrEnum):
    GQA = "gqa"  # multi-head and grouped-query attention: K and V per KV head
    MLA = "mla"  # multi-head latent attention: one compressed latent per token


class MlpKind(StrEnum):
    GATED = "gated"  # SwiGLU: gate, up and down projections
    PLAIN = "plain"  # fc_in, activation, fc_out (GPT-J), with biases


LLAMA_TYPES = ("llama", "mistral", "mixtral", "qwen2")
MLA_TYPES = ("deepseek_v2", "deepseek_v3")
SUPPORTED_TYPES = (*LLAMA_TYPES, *MLA_TYPES, "gptj")


@dataclass(frozen=True, kw_only=True)
class LlmConfig:
    """A decoder-only language model's shape. Counts, not bytes: the format decides the bytes."""

    name: str
    model_type: str
    hidden_size: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate_size: int  # the dense MLP's width
    vocab_size: int
    tied_embeddings: bool = False
    mlp: MlpKind = MlpKind.GATED
    parallel_block: bool = False  # GPT-J: attention and MLP read the same normalized input
    experts: int = 1  # routed experts per MoE layer (1: dense)
    experts_per_token: int = 1
    shared_experts: int = 0
    moe_intermediate_size: int = 0  # an expert's width (the dense width when 0)
    dense_layers: int = 0  # leading layers with a dense MLP in a MoE model (first_k_dense_replace)
    attention: AttentionKind = AttentionKind.GQA
    kv_lora_rank: int = 0  # MLA: the compressed KV latent per token
    q_lora_rank: int = 0  # MLA: the compressed query (0: a full query projection)
    qk_rope_head_dim: int = 0  # MLA: the rotary part of each query/key head, shared across heads in the cache
    v_head_dim: int = 0  # MLA: the value head width
    max_positions: int = 0
    source: str = "user: config file"

    # ---------------------------------------------------------------- derived
    @property
    def moe(self) -> bool:
        return self.experts > 1

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.moe else 0

    @property
    def expert_width(self) -> int:
        return self.moe_intermediate_size or self.intermediate_size

    def _mlp_params(self, width: int) -> int:
        h = self.hidden_size
        return 3 * h * width if self.mlp is MlpKind.GATED else 2 * h * width + width + h  # plain: with biases

    @property
    def attention_params(self) -> int:
        """One layer's attention projections (and MLA's latent norms)."""
        h, n = self.hidden_size, self.heads
        if self.attention is AttentionKind.MLA:
            qk = self.head_dim  # nope + rope per head
            q = h * self.q_lora_rank + self.q_lora_rank + self.q_lora_rank * n * qk if self.q_lora_rank else h * n * qk
            kv_a = h * (self.kv_lora_rank + self.qk_rope_head_dim) + self.kv_lora_rank
            kv_b = self.kv_lora_rank * n * (self.head_dim - self.qk_rope_head_dim + self.v_head_dim)
            return q + kv_a + kv_b + n * self.v_head_dim * h
        return h * n * self.head_dim * 2 + h * self.kv_heads * self.head_dim * 2

    @property
    def norm_params(self) -> int:
        """One layer's normalization weights: two RMSNorms, or GPT-J's one LayerNorm with its bias."""
        return 2 * self.hidden_size

    @property
    def params(self) -> int:
        """Every weight: embeddings, layers, final norm, the LM head (with its bias for GPT-J)."""
        h = self.hidden_size
        dense_mlp = self._mlp_params(self.intermediate_size)
        moe_mlp = (self.experts + self.shared_experts) * self._mlp_params(self.expert_width) + h * self.experts
        layers = self.layers * (self.attention_params + self.norm_params)
        layers += (self.layers - self.moe_layers) * dense_mlp + self.moe_layers * moe_mlp
        gptj = self.mlp is MlpKind.PLAIN  # LayerNorms with biases, an LM head with a bias
        final_norm = 2 * h if gptj else h
        head = 0 if self.tied_embeddings else self.vocab_size * h + (self.vocab_size if gptj else 0)
        return self.vocab_size * h + layers + final_norm + head

    @property
    def active_params(self) -> int:
        """The weights one token reads: every dense weight, only its experts' in a MoE layer, and one row of
        the embedding table (a lookup; the whole table when it is also the LM head)."""
        lookup = 0 if self.tied_embeddings else self.vocab_size * self.hidden_size
        idle = self.moe_layers * (self.experts - self.experts_per_token) * self._mlp_params(self.expert_width)
        return self.params - lookup - idle

    @property
    def kv_elements_per_token(self) -> int:
        """Cache elements one token adds over all layers: K and V per KV head, or MLA's latent plus its
        shared rotary key."""
        if self.attention is AttentionKind.MLA:
            return self.layers * (self.kv_lora_rank + self.qk_rope_head_dim)
        return 2 * self.layers * self.kv_heads * self.head_dim

    # ---------------------------------------------------------------- parsing
    @classmethod
    def from_dict(cls, d: dict[str, Any], name: str, where: str = "config") -> LlmConfig:
        """Parse a Hugging Face-style configuration; an error names the missing or malformed field."""
        model_type = d.get("model_type")
        if model_type not in SUPPORTED_TYPES:
            raise InputError(
                f"{where}: model_type {model_type!r} is not supported; supported: {', '.join(SUPPORTED_TYPES)}"
            )

        def num(key: str, default: int | None = None, *, zero_ok: bool = False) -> int:
            v = d.get(key)
            if v is None:  # absent, or null as Hugging Face writes an unset optional field (q_lora_rank, n_inner)
                v = default
            if v is None:
                raise InputError(f"{where}: field '{key}' is missing (needed for model_type {model_type!r})")
            if isinstance(v, bool) or not isinstance(v, int) or v < (0 if zero_ok else 1):
                raise InputError(f"{where}: field '{key}' must be a {'non-negative' if zero_ok else 'positive'} "
                                 f"integer, got {v!r}")  # fmt: skip
            return v

        source = str(d.get("_source", f"user: {where}"))
        tied = d.get("tie_word_embeddings", False)
        if not isinstance(tied, bool):
            raise InputError(f"{where}: field 'tie_word_embeddings' must be true or false, got {tied!r}")
        if model_type == "gptj":
            hidden, heads = num("n_embd"), num("n_head")
            cfg = cls(
                name=name, model_type=model_type, hidden_size=hidden, layers=num("n_layer"), heads=heads,
                kv_heads=heads, head_dim=hidden // heads, intermediate_size=num("n_inner", 4 * hidden),
                vocab_size=num("vocab_size"), tied_embeddings=tied, mlp=MlpKind.PLAIN, parallel_block=True,
                max_positions=num("n_positions", 0, zero_ok=True), source=source,
            )  # fmt: skip
        else:
            hidden, heads = num("hidden_size"), num("num_attention_heads")
            experts = num("num_local_experts", 0, zero_ok=True) or num("n_routed_experts", 1)
            common: dict[str, Any] = dict(
                name=name, model_type=model_type, hidden_size=hidden, layers=num("num_hidden_layers"), heads=heads,
                intermediate_size=num("intermediate_size"), vocab_size=num("vocab_size"), tied_embeddings=tied,
                experts=experts, experts_per_token=num("num_experts_per_tok", 1) if experts > 1 else 1,
                max_positions=num("max_position_embeddings", 0, zero_ok=True), source=source,
            )  # fmt: skip
            if model_type in MLA_TYPES:
                rope, nope = num("qk_rope_head_dim"), num("qk_nope_head_dim")
                cfg = cls(
                    **common, kv_heads=heads, head_dim=rope + nope, attention=AttentionKind.MLA,
                    kv_lora_rank=num("kv_lora_rank"), q_lora_rank=num("q_lora_rank", 0, zero_ok=True),
                    qk_rope_head_dim=rope, v_head_dim=num("v_head_dim"),
                    shared_experts=num("n_shared_experts", 0, zero_ok=True),
                    moe_intermediate_size=num("moe_intermediate_size", 0, zero_ok=True),
                    dense_layers=num("first_k_dense_replace", 0, zero_ok=True) if experts > 1 else 0,
                )  # fmt: skip
            else:
                kv = num("num_key_value_heads", heads)
                if heads % kv:
                    raise InputError(f"{where}: num_attention_heads {heads} is not a multiple of "
                                     f"num_key_value_heads {kv}")  # fmt: skip
                cfg = cls(**common, kv_heads=kv, head_dim=num("head_dim", hidden // heads))
        if cfg.experts_per_token > cfg.experts:
            raise InputError(f"{where}: num_experts_per_tok {cfg.experts_per_token} exceeds the {cfg.experts} experts")
        if cfg.dense_layers > cfg.layers:
            raise InputError(f"{where}: first_k_dense_replace {cfg.dense_layers} exceeds the {cfg.layers} layers")
        return cfg


def load_config(path: str | Path) -> LlmConfig:
    """A user's config.json, read as plain JSON (nothing downloaded)."""
    p = Path(path)
    d = read_data_file(p, json.loads, "model configuration", "JSON")
    if not isinstance(d, dict):
        raise InputError(f"{p}: a configuration is a JSON object, got {type(d).__name__}")
    return LlmConfig.from_dict(d, p.stem if p.stem != "config" else p.parent.name or "model", str(p))


@functools.cache
def _presets() -> dict[str, LlmConfig]:
    out = {}
    for f in sorted(CONFIGS.glob("*.json")):
        out[f.stem] = LlmConfig.from_dict(json.loads(f.read_text()), f.stem, f"preset {f.name}")
    return out


def llm_names() -> list[str]:
    return list(_presets())


def get_llm(name: str) -> LlmConfig:
    """A built-in preset by name."""
    presets = _presets()
    if name not in presets:
        raise InputError(f"unknown language model {name!r}; known: {', '.join(presets)}")
    return presets[name]
