"""`plan(...)`: sweep, measure accuracy where there is data, build the Pareto front, recommend."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from torch import nn

from chipfit.cost import Estimate
from chipfit.cost.sparse import SparseLayers
from chipfit.errors import InputError
from chipfit.hardware.device import Device
from chipfit.hardware.pricing import Pricing
from chipfit.plan.backend import BACKENDS
from chipfit.plan.plan import OBJECTIVES, Constraints, Plan, PlanError, pareto_front, recommend
from chipfit.plan.sweep import Measured, PlanRow, offered, sweep
from chipfit.quant.spec import QuantConfig

__all__ = ["DEFAULT_BATCHES", "DEFAULT_PRECISIONS", "measure_accuracy", "measure_sparse_accuracy", "plan"]

DEFAULT_PRECISIONS = ("fp32", "bf16", "fp16", "fp8", "int8", "w8a16", "w4a16")
DEFAULT_BATCHES = (1, 8, 32, 128)


def measure_accuracy(
    model: nn.Module,
    data: list[Any],
    metric: str,
    devices: Sequence[str | Device],
    precisions: Sequence[str],
    *,
    quant: QuantConfig | str | None = None,
    calibrate: Any = None,
) -> tuple[float, dict[tuple[str, str], Measured]]:
    """(FP32 metric, {(device name, precision): Measured}), emulating each distinct numerics policy
    once (devices that share a policy share the measurement).

    quant: a QuantConfig or recipe name. Where a device runs a precision's matrix ops natively in
    the config's formats (weights, and activations when the config quantizes them), the accuracy
    is that of a copy of the model quantized with it (`chipfit.quant.quantize_`, calibrated on
    `calibrate`) instead of the emulation policy's generic scaling: the plan uses the
    quantization the user will deploy."""
    import copy

    from chipfit.emulate import evaluate, policy_for
    from chipfit.hardware import get_device

    pols = {(get_device(d).name, p): policy_for(d, p) for d in devices for p in precisions}
    key = _policy_key
    unique: dict[Any, Any] = {}
    for pol in pols.values():
        unique.setdefault(key(pol), pol)
    variants: dict[str, nn.Module] = {}
    cfg = None
    if quant is not None:
        from chipfit.quant import get_recipe, quantize_

        cfg = get_recipe(quant) if isinstance(quant, str) else quant
        variants[cfg.name] = quantize_(copy.deepcopy(model), cfg, calibrate=calibrate)
    ev = evaluate(model, data, metric, policies=list(unique.values()), variants=variants)
    by_key = {k: Measured(row.value, -row.delta) for k, row in zip(unique, ev.rows[: len(unique)], strict=True)}
    out = {dp: by_key[key(pol)] for dp, pol in pols.items()}
    if cfg is not None:
        row = ev.rows[-1]
        q = Measured(row.value, -row.delta, f"quant:{cfg.name}")
        for dp, pol in pols.items():
            if _runs_config(pol, cfg):
                out[dp] = q
    return ev.fp32, out


def measure_sparse_accuracy(
    model: nn.Module,
    pruned: nn.Module,
    data: list[Any],
    metric: str,
    devices: Sequence[str | Device],
    precisions: Sequence[str],
    source: str,
) -> dict[tuple[str, str], Measured]:
    """{(device name, precision): Measured} of `pruned` (a pruned copy of `model`) under each distinct
    numerics policy, scored against `model`'s FP32 outputs; drops are from `model`'s FP32 value."""
    from chipfit.emulate import evaluate, policy_for
    from chipfit.hardware import get_device

    pols = {(get_device(d).name, p): policy_for(d, p) for d in devices for p in precisions}
    unique: dict[Any, Any] = {}
    for pol in pols.values():
        unique.setdefault(_policy_key(pol), pol)
    ev = evaluate(model, data, metric, variants={"pruned": pruned}, variant_policies=list(unique.values()))
    under = ev.rows[1:]  # the variant in FP32 first, then under each policy
    by_key = {k: Measured(r.value, ev.fp32 - r.value, source) for k, r in zip(unique, under, strict=True)}
    return {dp: by_key[_policy_key(pol)] for dp, pol in pols.items()}


def _policy_key(pol: Any) -> Any:
    """What makes two devices' policies the same numerics (their names aside)."""
    return dataclasses.replace(pol, name="", device="", precision="", notes=())


def _runs_config(pol: Any, cfg: QuantConfig) -> bool:
    """Does this policy's matrix unit take the config's formats natively?"""
    if pol.matrix_fallback:
        return False
    if cfg.weights is not None and pol.b.format != cfg.weights.format:
        return False
    return cfg.activations is None or pol.a.format == cfg.activations.format


