"""The built-in models' training tasks: what fine-tuning a built-in (after pruning, chipfit sparsify)
trains on and is scored on, kept apart.

- digits-cnn: scikit-learn's digits, cross-entropy on the training split (75 %), top-1 on the
  held-out split (the same split the shipped weights were trained and evaluated on).
- minilm: all-MiniLM-L6-v2 distilled from its dense self: the loss is 1 - cosine between the
  model's sentence embeddings and the dense model's, on three of every four of chipfit's built-in
  sentences; the score is the cosine on the fourth (60 sentences the fine-tuning never sees).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chipfit.errors import InputError

__all__ = ["TASKS", "FineTuneTask", "fine_tune_task"]

Batch = tuple[Any, Any]
HELD_OUT_EVERY = 4  # minilm: every fourth built-in sentence is held out


@dataclass(frozen=True)
class FineTuneTask:
    """A built-in model with its data: the model, the batches to train on (`train(epoch)`, shuffled per
    epoch), the loss, the held-out batches and metric that score it, and calibration inputs (Wanda)."""

    name: str
    model: nn.Module
    train: Callable[[int], Iterable[Batch]]
    loss: Callable[[nn.Module, Batch], torch.Tensor]
    eval_data: list[Batch]
    metric: str
    calibrate: list[Any]
    describe: str  # in words: what it trains on and scores


def _digits(batch: int, seed: int) -> FineTuneTask:
    from chipfit.models.digits import digits_cnn_pretrained, load_digits_data

    d = load_digits_data()

    def train(epoch: int) -> Iterable[Batch]:
        perm = torch.randperm(len(d.x_train), generator=torch.Generator().manual_seed(seed + epoch))
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            yield (d.x_train[idx],), d.y_train[idx]

    def loss(model: nn.Module, b: Batch) -> torch.Tensor:
        (x,), y = b
        return F.cross_entropy(model(x), y)

    evals = [((d.x_test[i : i + batch],), d.y_test[i : i + batch]) for i in range(0, len(d.x_test), batch)]
    calib = [(d.x_train[i : i + batch],) for i in range(0, min(512, len(d.x_train)), batch)]
    return FineTuneTask("digits-cnn", digits_cnn_pretrained(), train, loss, evals, "top1", calib,
                        f"digits: cross-entropy on {len(d.x_train)} training images, top-1 on "
                        f"{len(d.x_test)} held-out")  # fmt: skip


def _minilm(batch: int, seed: int) -> FineTuneTask:
    from chipfit.models import minilm

    model = minilm.minilm_model()
    teacher = copy.deepcopy(model).eval()
    texts = list(minilm.sentences())
    held = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY == HELD_OUT_EVERY - 1]
    train_texts = [t for i, t in enumerate(texts) if i % HELD_OUT_EVERY != HELD_OUT_EVERY - 1]
    train_batches = [minilm.tokenize(train_texts[i : i + batch]) for i in range(0, len(train_texts), batch)]
    with torch.no_grad():
        targets = [teacher(*b) for b in train_batches]

    def train(epoch: int) -> Iterable[Batch]:
        order = torch.randperm(len(train_batches), generator=torch.Generator().manual_seed(seed + epoch))
        for i in order.tolist():
            yield train_batches[i], targets[i]

    def loss(m: nn.Module, b: Batch) -> torch.Tensor:
        inputs, target = b
        return (1 - F.cosine_similarity(m(*inputs), target, dim=-1)).mean()

    evals = [(minilm.tokenize(held[i : i + batch]), None) for i in range(0, len(held), batch)]
    return FineTuneTask("minilm", model, train, loss, evals, "cosine", [b for b in train_batches[:4]],
                        f"minilm: distilled from the dense model on {len(train_texts)} built-in sentences, "
                        f"cosine to it on {len(held)} held out")  # fmt: skip


TASKS: dict[str, Callable[[int, int], FineTuneTask]] = {"digits-cnn": _digits, "minilm": _minilm}


def fine_tune_task(name: str, batch: int = 32, seed: int = 0) -> FineTuneTask:
    """The built-in `name`'s task (its trained weights, a fresh copy each call)."""
    if name not in TASKS:
        raise InputError(f"no built-in training task for {name!r}; built-in tasks: {', '.join(TASKS)}")
    if batch < 1:
        raise InputError(f"batch must be >= 1, got {batch}")
    return TASKS[name](batch, seed)
