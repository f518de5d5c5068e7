"""Trained weights of the built-in models that train here (digits-cnn, the serving quality probe): kept in
the chipfit cache directory, written atomically, trained again when missing, damaged or stale."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

import torch
from torch import nn

from chipfit.paths import atomic_path, cache_dir

__all__ = ["cached_weights"]

M = TypeVar("M", bound=nn.Module)


def cached_weights(file: str, build: Callable[[], M], train: Callable[[], M], retrain: bool = False) -> M:
    """The model `build()` makes with the weights cached in `file`, or `train()`'s (and cache them)."""
    path = cache_dir("models") / file
    model = build()
    if path.exists() and not retrain:
        with contextlib.suppress(RuntimeError, OSError, EOFError):  # a damaged or stale file: train again
            model.load_state_dict(torch.load(path, weights_only=True))
            return model.eval()
    model = train()
    with atomic_path(path) as tmp:
        torch.save(model.state_dict(), tmp)
    return model