def _runs_somewhere(
    devices: Sequence[str | Device], precision: str, *, training: bool = False, allow_fallback: bool = False
) -> bool:
    from chipfit.hardware import get_device

    return any(offered(get_device(d), precision, training=training, allow_fallback=allow_fallback) for d in devices)


def _check_precisions_run(
    devices: Sequence[str | Device], precisions: Sequence[str], *, training: bool = False, allow_fallback: bool = False
) -> None:
    """A precision no chosen device runs on its matrix unit (or, for training, trains in) is an error
    naming the devices that do."""
    from chipfit.hardware import get_device, list_devices
    from chipfit.hardware.precision import resolve_precision

    chosen = [get_device(d) for d in devices]  # unknown names fail here, listing the catalog
    for p in precisions:
        resolve_precision(chosen[0], p)  # unknown precisions fail here, listing the known ones
        if _runs_somewhere(chosen, p, training=training, allow_fallback=allow_fallback):
            continue
        runs = [d.name for d in list_devices() if _runs_somewhere([d], p, training=training)]
        verb = "trains in" if training else "runs"
        where = f"catalog devices that do: {', '.join(runs)}" if runs else "no catalog device does"
        fix = "" if training else ", or pass allow_fallback (--allow-fallback) to price it on vector units and hosts"
        raise PlanError(f"no chosen device {verb} {p}" + ("" if training else " on its matrix unit")
                        + f" ({where}); drop it from the precisions{fix}")  # fmt: skip


def _estimate_of(
    model: nn.Module,
    inputs: Callable[[int], Sequence[Any]],
    row: PlanRow,
    training: bool,
    optimizer: str,
    pricing: Pricing | None = None,
    sparsity: SparseLayers | None = None,
) -> Estimate:
    """One chip's step of `row` priced op by op (data parallel: the per-chip batch)."""
    from chipfit.cost import estimate
    from chipfit.trace import trace

    per_chip = row.batch // row.chips if row.strategy == "data" else row.batch
    tr = trace(model, list(inputs(per_chip)), mode="training" if training else "inference", optimizer=optimizer)
    return estimate(tr, row.device, row.precision, pricing=pricing, execution=row.execution, sparsity=sparsity)


def _sparsity(
    model: nn.Module, pattern: str | None, method: str, training: bool, eval_data: list[Any] | None, metric: str,
    devices: Sequence[str | Device], precisions: Sequence[str], calibrate: Any,
) -> tuple[SparseLayers | None, dict[tuple[str, str], Measured]]:  # fmt: skip
    """The layers plan --sparsity prunes, and the pruned copy's accuracy where there is data."""
    if pattern is None:
        return None, {}
    import copy

    from chipfit.sparsity import Method, Pattern, sparse_layers, sparsify_

    if training:
        raise PlanError("--sparsity prices inference: sparse kernels run a pruned model's forward GEMMs")
    pat = Pattern.parse(pattern)
    if method not in tuple(Method):
        raise InputError(f"unknown sparsity method {method!r}; known: {', '.join(Method)}")
    layers = sparse_layers(model, pat)
    if not layers.layers:
        raise PlanError(
            f"no layer of the model can be pruned {pat.describe()} (chipfit.sparsity.dense_layers says why)"
        )
    if eval_data is None:
        return layers, {}
    pruned = copy.deepcopy(model)
    calib = calibrate if calibrate is not None else [inputs for inputs, _ in eval_data[:2]]
    sparsify_(pruned, pat, method, calibrate=calib if method == Method.WANDA else None)
    src = f"pruned:{pat}:{method}"
    from chipfit.hardware import get_device
    from chipfit.hardware.precision import resolve_precision

    # only where a sparse row comes back: a device with sparse math for the pattern at the precision's format
    runs = [(d, p) for d in map(get_device, devices) for p in precisions
            if d.sparse_speedup(resolve_precision(d, p).format, pat) > 1]  # fmt: skip
    if not runs:
        return layers, {}
    devs = list(dict.fromkeys(d.name for d, _ in runs))  # one call: its policies deduplicated across devices
    precs = list(dict.fromkeys(p for _, p in runs))
    got = measure_sparse_accuracy(model, pruned, eval_data, metric, devs, precs, src)
    return layers, {(d.name, p): got[(d.name, p)] for d, p in runs}


