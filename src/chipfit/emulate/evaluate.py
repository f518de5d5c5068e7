"""`evaluate`: a model's metric on real data per device x precision, next to FP32.

Metrics (higher is better):
- top1: fraction of argmax predictions equal to the targets.
- agreement: fraction of argmax predictions equal to FP32's.
- cosine: mean cosine similarity of each output row to FP32's output row.
- or a callable (outputs, targets) -> float, averaged over batches weighted by batch size.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from chipfit.emulate.mode import emulate
from chipfit.emulate.policy import NumericsPolicy, policy_for
from chipfit.errors import InputError
from chipfit.report.text import metric_unit

__all__ = ["METRICS", "EvalRow", "Evaluation", "evaluate"]

MetricFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor], float]


def _top1(out: torch.Tensor, target: torch.Tensor | None, _ref: torch.Tensor) -> float:
    if target is None:
        raise InputError("metric top1 needs targets in the data: (inputs, target) pairs")
    classes = out.shape[-1]
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise InputError(
            f"targets run from {int(target.min())} to {int(target.max())}, but the model has {classes} classes "
            f"(0..{classes - 1}): check --eval-data's 'targets'"
        )
    return float((out.argmax(-1) == target).float().mean())


def _agreement(out: torch.Tensor, _target: torch.Tensor | None, ref: torch.Tensor) -> float:
    return float((out.argmax(-1) == ref.argmax(-1)).float().mean())


def _cosine(out: torch.Tensor, _target: torch.Tensor | None, ref: torch.Tensor) -> float:
    o, r = out.double().flatten(1), ref.double().flatten(1)
    return float(torch.nn.functional.cosine_similarity(o, r, dim=1, eps=1e-30).mean())


METRICS: dict[str, MetricFn] = {"top1": _top1, "agreement": _agreement, "cosine": _cosine}


@dataclass(frozen=True)
class EvalRow:
    device: str
    precision: str
    policy: str
    value: float
    delta: float  # value - FP32 value
    fallback_ops: int
    matrix_fallback: str
    seconds: float
    notes: tuple[str, ...] = ()

    def as_dict(self, metric: str = "") -> dict[str, Any]:
        """JSON: the metric in its shown unit, named in the keys (`accuracy_percent` and
        `drop_points` for top-1: report.text.metric_unit); the drop is FP32 minus this row."""
        u = metric_unit(metric)
        return {
            "device": self.device,
            "precision": self.precision,
            "policy": self.policy,
            u.key("accuracy"): u.shown(self.value),
            u.key("drop", drop=True): u.shown(-self.delta),
            "fallback_ops": self.fallback_ops,
            "matrix_fallback": self.matrix_fallback or None,
            "seconds": self.seconds,
            "notes": list(self.notes),
        }


@dataclass
class Evaluation:
    metric: str
    fp32: float
    items: int
    rows: list[EvalRow] = field(default_factory=list)
    fp32_seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        u = metric_unit(self.metric)
        return {
            "metric": self.metric,
            "items": self.items,
            u.key("fp32_accuracy"): u.shown(self.fp32),
            "fp32_seconds": self.fp32_seconds,
            "rows": [r.as_dict(self.metric) for r in self.rows],
        }


def _call(model: nn.Module, inputs: Any) -> torch.Tensor:
    out = model(*inputs) if isinstance(inputs, (tuple, list)) else model(inputs)
    if isinstance(out, (tuple, list)):
        out = out[0]
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"the model must return a tensor (or a tuple whose first item is one), got {type(out)}")
    return out.detach()


def _reference(model: nn.Module, batches: list[Any]) -> list[torch.Tensor]:
    """The FP32 outputs. The user's model failing on the user's data is the user's to fix (the
    shapes do not match, the model raises): an InputError naming the batch and its shapes."""
    out = []
    for i, (inp, _t) in enumerate(batches):
        try:
            out.append(_call(model, inp))
        except Exception as e:  # any failure of the user's own model on the user's data
            items = inp if isinstance(inp, (tuple, list)) else (inp,)
            shapes = ", ".join(str(list(t.shape)) if isinstance(t, torch.Tensor) else type(t).__name__ for t in items)
            raise InputError(
                f"the model fails on the evaluation data in plain FP32 (batch {i + 1}, inputs {shapes}): "
                f"{type(e).__name__}: {e}"
            ) from e
    return out


def _score(metric: MetricFn, outs: list[torch.Tensor], batches: list[Any], refs: list[torch.Tensor]) -> float:
    total = n = 0.0
    for out, (_inp, target), ref in zip(outs, batches, refs, strict=True):
        k = out.shape[0]
        total += metric(out, target, ref) * k
        n += k
    return total / n if n else float("nan")


def evaluate(
    model: nn.Module,
    data: Iterable[tuple[Any, torch.Tensor | None]],
    metric: str | MetricFn,
    devices: Sequence[str] = (),
    precisions: Sequence[str] = (),
    *,
    policies: Sequence[NumericsPolicy] = (),
    accumulate: str | None = None,
    variants: Mapping[str, nn.Module] | None = None,
    variant_policies: bool | Sequence[NumericsPolicy] = False,
) -> Evaluation:
    """The metric for every device x precision (plus any explicit policies), next to FP32.

    data: (inputs, target) batches; inputs is a tensor or a tuple of tensors, target may be None
      for metrics against FP32 (cosine, agreement).
    variants: name -> another model (e.g. a quantized copy), run in FP32 arithmetic and scored
      against the same FP32 references; one row each after the policies (device "", policy
      "variant:NAME"), and with `variant_policies` one more per policy, run under it (policy
      "variant:NAME:POLICY"): a pruned or quantized copy under a chip's numerics. True: the same
      policies as the model; a sequence: those (for the variants only).
    """
    if isinstance(metric, str):
        if metric not in METRICS:
            raise InputError(f"unknown metric {metric!r}; known: {', '.join(METRICS)} (or pass a callable)")
        fn, name = METRICS[metric], metric
    elif callable(metric):
        fn, name = (lambda o, t, _r: float(metric(o, t))), getattr(metric, "__name__", "custom")  # type: ignore[call-arg]
    else:
        raise TypeError("metric must be a name or a callable (outputs, targets) -> float")
    batches = list(data)
    if not batches:
        raise InputError("data is empty")
    jobs = [policy_for(d, p, accumulate=accumulate) for d in devices for p in precisions] + list(policies)
    vjobs = jobs if variant_policies is True else list(variant_policies or ())
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            t0 = time.perf_counter()
            refs = _reference(model, batches)
            fp32_s = time.perf_counter() - t0
            fp32 = _score(fn, refs, batches, refs)
            ev = Evaluation(name, fp32, sum(r.shape[0] for r in refs), fp32_seconds=fp32_s)
            for pol in jobs:
                t0 = time.perf_counter()
                with emulate(policy=pol) as run:
                    outs = [_call(model, inp) for inp, _t in batches]
                value = _score(fn, outs, batches, refs)
                ev.rows.append(
                    EvalRow(
                        pol.device or "custom", pol.precision or pol.name, pol.name, value, value - fp32,
                        sum(r.calls for r in run.fallbacks()), pol.matrix_fallback,
                        time.perf_counter() - t0, (*pol.notes, *run.notes),
                    )
                )  # fmt: skip
            for vname, other in (variants or {}).items():
                vpol: NumericsPolicy | None
                for vpol in [None, *vjobs]:
                    t0 = time.perf_counter()
                    other_training = other.training
                    other.eval()
                    try:
                        with emulate(policy=vpol) if vpol is not None else contextlib.nullcontext() as vrun:
                            outs = [_call(other, inp) for inp, _t in batches]
                    finally:
                        other.train(other_training)
                    value = _score(fn, outs, batches, refs)
                    dt = time.perf_counter() - t0
                    if vpol is None or vrun is None:
                        ev.rows.append(EvalRow("", vname, f"variant:{vname}", value, value - fp32, 0, "", dt, ()))
                    else:
                        ev.rows.append(
                            EvalRow(
                                vpol.device or "custom", vpol.precision or vpol.name, f"variant:{vname}:{vpol.name}",
                                value, value - fp32, sum(r.calls for r in vrun.fallbacks()), vpol.matrix_fallback, dt,
                                (*vpol.notes, *vrun.notes),
                            )
                        )  # fmt: skip
    finally:
        model.train(was_training)
    return ev
