"""The cost of mixed-precision training on a device: time and energy per step (the cost model's
training estimate: forward, backward, optimizer) and the memory of mixed precision.

Memory per parameter (mixed precision with FP32 masters, Micikevicius et al. 2018):
FP32 master 4 B + FP32 gradient 4 B + optimizer state (Adam: two FP32 moments, 8 B; SGD: 0)
+ the low-precision working copy (the compute format's bytes; none when it is FP32 or TF32,
whose working copy is the master itself). Activations: the trace's peak at FP32, scaled by the
compute format's bytes / 4 (assumed: activations are stored in the compute format).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

__all__ = ["TrainingCost", "training_cost"]

OPTIMIZER_STATE_BYTES = {"adam": 8, "sgd": 0}


@dataclass(frozen=True)
class TrainingCost:
    device: str
    precision: str
    format: str
    step_s: float
    energy_j: float
    params: int
    master_bytes: int
    grad_bytes: int
    optimizer_bytes: int
    working_copy_bytes: int
    activation_bytes: int
    capacity_bytes: float

    @property
    def total_bytes(self) -> int:
        return (self.master_bytes + self.grad_bytes + self.optimizer_bytes + self.working_copy_bytes
                + self.activation_bytes)  # fmt: skip

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes, "fits": self.fits}


def training_cost(
    model: nn.Module,
    sample: Sequence[Any],
    device: str,
    precision: str,
    *,
    optimizer: str = "adam",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
) -> TrainingCost:
    """Price one training step of `model` on `sample` (a batch of positional inputs)."""
    from chipfit.cost import estimate, resolve_precision
    from chipfit.formats import get_format
    from chipfit.hardware import get_device
    from chipfit.trace import trace

    if optimizer not in OPTIMIZER_STATE_BYTES:
        raise ValueError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZER_STATE_BYTES)}")
    dev = get_device(device)
    fmt = resolve_precision(dev, precision).format
    tr = trace(model, list(sample), mode="training", loss_fn=loss_fn, optimizer=optimizer)
    est = estimate(tr, dev, precision)
    n = tr.param_count
    bits = float(get_format(fmt).bits)
    low = 0 if fmt in ("float32", "tfloat32") else bits / 8
    act_scale = 1.0 if fmt in ("float32", "tfloat32") else bits / 32
    return TrainingCost(
        device=dev.name, precision=precision, format=fmt, step_s=est.latency_s, energy_j=est.energy_j, params=n,
        master_bytes=4 * n, grad_bytes=4 * n, optimizer_bytes=OPTIMIZER_STATE_BYTES[optimizer] * n,
        working_copy_bytes=int(low * n), activation_bytes=int(tr.footprint.activations_peak_bytes * act_scale),
        capacity_bytes=float(est.capacity_bytes),
    )  # fmt: skip
