"""Per-layer sensitivity and hardware-aware mixed precision.

`sensitivity`: for each quantized layer, the SQNR of its output when only it is quantized (its
input taken from the FP32 model) and the end-metric drop when only it is quantized; ranked.

`search`: every target layer picks a level from `levels` (cheapest first, e.g. int4 -> int8 ->
bf16). All layers start at the cheapest level the device runs; while the metric misses the
budget, the layer that recovers the most metric (its measured sensitivity at its current level)
per unit of added latency (or energy) moves up one level; a move that adds nothing goes first.
Latency and energy come from the cost model: the FP32 trace priced at each level's precision on
the device, per layer (its module path), the rest of the model at the highest level. Assumed: a
layer's cost at a level is that of the same ops at that precision (quantize/dequantize ops are
not priced).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from chipfit.errors import InputError
from chipfit.hardware.device import Device
from chipfit.quant.api import Calibration, _set, layers, only, quantize_
from chipfit.quant.spec import QuantConfig, get_recipe
from chipfit.report.text import MetricUnit

__all__ = ["LEVELS", "LayerSensitivity", "SearchResult", "search", "sensitivity"]

# level name -> (recipe, cost-model precision); None recipe = left in floating point
SEARCH_OBJECTIVES = ("latency", "energy")

LEVELS: dict[str, tuple[str | None, str]] = {
    "int4": ("int4", "int4"),
    "int8": ("int8", "int8"),
    "fp8": ("fp8", "fp8"),
    "bf16": (None, "bf16"),
    "fp16": (None, "fp16"),
}

Metric = Callable[[nn.Module], float]


@dataclass(frozen=True)
class LayerSensitivity:
    name: str
    sqnr_db: float
    metric: float
    drop: float  # reference metric - metric with only this layer quantized

    def as_dict(self, unit: MetricUnit | None = None) -> dict[str, Any]:
        """With a unit (report.text.metric_unit), the metric and its drop in the shown unit, named so."""
        if unit is None:
            return {"layer": self.name, "sqnr_db": self.sqnr_db, "metric": self.metric, "drop": self.drop}
        return {"layer": self.name, "sqnr_db": self.sqnr_db, unit.key("accuracy"): unit.shown(self.metric),
                unit.key("drop", drop=True): unit.shown(self.drop)}  # fmt: skip


def _sqnr(ref: torch.Tensor, out: torch.Tensor) -> float:
    noise = float(((out.double() - ref.double()) ** 2).sum())
    sig = float((ref.double() ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(sig / noise) if sig else -math.inf


def sensitivity(model: nn.Module, metric: Metric, sample: Sequence[Any] | None = None) -> list[LayerSensitivity]:
    """Rank a quantized model's layers by what quantizing each alone costs (largest drop first).

    metric(model) -> float, higher is better (evaluated with no layer, then one layer, quantized).
    sample: positional inputs of one batch for the SQNR (None: SQNR is not measured)."""
    qls = layers(model)
    if not qls:
        raise InputError("the model has no quantized layers: run quantize_ first")
    with only(model, None):
        ref_metric = metric(model)
        inputs: dict[str, torch.Tensor] = {}
        outputs: dict[str, torch.Tensor] = {}
        if sample is not None:
            hooks = [ql.register_forward_hook(_keep(name, inputs, outputs)) for name, ql in qls.items()]
            try:
                with torch.no_grad():
                    model(*sample)
            finally:
                for h in hooks:
                    h.remove()
    rows = []
    for name, ql in qls.items():
        with only(model, [name]):
            value = metric(model)
            sq = math.nan
            if name in inputs:
                with torch.no_grad():
                    sq = _sqnr(outputs[name], ql(inputs[name]))
        rows.append(LayerSensitivity(name, sq, value, ref_metric - value))
    return sorted(rows, key=lambda r: -r.drop)


def _keep(name: str, ins: dict[str, torch.Tensor], outs: dict[str, torch.Tensor]) -> Callable[..., None]:
    def hook(_m: nn.Module, args: tuple[Any, ...], out: torch.Tensor) -> None:
        ins[name], outs[name] = args[0].detach(), out.detach()

    return hook


@dataclass
class SearchResult:
    device: str
    budget: float
    choice: dict[str, str]  # layer -> level
    metric: float
    latency_s: float
    energy_j: float
    reference: dict[str, dict[str, float]]  # "all-<level>" -> {metric, latency_s, energy_j}
    steps: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = None
    objective: str = "latency"

    @property
    def met(self) -> bool:
        """Whether the choice reaches the budget (when no choice can, the search ends with every
        layer at the highest level and says so)."""
        return self.metric >= self.budget

    def speedup_vs(self, level: str) -> float:
        return self.reference[f"all-{level}"]["latency_s"] / self.latency_s

    def energy_saving_vs(self, level: str) -> float:
        return 1 - self.energy_j / self.reference[f"all-{level}"]["energy_j"]

    def as_dict(self, unit: MetricUnit | None = None) -> dict[str, Any]:
        """With a unit (report.text.metric_unit), every metric value in the shown unit, named so."""

        def conv(d: dict[str, Any]) -> dict[str, Any]:
            if unit is None:
                return d
            return {(unit.key("accuracy") if k == "metric" else unit.key("budget") if k == "budget" else k):
                    (unit.shown(v) if k in ("metric", "budget") else v) for k, v in d.items()}  # fmt: skip

        return conv({
            "device": self.device,
            "objective": self.objective,
            "budget": self.budget,
            "met": self.met,
            "metric": self.metric,
            "latency_s": self.latency_s,
            "energy_j": self.energy_j,
            "choice": self.choice,
            "reference": {k: conv(v) for k, v in self.reference.items()},
            "steps": [conv(s) for s in self.steps],
        })  # fmt: skip


def _layer_costs(
    model: nn.Module, sample: Sequence[Any], device: str | Device, precisions: list[str], names: list[str]
) -> dict[str, tuple[float, float, dict[str, tuple[float, float]]]]:
    """precision -> (model latency, model energy, layer -> (latency, energy))."""
    from chipfit.cost import estimate
    from chipfit.trace import trace

    tr = trace(model, list(sample))
    out = {}
    for p in precisions:
        est = estimate(tr, device, p)
        per: dict[str, tuple[float, float]] = {}
        for n in names:
            rows = [r for r in est.rows if r.module == n or r.module.startswith(n + ".")]
            per[n] = (sum(r.time_s for r in rows), sum(r.energy_j for r in rows))
        out[p] = (est.latency_s, est.energy_j, per)
    return out


def search(
    model: nn.Module,
    metric: Metric,
    *,
    device: str | Device,
    budget: float,
    sample: Sequence[Any],
    calibrate: Calibration | None = None,
    levels: Sequence[str] = ("int4", "int8", "bf16"),
    targets: tuple[str, ...] = ("Linear", "Conv1d", "Conv2d"),
    objective: str = "latency",
) -> SearchResult:
    """Choose per-layer levels meeting metric >= budget at the least estimated latency (or energy,
    objective="energy") on `device`.

    model: the FP32 model (left unchanged; the result carries the mixed model).
    levels: cheapest first, from LEVELS; the last is the fallback every layer can take.
    sample: one batch of positional inputs (for tracing the cost and for SQNR)."""
    if objective not in SEARCH_OBJECTIVES:
        raise InputError(f"unknown objective {objective!r}; known: {', '.join(SEARCH_OBJECTIVES)}")
    which = SEARCH_OBJECTIVES.index(objective)
    bad = [lv for lv in levels if lv not in LEVELS]
    if bad or not levels:
        raise InputError(f"unknown levels {bad}; known: {', '.join(LEVELS)}")
    from chipfit.cost import resolve_precision
    from chipfit.hardware import get_device

    dev = get_device(device)
    device = dev.name
    usable = []
    for lv in levels:
        try:
            resolve_precision(dev, LEVELS[lv][1])
            usable.append(lv)
        except ValueError:
            continue
    if not usable:
        raise InputError(f"{device} runs none of the levels {', '.join(levels)}")
    top = usable[-1]
    names = [n for n, m in model.named_modules() if type(m).__name__ in targets]
    costs = _layer_costs(model, sample, dev, [LEVELS[lv][1] for lv in usable], names)
    variants: dict[str, nn.Module] = {}
    for lv in usable:
        recipe = LEVELS[lv][0]
        if recipe is None:
            variants[lv] = model
            continue
        m = copy.deepcopy(model)
        cfg: QuantConfig = get_recipe(recipe).with_(targets=targets)
        quantize_(m, cfg, calibrate=calibrate)
        variants[lv] = m

    def mixed(choice: dict[str, str]) -> nn.Module:
        m = copy.deepcopy(model)
        for n, lv in choice.items():
            src = variants[lv]
            layer = src.get_submodule(n)
            _set(m, n, copy.deepcopy(layer))
        return m

    def priced(choice: dict[str, str]) -> tuple[float, float]:
        lat, en, per = costs[LEVELS[top][1]]
        for n, lv in choice.items():
            t_top, e_top = per[n]
            t, e = costs[LEVELS[lv][1]][2][n]
            lat, en = lat - t_top + t, en - e_top + e
        return lat, en

    reference = {}
    for lv in usable:
        all_lv = {n: lv for n in names}
        lat, en = priced(all_lv)
        reference[f"all-{lv}"] = {"metric": metric(variants[lv]), "latency_s": lat, "energy_j": en}
    # sensitivity of each layer at each quantized level: the metric drop when it alone is quantized
    drops: dict[str, dict[str, float]] = {}
    for lv in usable[:-1]:
        rows = sensitivity(variants[lv], metric)
        drops[lv] = {r.name: r.drop for r in rows}
    choice = {n: usable[0] for n in names}
    steps = []
    current = mixed(choice)
    value = metric(current)
    steps.append({"moved": "", "metric": value, "latency_s": priced(choice)[0]})
    while value < budget:
        movable = [n for n in names if choice[n] != top]
        if not movable:
            break

        def gain(n: str) -> float:
            """Metric recovered per unit of added cost when layer n moves up one level."""
            cur, nxt = choice[n], usable[usable.index(choice[n]) + 1]
            added = costs[LEVELS[nxt][1]][2][n][which] - costs[LEVELS[cur][1]][2][n][which]
            drop = drops.get(cur, {}).get(n, 0.0)
            return math.inf if added <= 0 else drop / added

        worst = max(movable, key=gain)
        choice[worst] = usable[usable.index(choice[worst]) + 1]
        current = mixed(choice)
        value = metric(current)
        steps.append({"moved": f"{worst} -> {choice[worst]}", "metric": value, "latency_s": priced(choice)[0]})
    lat, en = priced(choice)

    # the greedy walk assumes each level up costs more; where the cost model says otherwise (a tiny model
    # whose kernels are latency-bound at every level), a uniform level that meets the budget can beat it
    def uniform_cost(lv: str) -> float:
        return float(reference[f"all-{lv}"][("latency_s", "energy_j")[which]])

    meeting = [lv for lv in usable if reference[f"all-{lv}"]["metric"] >= budget]
    best = min(meeting, key=uniform_cost, default=None)
    if best is not None and (value < budget or uniform_cost(best) < (lat, en)[which]):
        choice = {n: best for n in names}
        current = mixed(choice)
        value, lat, en = (reference[f"all-{best}"][k] for k in ("metric", "latency_s", "energy_j"))
        steps.append({"moved": f"every layer -> {best} (costs less)", "metric": value, "latency_s": lat})
    return SearchResult(device, budget, choice, value, lat, en, reference, steps, current, objective)
