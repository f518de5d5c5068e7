"""Language-model configurations: parsing (one parser for presets and user files), derived counts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from torch._subclasses.fake_tensor import FakeTensorMode

from chipfit.errors import InputError
from chipfit.models.transformer import Decoder, DecoderConfig
from chipfit.serve import AttentionKind, LlmConfig, get_llm, llm_names, load_config

LLAMA2_70B = {  # meta-llama/Llama-2-70b-hf config.json fields
    "model_type": "llama", "hidden_size": 8192, "num_hidden_layers": 80, "num_attention_heads": 64,
    "num_key_value_heads": 8, "intermediate_size": 28672, "vocab_size": 32000, "tie_word_embeddings": False,
}  # fmt: skip


def test_a_llama_config_counts_the_parameters_of_the_module_it_describes() -> None:
    # oracle: chipfit's own Llama-style Decoder built from the same shape, its parameters counted
    small = {**LLAMA2_70B, "hidden_size": 256, "num_hidden_layers": 3, "num_attention_heads": 8,
             "num_key_value_heads": 2, "intermediate_size": 704, "vocab_size": 1000}  # fmt: skip
    cfg = LlmConfig.from_dict(small, "small")
    with FakeTensorMode():
        module = Decoder(DecoderConfig(dim=256, layers=3, heads=8, kv_heads=2, ffn=704, vocab=1000))
        count = sum(p.numel() for p in module.parameters())
    assert cfg.params == count
    assert cfg.head_dim == 256 // 8 and cfg.kv_heads == 2
    assert cfg.active_params == cfg.params - 1000 * 256  # a token reads one row of the embedding table


@pytest.mark.parametrize(
    ("name", "total", "active"),
    [
        ("deepseek-v2-lite", 15.7e9, 2.4e9),  # DeepSeek-V2 report, arXiv 2405.04434: 15.7B, 2.4B activated
        ("deepseek-v3", 671e9, 36.7e9),  # DeepSeek-V3 README_WEIGHTS.md: 671B main model, 36.7B activated
    ],
)
def test_mla_and_moe_presets_have_their_published_counts(name: str, total: float, active: float) -> None:
    cfg = get_llm(name)
    assert cfg.params == pytest.approx(total, rel=0.005)  # the figures are printed to three digits
    assert cfg.active_params == pytest.approx(active, rel=0.025)


def test_llama_2_70b_has_its_published_parameter_count() -> None:
    # 68,976,648,192: chipfit.models' decoder-70b (the same shape) carries the published figure
    from chipfit.models import get_model

    assert LlmConfig.from_dict(LLAMA2_70B, "llama-2-70b").params == get_model("decoder-70b").published_params
    assert get_llm("llama-2-70b").params == get_model("decoder-70b").published_params
    assert get_llm("llama-2-7b").params == get_model("decoder-7b").published_params


def test_kv_elements_per_token_by_hand() -> None:
    cfg = LlmConfig.from_dict(LLAMA2_70B, "llama-2-70b")
    assert cfg.kv_elements_per_token == 2 * 80 * 8 * 128  # K and V, 80 layers, 8 KV heads of 128
    mla = LlmConfig.from_dict(
        {"model_type": "deepseek_v2", "hidden_size": 2048, "num_hidden_layers": 27, "num_attention_heads": 16,
         "intermediate_size": 10944, "vocab_size": 102400, "kv_lora_rank": 512, "qk_rope_head_dim": 64,
         "qk_nope_head_dim": 128, "v_head_dim": 128, "n_routed_experts": 64, "num_experts_per_tok": 6,
         "n_shared_experts": 2, "moe_intermediate_size": 1408, "first_k_dense_replace": 1},
        "mla",
    )  # fmt: skip
    assert mla.attention is AttentionKind.MLA and mla.head_dim == 192
    assert mla.kv_elements_per_token == 27 * (512 + 64)  # one latent and one shared rotary key per layer
    assert mla.moe and mla.moe_layers == 26 and mla.active_params < mla.params


def test_a_mixture_of_experts_reads_only_its_experts() -> None:
    moe = LlmConfig.from_dict({**LLAMA2_70B, "model_type": "mixtral", "num_local_experts": 8,
                               "num_experts_per_tok": 2}, "moe")  # fmt: skip
    dense = LlmConfig.from_dict(LLAMA2_70B, "dense")
    expert = 3 * 8192 * 28672  # one gated MLP
    assert moe.params - dense.params == 80 * (7 * expert + 8192 * 8)  # seven more experts and a router
    assert moe.params - moe.active_params == 80 * 6 * expert + 32000 * 8192  # six idle experts; one embedding row


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_type": "bert"}, "model_type 'bert' is not supported; supported: llama"),
        ({"hidden_size": None}, "field 'hidden_size' is missing"),
        ({"num_hidden_layers": "80"}, "field 'num_hidden_layers' must be a positive integer"),
        ({"num_key_value_heads": 7}, "not a multiple of num_key_value_heads 7"),
        ({"tie_word_embeddings": "no"}, "field 'tie_word_embeddings' must be true or false"),
        ({"model_type": "mixtral", "num_local_experts": 2, "num_experts_per_tok": 3}, "exceeds the 2 experts"),
    ],
)
def test_a_malformed_config_names_the_field(change: dict[str, object], message: str) -> None:
    d = {k: v for k, v in {**LLAMA2_70B, **change}.items() if v is not None}
    with pytest.raises(InputError, match=message):
        LlmConfig.from_dict(d, "x", "config.json")


def test_a_config_file_is_read_as_plain_json(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    good = tmp_path / "m" / "config.json"
    good.write_text(json.dumps(LLAMA2_70B))
    cfg = load_config(good)
    assert cfg.name == "m" and cfg.layers == 80 and cfg.source == f"user: {good}"
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_config(bad)
    with pytest.raises(InputError, match="cannot read model configuration"):
        load_config(tmp_path / "missing.json")
    bad.write_text("[1, 2]")
    with pytest.raises(InputError, match="a configuration is a JSON object"):
        load_config(bad)


def test_presets_parse_and_unknown_names_list_them() -> None:
    names = llm_names()
    assert names
    for n in names:
        cfg = get_llm(n)
        assert cfg.name == n and cfg.params > 0 and not cfg.source.startswith("user")
    with pytest.raises(InputError, match="unknown language model 'llama-9'; known: "):
        get_llm("llama-9")
