"""What a serving precision costs in quality, measured: the perplexity of chipfit's small decoder language
model (`chipfit.models.tinylm`) on held-out text, with a chip's numerics emulated (`chipfit.emulate`:
weights and activations at the precision's formats, the chip's accumulation and scaling) and the KV cache
stored at its format, against the same model in FP32.

The KV cache's formats: bf16 and fp16 by rounding; fp8 (E4M3) with a scale of 1, vLLM's default when a
checkpoint carries no calibrated KV scales; int8 with a symmetric scale per token and head (absmax / 127,
assumed). The probe is a 3-layer byte-level model: its perplexity change measures a format's rounding on
a real trained language model, not the served model's own change, which the planner says in words.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import nn

from chipfit.emulate import emulate, policy_for
from chipfit.emulate.scaling import round_to
from chipfit.models.transformer import Attention, Decoder
from chipfit.serve.step import kv_format

__all__ = ["Quality", "kv_rounding", "measure_quality", "perplexity"]


def _int8_per_token_head(x: torch.Tensor) -> torch.Tensor:
    s = x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-12) / 127
    return torch.round(x / s).clamp(-127, 127) * s


def _rounder(kv_precision: str) -> Callable[[torch.Tensor], torch.Tensor] | None:
    fmt = kv_format(kv_precision)  # names the valid choices
    if fmt == "float32":
        return None
    if fmt == "int8":
        return _int8_per_token_head
    return functools.partial(round_to, fmt=fmt)


@contextmanager
def kv_rounding(model: nn.Module, kv_precision: str) -> Iterator[None]:
    """Inside: every attention layer of `model` reads its keys and values at the KV cache's format."""
    fn = _rounder(kv_precision)
    layers = [m for m in model.modules() if isinstance(m, Attention)]
    for m in layers:
        m.cache_round = fn
    try:
        yield
    finally:
        for m in layers:
            m.cache_round = None


def perplexity(model: Decoder, data: torch.Tensor, device: str | None = None, precision: str | None = None,
               kv_precision: str = "fp32") -> float:  # fmt: skip
    """exp(mean next-byte cross-entropy) over `data` (sequences of CONTEXT + 1 ids); with `device` and
    `precision`, under that chip's numerics."""
    x, y = data[:, :-1], data[:, 1:]
    with torch.no_grad(), kv_rounding(model, kv_precision):
        if device is None:
            logits = model(x)
        else:
            with emulate(device, precision):
                logits = model(x)
        nll = nn.functional.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    return math.exp(float(nll))


@dataclass(frozen=True)
class Quality:
    device: str
    precision: str
    kv_precision: str
    perplexity_fp32: float
    perplexity: float

    @property
    def change(self) -> float:
        """Relative perplexity change against FP32 (+0.01: 1 % worse)."""
        return self.perplexity / self.perplexity_fp32 - 1

    def describe(self) -> str:
        return (f"measured on chipfit's small byte-level decoder (tinylm, trained here): perplexity "
                f"{self.perplexity:.4f} at {self.precision} with a {self.kv_precision} KV cache on "
                f"{self.device}'s numerics, against {self.perplexity_fp32:.4f} in FP32 ({self.change:+.2%}); a "
                "probe of the formats' rounding, not the served model's own quality")  # fmt: skip


@functools.cache
def _model_and_data() -> tuple[Decoder, torch.Tensor, float]:
    from chipfit.models.tinylm import held_out, tinylm_pretrained

    model, data = tinylm_pretrained(), held_out()
    return model, data, perplexity(model, data)


@functools.cache
def _measured(policy_key: str, device: str, precision: str, kv_precision: str) -> float:
    model, data, _ = _model_and_data()
    return perplexity(model, data, device, precision, kv_precision)


def measure_quality(device: str, precision: str, kv_precision: str = "bf16") -> Quality:
    """The probe's perplexity at `device`'s `precision` with the KV cache at `kv_precision` (memoized per
    distinct policy: chips with the same numerics share the measurement)."""
    pol = policy_for(device, precision)
    key = repr({k: v for k, v in pol.describe().items() if k not in ("name", "device", "notes")})
    _, _, base = _model_and_data()
    return Quality(device, precision, kv_precision, base, _measured(key, device, precision, kv_precision))
