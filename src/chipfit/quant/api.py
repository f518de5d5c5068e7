"""`quantize_`: quantize a model in place (PTQ), `prepare_qat` for quantization-aware training.

Flow: wrap every target module (Linear/Conv) in a `QuantLayer` with its config's specs; with
SmoothQuant, a first calibration pass records each input channel's max |x| and the per-channel
smoothing factors s_j = max|X_j|^alpha / max|W_j|^(1 - alpha) are fixed; then a calibration pass
feeds the activation observers; static ranges are fixed; weight ranges are taken; with bias
correction each layer's bias absorbs the mean output shift (W - W_q) E[x] of its quantized
weight on the calibration inputs.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from chipfit.errors import InputError
from chipfit.quant.modules import QuantLayer
from chipfit.quant.spec import DEFAULT_RECIPE, QuantConfig, get_recipe

__all__ = ["Calibration", "layers", "only", "prepare_qat", "quantize_", "run_calibration"]

Calibration = Iterable[Any] | Callable[[nn.Module], Any]


def _resolve(config: QuantConfig | str | None) -> QuantConfig:
    if config is None:
        return get_recipe(DEFAULT_RECIPE)
    if isinstance(config, str):
        return get_recipe(config)
    if not isinstance(config, QuantConfig):
        raise TypeError(f"config must be a QuantConfig or a recipe name, not {type(config).__name__}")
    return config


def layers(model: nn.Module) -> dict[str, QuantLayer]:
    """The model's quantized layers by module name (the wrapped layer's original name)."""
    return {name: m for name, m in model.named_modules() if isinstance(m, QuantLayer)}


def _wrap(model: nn.Module, config: QuantConfig) -> int:
    count = 0
    for name, module in list(model.named_modules()):
        if isinstance(module, QuantLayer) or type(module).__name__ not in config.targets:
            continue
        if any(isinstance(p, QuantLayer) for p in _parents(model, name)):
            continue
        specs = config.for_module(name)
        if specs is None:
            continue
        w, a = specs
        if w is None and a is None:
            continue
        _set(model, name, QuantLayer(module, w, a))
        count += 1
    return count


def _parents(model: nn.Module, name: str) -> list[nn.Module]:
    out, m = [], model
    for part in name.split(".")[:-1]:
        m = getattr(m, part)
        out.append(m)
    return out


def _set(model: nn.Module, name: str, new: nn.Module) -> None:
    *path, last = name.split(".")
    parent = model
    for part in path:
        parent = getattr(parent, part)
    setattr(parent, last, new)


def run_calibration(model: nn.Module, calibrate: Calibration) -> int:
    """Feed calibration data: a callable taking the model, or an iterable of batches (a tensor,
    a tuple/list of positional inputs, or a dict of keyword inputs). Returns the batch count."""
    was_training = model.training
    model.eval()
    n = 0
    try:
        with torch.no_grad():
            if callable(calibrate) and not isinstance(calibrate, (torch.Tensor, list, tuple)):
                calibrate(model)
                n = 1
            else:
                for batch in calibrate:
                    if isinstance(batch, torch.Tensor):
                        model(batch)
                    elif isinstance(batch, dict):
                        model(**batch)
                    elif isinstance(batch, (tuple, list)):
                        model(*batch)
                    else:
                        raise TypeError(
                            f"a calibration batch must be a tensor, tuple/list or dict, not {type(batch).__name__}"
                        )
                    n += 1
    finally:
        model.train(was_training)
    return n


def _smoothquant(qls: dict[str, QuantLayer], alpha: float) -> None:
    for ql in qls.values():
        if ql.in_absmax is None or ql.aq is None or not isinstance(ql.layer, nn.Linear):
            continue
        w = ql.layer.weight.detach()
        w_max = w.abs().amax(dim=0).clamp(min=1e-5)
        x_max = ql.in_absmax.clamp(min=1e-5)
        ql.smooth = (x_max.pow(alpha) / w_max.pow(1 - alpha)).clamp(min=1e-5)
        ql.invalidate()


def _bias_correction(qls: dict[str, QuantLayer]) -> None:
    for ql in qls.values():
        if ql.wq is None or ql.in_sum is None or not ql.in_count:
            continue
        layer = ql.layer
        mean_x = ql.in_sum / ql.in_count
        with torch.no_grad():
            w_fp = layer.weight * (ql._shape_w(ql.smooth) if ql.smooth is not None else 1.0)
            dw = (w_fp - ql.quantized_weight()).reshape(w_fp.shape[0], w_fp.shape[1], -1).sum(-1)
            if ql.smooth is not None:
                mean_x = mean_x / ql.smooth
            shift = dw @ mean_x
            if layer.bias is None:
                layer.bias = nn.Parameter(shift.clone())
            else:
                layer.bias += shift
        ql.invalidate()


def quantize_(model: nn.Module, config: QuantConfig | str | None = None, *,
              calibrate: Calibration | None = None) -> nn.Module:  # fmt: skip
    """Quantize `model` in place and return it.

    config: a QuantConfig, a recipe name (see `chipfit.quant.RECIPES`) or None for the default
    INT8 recipe (per-channel weights, dynamic per-token activations; `int8-entropy` is
    TensorRT's static recipe).
    calibrate: batches, or a callable that runs the model on calibration data (e.g. a
    sentence-transformers `encode`). Needed when activations have static ranges, and for
    SmoothQuant and bias correction."""
    cfg = _resolve(config)
    if not _wrap(model, cfg):
        raise InputError(f"no module of types {', '.join(cfg.targets)} to quantize (after overrides)")
    qls = layers(model)
    static = [ql for ql in qls.values() if ql.aq is not None and not ql.aq.spec.dynamic and ql.aq.spec.kind != "block"]
    needs_data = bool(static) or cfg.smoothquant_alpha is not None or cfg.bias_correction
    if needs_data and calibrate is None:
        why = "static activation ranges" if static else "SmoothQuant/bias correction"
        raise InputError(
            f"config {cfg.name!r} needs calibration data for {why}: pass calibrate=<batches or callable>, "
            "or use a dynamic or weight-only recipe (int8, int8-weight-only, int4-weight-only, w4a8)"
        )
    if calibrate is not None and not callable(calibrate):
        calibrate = list(calibrate)  # it is read more than once
    smooth = cfg.smoothquant_alpha is not None
    for ql in qls.values():
        ql.collect_stats = calibrate is not None and (smooth or cfg.bias_correction)
        for tq in (ql.wq, ql.aq):
            if tq is not None:
                tq.enabled = False
    if calibrate is not None:
        if smooth:  # a first pass for the channel maxima the smoothing factors need
            run_calibration(model, calibrate)
            for ql in qls.values():
                ql.collect_stats = False
            _smoothquant(qls, cfg.smoothquant_alpha or 0.0)
        if static or not smooth:
            for ql in static:
                assert ql.aq is not None
                ql.aq.observing = True
            if static or cfg.bias_correction:
                run_calibration(model, calibrate)  # FP32 model: observers and input statistics
            for ql in static:
                assert ql.aq is not None
                ql.aq.finish_calibration()
        for ql in qls.values():
            ql.collect_stats = False
    for ql in qls.values():
        if ql.wq is not None:
            w = ql.layer.weight.detach()
            ql.wq.weight_range(w * ql._shape_w(ql.smooth) if ql.smooth is not None else w)
            ql.wq.enabled = True
        if ql.aq is not None:
            ql.aq.enabled = True
        ql.invalidate()
    if cfg.bias_correction:
        _bias_correction(qls)
    return model


def prepare_qat(model: nn.Module, config: QuantConfig | str | None = None, *,
                calibrate: Calibration | None = None) -> nn.Module:  # fmt: skip
    """quantize_ for training: fake quantization with straight-through gradients; specs with
    learnable=True train their scales with LSQ. Fine-tune as usual afterwards."""
    quantize_(model, config, calibrate=calibrate)
    for ql in layers(model).values():
        for tq in (ql.wq, ql.aq):
            if tq is not None and tq.spec.learnable:
                tq.enable_lsq()
    return model


@contextmanager
def only(model: nn.Module, names: Iterable[str] | None) -> Iterator[None]:
    """Within the block only the named quantized layers quantize (None: none of them)."""
    qls = layers(model)
    keep = set(names or ())
    unknown = keep - set(qls)
    if unknown:
        raise InputError(f"unknown quantized layers {sorted(unknown)}; known: {', '.join(qls)}")
    saved = {n: (ql.wq.enabled if ql.wq else None, ql.aq.enabled if ql.aq else None) for n, ql in qls.items()}
    try:
        for n, ql in qls.items():
            for tq in (ql.wq, ql.aq):
                if tq is not None:
                    tq.enabled = n in keep
            ql.invalidate()
        yield
    finally:
        for n, ql in qls.items():
            we, ae = saved[n]
            if ql.wq is not None and we is not None:
                ql.wq.enabled = we
            if ql.aq is not None and ae is not None:
                ql.aq.enabled = ae
            ql.invalidate()
