"""What pruning costs in accuracy and buys in speed: `study` prunes a copy of a model, optionally
fine-tunes it with its masks kept, scores dense, pruned and fine-tuned in FP32 and under a chip's
numerics, and prices dense against sparse on the chip (`chipfit sparsify`, benchmarks/sparsity.py).
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from chipfit.cost.sparse import SparseLayers
from chipfit.errors import InputError
from chipfit.hardware.sparsity import Pattern
from chipfit.sparsity.finetune import FineTuneResult, finetune_
from chipfit.sparsity.prune import Method, SparsityReport, sparsify_

__all__ = ["SparsityStudy", "SpeedUp", "StudyRow", "speedup", "study"]


@dataclass(frozen=True)
class StudyRow:
    stage: str  # dense | pruned | fine-tuned
    numerics: str  # fp32, or the device x precision policy it ran under
    value: float  # the metric
    drop: float  # the dense FP32 value - this value


@dataclass(frozen=True)
class SpeedUp:
    """Dense and sparse step time of one batch on one device at one precision."""

    device: str
    precision: str
    batch: int
    execution: str
    dense_s: float
    sparse_s: float
    sparse_gemms: int
    covered_gemms: int
    note: str

    @property
    def ratio(self) -> float:
        return self.dense_s / self.sparse_s if self.sparse_s else float("nan")

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "precision": self.precision, "batch": self.batch, "execution": self.execution,
                "dense_s": self.dense_s, "sparse_s": self.sparse_s, "speedup": self.ratio,
                "sparse_gemms": self.sparse_gemms, "pruned_gemms": self.covered_gemms, "note": self.note}  # fmt: skip


@dataclass
class SparsityStudy:
    metric: str
    report: SparsityReport
    rows: list[StudyRow] = field(default_factory=list)
    finetune: FineTuneResult | None = None
    speed: SpeedUp | None = None
    models: dict[str, nn.Module] = field(default_factory=dict, repr=False)  # pruned, fine-tuned

    @property
    def final(self) -> nn.Module:
        """The model to deploy: the fine-tuned one where there is one, else the pruned (masks on)."""
        return self.models.get("fine-tuned", self.models["pruned"])

    def value(self, stage: str, numerics: str = "fp32") -> float | None:
        return next((r.value for r in self.rows if r.stage == stage and r.numerics == numerics), None)

    def as_dict(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "sparsity": self.report.as_dict(),
            "accuracy": [vars(r) for r in self.rows],
            "finetune": self.finetune.as_dict() if self.finetune is not None else None,
            "speed": self.speed.as_dict() if self.speed is not None else None,
        }


def speedup(
    model: nn.Module,
    inputs: Sequence[Any],
    layers: SparseLayers,
    device: str,
    precision: str,
    *,
    execution: str | None = None,
) -> SpeedUp:
    """Price one step of `model` on `inputs` dense and with `layers` pruned (the dense model is traced:
    the pruned one has the same shapes and module names)."""
    from chipfit.cost import estimate
    from chipfit.trace import trace

    tr = trace(model, list(inputs), mode="inference")
    dense = estimate(tr, device, precision, execution=execution)
    sparse = estimate(tr, device, precision, execution=execution, sparsity=layers)
    return SpeedUp(dense.device, precision, tr.batch, dense.execution, dense.latency_s, sparse.latency_s,
                   sparse.sparse_gemms, sparse.sparse_covered, sparse.sparsity_note())  # fmt: skip


def study(
    model: nn.Module,
    eval_data: list[Any],
    metric: str,
    pattern: Pattern | str = "2:4",
    method: Method | str = Method.MAGNITUDE,
    *,
    calibrate: Iterable[Any] | Callable[[], Any] | None = None,
    train: Sequence[Any] | Callable[[int], Iterable[Any]] | None = None,
    loss: Callable[[nn.Module, Any], torch.Tensor] | None = None,
    epochs: int = 0,
    lr: float = 1e-4,
    device: str | None = None,
    precision: str | None = None,
    policies: Sequence[Any] = (),
    dense: Iterable[str] | None = None,
    keep_ends_dense: bool = True,
    min_params: int = 256,
    speed_inputs: Sequence[Any] | None = None,
    execution: str | None = None,
    seed: int = 0,
) -> SparsityStudy:
    """Prune a copy of `model` (`sparsify_` arguments), fine-tune a copy of that for `epochs` on `train`
    with `loss` (under `device`'s numerics at `precision` when both are given), and score all three on
    `eval_data` with `metric`: in FP32, and under `device` x `precision` plus any extra `policies`.
    With `device`, `precision` and `speed_inputs` (one batch), also the step time dense vs sparse
    (under `execution`: None is the device's own stack, as `estimate`)."""
    from chipfit.emulate import evaluate, policy_for

    if epochs < 0:
        raise InputError(f"fine-tuning epochs must be >= 0, got {epochs}")
    if epochs and (train is None or loss is None):
        raise InputError("fine-tuning needs training batches and a loss (train=, loss=)")
    pruned = copy.deepcopy(model)
    report = sparsify_(pruned, pattern, method, calibrate=calibrate, dense=dense, keep_ends_dense=keep_ends_dense,
                       min_params=min_params)  # fmt: skip
    variants: dict[str, nn.Module] = {"pruned": pruned}
    tuned = None
    if epochs and train is not None and loss is not None:
        ft = copy.deepcopy(pruned)
        tuned = finetune_(ft, train, loss, epochs=epochs, device=device, precision=precision or "fp32", lr=lr,
                          seed=seed)  # fmt: skip
        variants["fine-tuned"] = ft
    pols = [*([policy_for(device, precision)] if device and precision else []), *policies]
    ev = evaluate(model, eval_data, metric, policies=pols, variants=variants, variant_policies=True)
    out = SparsityStudy(metric, report, finetune=tuned, models=variants)
    out.rows.append(StudyRow("dense", "fp32", ev.fp32, 0.0))
    for r in ev.rows:
        stage, numerics = "dense", r.policy
        if r.policy.startswith("variant:"):
            _, stage, *rest = r.policy.split(":", 2)
            numerics = rest[0] if rest else "fp32"
        out.rows.append(StudyRow(stage, numerics, r.value, -r.delta))
    if device and precision and speed_inputs is not None:
        out.speed = speedup(model, speed_inputs, report.pruned, device, precision, execution=execution)
    return out
