"""Serving language models: architectures from Hugging Face-style configurations (`config`) and what a
deployment holds in memory (`memory`)."""

from chipfit.serve.config import AttentionKind, LlmConfig, MlpKind, get_llm, llm_names, load_config
from chipfit.serve.memory import PAGE_TOKENS, ServingMemory, kv_bytes_per_token, serving_memory

__all__ = [
    "PAGE_TOKENS",
    "AttentionKind",
    "LlmConfig",
    "MlpKind",
    "ServingMemory",
    "get_llm",
    "kv_bytes_per_token",
    "llm_names",
    "load_config",
    "serving_memory",
]