def _sparsity_reason(
    layers: SparseLayers, rows: Sequence[PlanRow], devices: Sequence[str | Device], method: str, measured: bool
) -> str:
    """Which devices ran the pruned model sparse, and which have no sparse math for it."""
    from chipfit.hardware import get_device

    pat = layers.pattern.describe()
    ran = sorted({r.device for r in rows if r.sparsity})
    without = sorted(d.name for d in map(get_device, devices) if d.name not in ran)
    acc = (f"their accuracy is that of the model pruned by {method}, not fine-tuned" if measured
           else "no accuracy measured for them")  # fmt: skip
    out = (f"Sparsity {pat} ({len(layers.layers)} layers pruned; docs/sparsity.md): sparse rows on "
           f"{', '.join(ran) or 'none'}; {acc}.")  # fmt: skip
    if without:
        out += (
            f" No {pat} sparse math at the swept formats (a pruned model runs at its dense cost): {', '.join(without)}."
        )
    return out


def _execution_reason(rows: Sequence[PlanRow], execution: str | None) -> str:
    """One line: which stack priced which devices (and that eager rows pay one kernel per op)."""
    from chipfit.hardware.stacks import get_stack

    by: dict[str, list[str]] = {}
    for r in rows:
        names = by.setdefault(r.execution, [])
        if r.device not in names:
            names.append(r.device)
    parts = [f"{get_stack(s).display_name} ({', '.join(d)})" for s, d in sorted(by.items())]
    how = "each device's own stack" if execution is None else f"--execution {execution}"
    return f"Execution ({how}; docs/cost.md, Execution): {'; '.join(parts)}."


def _unjoined_reasons(result: Plan, devices: Sequence[str | Device], chips: Sequence[int], training: bool) -> None:
    """Say which chip counts a device's fabric cannot join (tensor and pipeline parallel; for training
    data parallel too), instead of leaving the rows out without a word."""
    from chipfit.cost.collectives import Fabric
    from chipfit.hardware import get_device

    kinds = "parallel configurations" if training else "tensor- or pipeline-parallel configurations"
    grouped: dict[tuple[str, str], list[str]] = {}  # (chip counts, why) -> devices: one line each
    for d in map(get_device, devices):
        fab = Fabric.of(d)
        out = [(n, fab.reach(n)) for n in sorted(set(chips))]
        out = [(n, r) for n, r in out if r]
        if out:
            counts = ", ".join(str(n) for n, _ in out)
            grouped.setdefault((counts, out[-1][1]), []).append(d.name)
    for (counts, why), names in grouped.items():
        result.reasons.append(f"No {kinds} on {counts} chips ({why}): {', '.join(names)}.")


