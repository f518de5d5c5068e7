"""`plan(...)`: sweep, measure accuracy where there is data, build the Pareto front, recommend."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from chipfit.hardware.device import Device
from chipfit.plan.backend import BACKENDS
from chipfit.plan.plan import OBJECTIVES, Constraints, Plan, pareto_front, recommend
from chipfit.plan.sweep import sweep

__all__ = ["DEFAULT_BATCHES", "DEFAULT_PRECISIONS", "measure_accuracy", "plan"]

DEFAULT_PRECISIONS = ("fp32", "bf16", "fp16", "fp8", "int8")
DEFAULT_BATCHES = (1, 8, 32, 128)


def measure_accuracy(
    model: nn.Module, data: list[Any], metric: str, devices: Sequence[str | Device], precisions: Sequence[str]
) -> tuple[float, dict[tuple[str, str], tuple[float, float]]]:
    """(FP32 metric, {(device, precision): (metric, FP32 - metric)}), emulating each distinct
    numerics policy once (devices that share a policy share the measurement)."""
    from chipfit.emulate import evaluate, policy_for
    from chipfit.hardware import get_device

    pols = {(get_device(d).name, p): policy_for(d, p) for d in devices for p in precisions}

    def key(pol: Any) -> Any:
        return dataclasses.replace(pol, name="", device="", precision="", notes=())

    unique: dict[Any, Any] = {}
    for pol in pols.values():
        unique.setdefault(key(pol), pol)
    ev = evaluate(model, data, metric, policies=list(unique.values()))
    by_key = {k: (row.value, -row.delta) for k, row in zip(unique, ev.rows, strict=True)}
    return ev.fp32, {dp: by_key[key(pol)] for dp, pol in pols.items()}


def plan(
    model: nn.Module,
    inputs: Callable[[int], Sequence[Any]],
    *,
    name: str = "model",
    objective: str = "cost",
    devices: Sequence[str | Device] | None = None,
    precisions: Sequence[str] = DEFAULT_PRECISIONS,
    batches: Sequence[int] = DEFAULT_BATCHES,
    chips: Sequence[int] = (1,),
    training: bool = False,
    constraints: Constraints | None = None,
    eval_data: list[Any] | None = None,
    metric: str = "",
    progress: Callable[[int, int], None] | None = None,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
) -> Plan:
    """Sweep `model` over devices x precisions x batch sizes x chip counts and recommend one.

    inputs(batch) -> the model's positional inputs. eval_data and metric (top1, agreement, cosine):
    accuracy per device x precision by emulation, used by --max-accuracy-drop and the front.
    backend: where the pricing runs, serial | local (a process pool of `workers`) | ray (a Ray
    cluster at `ray_address`; None starts a local one); every backend gives the same plan."""
    from chipfit.hardware import list_devices

    if objective not in OBJECTIVES:
        raise ValueError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if not batches or any(b < 1 for b in batches):
        raise ValueError(f"batch sizes must be positive integers, got {list(batches)}")
    if not chips or any(n < 1 for n in chips):
        raise ValueError(f"chip counts must be positive integers, got {list(chips)}")
    names: list[str | Device] = list(devices) if devices else [d.name for d in list_devices()]
    cons = constraints or Constraints()
    fp32 = None
    accuracy = None
    if eval_data is not None:
        if not metric:
            raise ValueError("eval_data needs a metric: top1, agreement or cosine")
        fp32, accuracy = measure_accuracy(model, eval_data, metric, names, precisions)
    rows = sweep(
        model,
        inputs,
        devices=names,
        precisions=precisions,
        batches=batches,
        chips=chips,
        training=training,
        accuracy=accuracy,
        progress=progress,
        backend=backend,
        workers=workers,
        ray_address=ray_address,
    )
    result = Plan(name, objective, cons, rows, metric=metric, fp32_metric=fp32, training=training)
    result.front = pareto_front(rows)
    result.best, result.reasons = recommend(rows, objective, cons)
    return result
