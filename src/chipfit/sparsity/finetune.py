"""Mask-preserving fine-tuning: the prune-then-retrain recipe of NVIDIA's ASP (prune once, train on
with the masks fixed), run under a chip's training numerics by `chipfit.amp.MixedPrecision`.

The masks are parametrizations (`sparsify_`): the optimizer updates the originals, the forward pass
multiplies them by the masks, so a pruned weight receives no gradient and stays zero whatever the
optimizer does; the N:M pattern the sparse kernels need survives every step.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from chipfit.errors import InputError

__all__ = ["FineTuneResult", "finetune_"]


@dataclass(frozen=True)
class FineTuneResult:
    epochs: int
    steps: int
    skipped_steps: int  # loss-scaling overflows (FP16)
    epoch_loss: tuple[float, ...]  # mean loss per epoch
    device: str  # "" when trained in plain FP32
    precision: str

    def as_dict(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "steps": self.steps, "skipped_steps": self.skipped_steps,
                "epoch_loss": list(self.epoch_loss), "device": self.device or None,
                "precision": self.precision}  # fmt: skip


def finetune_(
    model: nn.Module,
    batches: Sequence[Any] | Callable[[int], Iterable[Any]],
    loss_fn: Callable[[nn.Module, Any], torch.Tensor],
    *,
    epochs: int = 1,
    device: str | None = None,
    precision: str = "fp32",
    lr: float = 1e-3,
    seed: int = 0,
) -> FineTuneResult:
    """Train `model` in place for `epochs` with Adam at `lr`: `batches` (or `batches(epoch)`, e.g. a
    fresh shuffle) and `loss_fn(model, batch) -> loss`. With `device`, forward and backward run under
    its training numerics at `precision` (FP32 master weights, loss scaling: chipfit.amp); without,
    in plain FP32. The model's pruning masks, if any, stay exact."""
    if epochs < 1:
        raise InputError(f"fine-tuning needs at least one epoch, got {epochs}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise InputError("the model has no trainable parameters")
    torch.manual_seed(seed)
    opt = torch.optim.Adam(params, lr=lr)
    losses: list[float] = []
    steps = skipped = 0
    was_training = model.training
    model.train()
    if device is not None:
        from chipfit.amp import MixedPrecision

        mp: Any = MixedPrecision(device, precision, model=model, diagnostics=False)
    try:
        with mp if device is not None else _Plain() as run:
            for epoch in range(epochs):
                total = n = 0.0
                for batch in batches(epoch) if callable(batches) else batches:
                    opt.zero_grad()
                    loss = loss_fn(model, batch)
                    run.backward(loss)
                    took = run.step(opt)
                    steps += 1
                    skipped += not took
                    total += float(loss.detach())
                    n += 1
                if not n:
                    raise InputError("the fine-tuning data is empty")
                losses.append(total / n)
    finally:
        model.train(was_training)
    return FineTuneResult(epochs, steps, skipped, tuple(losses), device or "", precision)


class _Plain:
    """MixedPrecision's backward/step in plain FP32."""

    def __enter__(self) -> _Plain:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def backward(self, loss: torch.Tensor) -> None:
        loss.backward()  # type: ignore[no-untyped-call]

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        optimizer.step()
        return True