def plan(
    model: nn.Module,
    inputs: Callable[[int], Sequence[Any]],
    *,
    name: str = "model",
    objective: str = "cost",
    devices: Sequence[str | Device] | None = None,
    precisions: Sequence[str] | None = None,
    batches: Sequence[int] = DEFAULT_BATCHES,
    chips: Sequence[int] = (1,),
    training: bool = False,
    optimizer: str = "adam",
    allow_fallback: bool = False,
    constraints: Constraints | None = None,
    eval_data: list[Any] | None = None,
    metric: str = "",
    quant: QuantConfig | str | None = None,
    calibrate: Any = None,
    progress: Callable[[int, int], None] | None = None,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    pricing: Pricing | None = None,
    execution: str | None = None,
    sparsity: str | None = None,
    sparsity_method: str = "magnitude",
) -> Plan:
    """Sweep `model` over devices x precisions x batch sizes x chip counts and recommend one.

    inputs(batch) -> the model's positional inputs. eval_data and metric (top1, agreement, cosine):
    accuracy per device x precision by emulation, used by --max-accuracy-drop and the front.
    quant (a QuantConfig or recipe name) and calibrate: where a device runs the config's formats,
    the accuracy is the quantized model's (see measure_accuracy).
    backend: where the pricing runs, serial | local (a process pool of `workers`) | ray (a Ray
    cluster at `ray_address`; None starts a local one); every backend gives the same plan.
    pricing: the price basis (or fallback order of bases), TCO assumptions and user prices; the plan
    says which basis and dates it used, warns when bases mix, and lists the devices left unpriced.
    execution: None prices each device under its own stack (catalog support.stack/execution); eager,
    compiled or a stack name (hardware/stacks.toml) prices every device that way. The reasons say which.
    sparsity: an N:M pattern ("2:4"): each configuration whose device has sparse math for the pattern at
    its format comes back a second time with the model pruned (`chipfit.sparsity`: the default dense
    layers, by `sparsity_method`, Wanda calibrated on `calibrate` or the first evaluation batches),
    its accuracy that of a pruned copy where there is eval_data; the reasons name the devices without."""
    from chipfit.hardware import list_devices

    if objective not in OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    if backend not in BACKENDS:
        raise InputError(f"unknown backend {backend!r}; known: {', '.join(BACKENDS)}")
    if not batches or any(b < 1 for b in batches):
        raise InputError(f"batch sizes must be positive integers, got {list(batches)}")
    if not chips or any(n < 1 for n in chips):
        raise InputError(f"chip counts must be positive integers, got {list(chips)}")
    names: list[str | Device] = list(devices) if devices else [d.name for d in list_devices()]
    if training:
        from chipfit.hardware import get_device

        if all(get_device(d).training is None for d in names):
            trainers = ", ".join(d.name for d in list_devices() if d.training is not None)
            raise PlanError(f"no chosen device has a training stack in the catalog; devices that train: {trainers}")
    if precisions is None:  # the defaults: those some chosen device runs (trains in, for training)
        precisions = [
            p for p in DEFAULT_PRECISIONS
            if _runs_somewhere(names, p, training=training, allow_fallback=allow_fallback)
        ]  # fmt: skip
    elif training or not allow_fallback:
        _check_precisions_run(names, precisions, training=training, allow_fallback=allow_fallback)
    cons = constraints or Constraints()
    if metric and cons.metric != metric:
        cons = dataclasses.replace(cons, metric=metric)  # drops are in the metric's units
    fp32 = None
    accuracy = None
    if eval_data is not None:
        if not metric:
            raise InputError("eval_data needs a metric: top1, agreement or cosine")
        fp32, accuracy = measure_accuracy(model, eval_data, metric, names, precisions, quant=quant, calibrate=calibrate)
    elif quant is not None:
        raise InputError("quant needs eval_data and a metric: its accuracy is measured, like emulation's")
    layers, sparse_acc = _sparsity(model, sparsity, sparsity_method, training, eval_data, metric, names, precisions,
                                   calibrate)  # fmt: skip
    rows = sweep(
        model,
        inputs,
        devices=names,
        precisions=precisions,
        batches=batches,
        chips=chips,
        training=training,
        optimizer=optimizer,
        accuracy=accuracy,
        allow_fallback=allow_fallback,
        progress=progress,
        backend=backend,
        workers=workers,
        ray_address=ray_address,
        pricing=pricing,
        execution=execution,
        sparsity=layers,
        sparse_accuracy=sparse_acc,
    )
    from chipfit.hardware import get_device

    summary = (pricing or Pricing()).summary([get_device(d) for d in names])
    result = Plan(name, objective, cons, rows, metric=metric, fp32_metric=fp32, training=training, pricing=summary)
    result.front = pareto_front(rows, cons)
    result.best, result.reasons = recommend(rows, objective, cons, summary)
    _unjoined_reasons(result, names, chips, training)
    result.reasons.append(_execution_reason(rows, execution))
    if layers is not None:
        result.reasons.append(_sparsity_reason(layers, rows, names, sparsity_method, bool(sparse_acc)))
        best = result.best
        if best is not None and best.sparsity:
            acc = ("its accuracy is that of the pruned model without fine-tuning" if best.accuracy is not None
                   else "its accuracy cost is NOT measured here")  # fmt: skip
            result.reasons.insert(1, f"The recommendation runs the model pruned {best.sparsity}: {acc}; "
                                  "measure it, and fine-tune with the masks kept, before deploying "
                                  "(chipfit sparsify).")  # fmt: skip
    assumed = sorted(d.name for d in map(get_device, names) if d.energy_calibration.assumed)
    if assumed:
        result.reasons.append(f"Energy rests on an assumed power figure (no published TDP) for: {', '.join(assumed)}.")
    if training:
        from chipfit.hardware import get_device

        untrained = sorted(d.name for d in map(get_device, names) if d.training is None)
        if untrained:
            result.reasons.append(
                f"Not offered for training (no training stack in the catalog): {', '.join(untrained)}."
            )
    if result.best is not None:
        best_sparse = layers if result.best.sparsity else None
        result.best_estimate = _estimate_of(model, inputs, result.best, training, optimizer, pricing, best_sparse)
    if accuracy is not None and quant is not None:
        from chipfit.plan.html import drop_text

        quantized = {k: m for k, m in accuracy.items() if m.source != "emulation"}
        if quantized:
            m = next(iter(quantized.values()))
            precs = sorted({p for _, p in quantized})
            result.reasons.append(
                f"Accuracy of {', '.join(precs)} on {len({d for d, _ in quantized})} devices is that of the model "
                f"quantized with {m.source.removeprefix('quant:')} (drop {drop_text(m.drop, metric)}"
                f"{' points' if metric in ('top1', 'agreement') else ''}); the rest is by emulation."
            )
        else:
            name = quant if isinstance(quant, str) else quant.name
            result.reasons.append(f"No swept device runs {name}'s formats natively: accuracy is by emulation.")
    return result
