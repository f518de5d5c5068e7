"""The cost of mixed-precision training on a device: time and energy per step (the cost model's
training estimate: forward, backward, optimizer) and the memory of mixed precision.

Memory comes from `chipfit.cost.memory.step_memory`, the one footprint estimate and plan use too:
FP32 master 4 B + FP32 gradient 4 B + optimizer state (Adam: two FP32 moments, 8 B; SGD: 0) per
parameter, + the low-precision working copy (the compute format's storage bytes; none when it
is stored as FP32, as TF32 is), + activations, KV cache and inputs at the compute format.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from chipfit.errors import InputError
from chipfit.hardware.device import Device

__all__ = ["TrainingCost", "training_cost"]


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
    inputs_bytes: int  # inputs and KV cache at the compute format
    capacity_bytes: float

    @property
    def total_bytes(self) -> int:
        return (self.master_bytes + self.grad_bytes + self.optimizer_bytes + self.working_copy_bytes
                + self.activation_bytes + self.inputs_bytes)  # fmt: skip

    @property
    def fits(self) -> bool:
        return self.total_bytes <= self.capacity_bytes

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "total_bytes": self.total_bytes, "fits": self.fits}


def training_cost(
    model: nn.Module,
    sample: Sequence[Any],
    device: str | Device,
    precision: str,
    *,
    optimizer: str = "adam",
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
) -> TrainingCost:
    """Price one training step of `model` on `sample` (a batch of positional inputs)."""
    from chipfit.cost import estimate, resolve_precision
    from chipfit.hardware import get_device
    from chipfit.trace import trace
    from chipfit.trace.capture import OPTIMIZERS

    if optimizer not in OPTIMIZERS:
        raise InputError(f"unknown optimizer {optimizer!r}; known: {', '.join(OPTIMIZERS)}")
    dev = get_device(device)
    fmt = resolve_precision(dev, precision).format
    tr = trace(model, list(sample), mode="training", loss_fn=loss_fn, optimizer=optimizer)
    est = estimate(tr, dev, precision)
    mem = est.memory
    return TrainingCost(
        device=dev.name, precision=precision, format=fmt, step_s=est.latency_s, energy_j=est.energy_j,
        params=tr.param_count, master_bytes=int(mem.master_bytes), grad_bytes=int(mem.grads_bytes),
        optimizer_bytes=int(mem.optimizer_bytes), working_copy_bytes=int(mem.weights_bytes),
        activation_bytes=int(mem.activations_bytes), inputs_bytes=int(mem.kv_cache_bytes + mem.inputs_bytes),
        capacity_bytes=float(est.capacity_bytes),
    )  # fmt: skip
