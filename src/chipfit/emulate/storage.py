"""Where emulated values live: storage-format tags on tensors, and the cache of parameters'
rounded values.

Values are float32 tensors holding exactly representable values of their storage format; the
format is a tag kept beside the tensor (weakly: a tensor that dies drops its tag), so the user's
code and dtypes are unchanged. A parameter's rounded (and scaled) operands are computed once and
kept until the parameter changes (its version counter moves, as an optimizer step moves it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.weak import WeakTensorKeyDictionary

__all__ = ["FP32", "Storage"]

FP32 = "float32"


class Storage:
    """Tags (tensor -> storage format name) and the per-parameter cache of rounded values."""

    def __init__(self) -> None:
        self.tags: WeakTensorKeyDictionary = WeakTensorKeyDictionary()
        self._cache: WeakTensorKeyDictionary = WeakTensorKeyDictionary()  # parameter -> {key: (version, value)}

    def format_of(self, t: torch.Tensor) -> str:
        """The format `t` is stored in (FP32 unless tagged)."""
        got = self.tags.get(t)
        return FP32 if got is None else str(got)

    def cached(self, param: nn.Parameter, key: Any, compute: Callable[[], Any]) -> Any:
        """compute() for a parameter, kept per key until the parameter changes (its version)."""
        entry = self._cache.get(param)
        if entry is None:
            entry = self._cache[param] = {}
        hit = entry.get(key)
        if hit is not None and hit[0] == param._version:
            return hit[1]
        res = compute()
        entry[key] = (param._version, res)
        return res
