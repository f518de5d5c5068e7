"""Serving memory: KV bytes per token, pages, and how many sequences fit, derived by hand."""

from __future__ import annotations

import math

import pytest

from chipfit.errors import InputError
from chipfit.serve import PAGE_TOKENS, LlmConfig, kv_bytes_per_token, serving_memory

CFG = LlmConfig.from_dict(
    {"model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
     "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 32000},
    "llama-2-70b",
)  # fmt: skip


def test_kv_bytes_per_token_by_hand() -> None:
    # 2 (K, V) x 80 layers x 8 KV heads x 128 x 2 bytes (BF16) = 327,680 bytes: 320 KiB a token
    assert kv_bytes_per_token(CFG, "bfloat16") == 327_680
    assert kv_bytes_per_token(CFG, "float8_e4m3fn") == 163_840
    # TP 8: one KV head per chip; TP 16: more ranks than KV heads, so each head is held twice
    assert kv_bytes_per_token(CFG, "bfloat16", tp=8) == 2 * 80 * 1 * 128 * 2
    assert kv_bytes_per_token(CFG, "bfloat16", tp=16) == 2 * 80 * 1 * 128 * 2
    # PP 4: each stage holds 20 layers
    assert kv_bytes_per_token(CFG, "bfloat16", pp=4) == 327_680 / 4


def test_max_concurrency_by_hand() -> None:
    mem = serving_memory(CFG, 80e9, "float8_e4m3fn", "bfloat16", tp=8, token_budget=2048)
    weights = CFG.params / 8  # FP8: one byte a weight, an eighth on each chip
    assert mem.weights_bytes == pytest.approx(weights)
    acts = 2048 * (3 * 8192 + 2 * 28672 / 8) * 2 + 16 * 32000 / 8 * 4  # BF16 transients, FP32 logits
    assert mem.activations_bytes == pytest.approx(acts)
    budget = 80e9 * 0.9 - weights - acts
    assert mem.kv_budget_bytes == pytest.approx(budget)
    per_page = PAGE_TOKENS * 40_960  # 16 tokens of one chip's KV share
    assert mem.kv_pages == math.floor(budget / per_page)
    # a 3,000-token sequence takes 188 pages (2,992 tokens fill 187, 8 more start the 188th)
    assert mem.max_sequences(3000) == mem.kv_pages // 188
    assert mem.max_sequences(3008) == mem.kv_pages // 188 and mem.max_sequences(3009) == mem.kv_pages // 189


def test_weights_that_do_not_fit_leave_no_pages() -> None:
    mem = serving_memory(CFG, 80e9, "bfloat16", "bfloat16")  # 138 GB of BF16 weights on one 80 GB chip
    assert mem.kv_budget_bytes < 0 and mem.kv_pages == 0 and not mem.fits and mem.max_sequences(100) == 0


def test_bad_arguments_are_named() -> None:
    with pytest.raises(InputError, match="tp and pp must be >= 1"):
        serving_memory(CFG, 80e9, "bfloat16", "bfloat16", tp=0)
    with pytest.raises(InputError, match="utilization is a fraction"):
        serving_memory(CFG, 80e9, "bfloat16", "bfloat16", utilization=1.5)
    with pytest.raises(InputError, match="at least one token"):
        serving_memory(CFG, 80e9, "int8", "int8", tp=8).max_sequences(0)
