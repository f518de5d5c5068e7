"""Fake quantization in the model: `TensorQuant` (one tensor's quantizer) and `QuantLayer` (a
Linear/Conv with quantized weights and input).

Values stay float32 and hold exactly what the quantized tensor would decode to. Gradients pass
straight through the rounding (STE); with `learnable=True` the scale is trained with LSQ
(Esser et al. 2020: d/ds of round(clamp(x/s)) * s, gradient scaled by 1/sqrt(N * qmax)).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chipfit.emulate.scaling import amax_over
from chipfit.errors import InputError
from chipfit.formats import IntFormat, get_format, quantize
from chipfit.quant.calibrate import Observer
from chipfit.quant.spec import QuantSpec

__all__ = ["QuantLayer", "TensorQuant", "fake_quant"]


def _ste(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """q forward, identity backward."""
    return x + (q - x).detach()


def _int_bounds(spec: QuantSpec) -> tuple[float, float]:
    f = get_format(spec.format)
    assert isinstance(f, IntFormat)
    return float(f.min), float(f.max)


def fake_quant(
    x: torch.Tensor,
    spec: QuantSpec,
    amax: torch.Tensor | None = None,
    lo: torch.Tensor | None = None,
    hi: torch.Tensor | None = None,
    k_axis: int = -1,
) -> torch.Tensor:
    """x rounded as `spec` says, with a symmetric amax (broadcasting over x) or an affine (lo, hi)."""
    kind = spec.kind
    if kind == "block":
        return _ste(x, quantize(x.detach(), spec.format, axis=k_axis))
    if kind == "int" and not spec.symmetric:
        if lo is None or hi is None:
            raise InputError("affine quantization needs lo and hi")
        qmin, qmax = _int_bounds(spec)
        levels = qmax - qmin
        lo_, hi_ = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)  # the range holds zero exactly
        s = torch.where(hi_ > lo_, (hi_ - lo_) / levels, torch.ones_like(hi_))
        zp = torch.clamp(torch.round(-lo_ / s) + qmin, qmin, qmax)
        q = (torch.clamp(torch.round(x.detach() / s) + zp, qmin, qmax) - zp) * s
        return _ste(x, q)
    if amax is None:
        raise InputError("symmetric quantization needs amax")
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    if kind == "int":
        qmin, qmax = _int_bounds(spec)
        s = safe / qmax
        return _ste(x, torch.clamp(torch.round(x.detach() / s), -qmax, qmax) * s)
    fmax = float(get_format(spec.format).max)
    s = safe / fmax
    return _ste(x, quantize(x.detach() / s, spec.format, overflow="saturate") * s)


class TensorQuant(nn.Module):
    """The quantizer of one tensor. Activations: observe calibration batches, then quantize
    with the calibrated range (or a dynamic one). Weights: ranges come from the weight itself."""

    amax: torch.Tensor | None
    lo: torch.Tensor | None
    hi: torch.Tensor | None

    def __init__(self, spec: QuantSpec, role: str, *, channel_axis: int = 0, k_axis: int = -1) -> None:
        super().__init__()
        self.spec = spec
        self.role = role
        self.channel_axis = channel_axis
        self.k_axis = k_axis
        self.observing = False
        self.enabled = True
        self.observer = Observer(spec.calibrator, percentile=spec.percentile, bits=int(spec.bits),
                                 fake_quant=self._np_fake_quant)  # fmt: skip
        self.register_buffer("amax", None)
        self.register_buffer("lo", None)
        self.register_buffer("hi", None)
        self.log_scale: nn.Parameter | None = None  # LSQ

    @property
    def calibrated(self) -> bool:
        return self.amax is not None or self.lo is not None

    def _np_fake_quant(self, centers: np.ndarray, amax: float) -> np.ndarray:
        t = torch.as_tensor(centers, dtype=torch.float32)
        return fake_quant(t, self.spec, amax=torch.tensor(amax)).double().numpy()

    def finish_calibration(self) -> None:
        """Fix the static range from what the observer saw."""
        self.observing = False
        if self.spec.dynamic or self.spec.kind == "block":
            return
        if self.spec.symmetric:
            self.amax = torch.tensor(self.observer.amax())
        else:
            lo, hi = self.observer.range()
            self.lo, self.hi = torch.tensor(lo), torch.tensor(hi)

    def weight_range(self, w: torch.Tensor) -> None:
        """Per-tensor / per-channel / per-group range of a weight (min-max, or the spec's calibrator
        per tensor)."""
        s = self.spec
        if s.kind == "block":
            return
        g = s.granularity
        if g == "tensor" and s.calibrator not in ("minmax", "moving-minmax"):
            obs = Observer(s.calibrator, percentile=s.percentile, bits=int(s.bits), fake_quant=self._np_fake_quant)
            obs.observe(w)
            if s.symmetric:
                self.amax = torch.tensor(obs.amax())
            else:
                lo, hi = obs.range()
                self.lo, self.hi = torch.tensor(lo), torch.tensor(hi)
            return
        if g == "group":
            return  # computed on the fly from the grouped weight
        keep = None if g == "tensor" else self.channel_axis
        if s.symmetric:
            self.amax = amax_over(w, keep)
        else:
            d = [i for i in range(w.dim()) if keep is None or i != keep % w.dim()]
            self.lo = w.detach().amin(dim=d, keepdim=keep is not None)
            self.hi = w.detach().amax(dim=d, keepdim=keep is not None)

    def enable_lsq(self) -> None:
        """Turn the symmetric scale into a trained parameter (LSQ), initialised from the range."""
        if self.spec.kind != "int" or not self.spec.symmetric:
            raise InputError("LSQ needs a symmetric integer spec")
        if self.amax is None:
            raise InputError("calibrate (or set the weight range) before enabling LSQ")
        _, qmax = _int_bounds(self.spec)
        self.log_scale = nn.Parameter(torch.log(torch.clamp(self.amax, min=1e-12) / qmax))

    def _lsq(self, x: torch.Tensor) -> torch.Tensor:
        assert self.log_scale is not None
        _qmin, qmax = _int_bounds(self.spec)
        g = 1.0 / math.sqrt(max(x.numel(), 1) * qmax)
        s = torch.exp(self.log_scale)
        s = s * g + (s - s * g).detach()  # gradient scale g, value s
        v = torch.clamp(x / s, -qmax, qmax)
        return (v + (torch.round(v) - v).detach()) * s

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.observing:
            self.observer.observe(x)
            return x
        if not self.enabled:
            return x
        s = self.spec
        if self.log_scale is not None:
            return self._lsq(x)
        if s.kind == "block":
            return fake_quant(x, s, k_axis=self.k_axis)
        if s.dynamic:
            xd = x.detach()
            if s.granularity == "tensor":
                amax, lo, hi = xd.abs().amax(), xd.amin(), xd.amax()
            else:  # token: one range per row
                amax = xd.abs().amax(dim=-1, keepdim=True)
                lo, hi = xd.amin(dim=-1, keepdim=True), xd.amax(dim=-1, keepdim=True)
            return fake_quant(x, s, amax=amax, lo=lo, hi=hi)
        if s.granularity == "group":
            return self._group(x)
        if not self.calibrated:
            raise InputError(f"{self.role} quantizer has no range: calibrate the model (quantize_(..., calibrate=...))")
        return fake_quant(x, s, amax=self.amax, lo=self.lo, hi=self.hi)

    def _group(self, w: torch.Tensor) -> torch.Tensor:
        """group_size consecutive inputs of each output channel share a scale."""
        gs = self.spec.group_size
        flat = w.reshape(w.shape[0], -1)
        k = flat.shape[1]
        pad = (-k) % gs
        padded = F.pad(flat, (0, pad)) if pad else flat
        groups = padded.reshape(w.shape[0], -1, gs)
        if self.spec.symmetric:
            out = fake_quant(groups, self.spec, amax=groups.detach().abs().amax(dim=-1, keepdim=True))
        else:
            out = fake_quant(groups, self.spec, lo=groups.detach().amin(-1, keepdim=True),
                             hi=groups.detach().amax(-1, keepdim=True))  # fmt: skip
        return out.reshape(w.shape[0], -1)[:, :k].reshape(w.shape)


class QuantLayer(nn.Module):
    """A Linear or Conv with fake-quantized weights and input. `layer` keeps the original
    parameters (FP32 masters in QAT); `smooth` divides the input and multiplies the weight
    per input channel (SmoothQuant)."""

    smooth: torch.Tensor | None

    def __init__(self, layer: nn.Module, weights: QuantSpec | None, activations: QuantSpec | None) -> None:
        super().__init__()
        if not isinstance(layer, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            raise TypeError(f"QuantLayer wraps Linear, Conv1d or Conv2d, not {type(layer).__name__}")
        self.layer = layer
        self.wq = TensorQuant(weights, "weight", channel_axis=0, k_axis=1) if weights is not None else None
        self.aq = (TensorQuant(activations, "activation", k_axis=self._in_axis())
                   if activations is not None else None)  # fmt: skip
        self.register_buffer("smooth", None)
        self.collect_stats = False
        self.in_absmax: torch.Tensor | None = None  # per input channel, for SmoothQuant
        self.in_sum: torch.Tensor | None = None  # per input channel, for bias correction
        self.in_count = 0
        self._wcache: tuple[int, torch.Tensor] | None = None

    def _in_axis(self) -> int:
        return -1 if isinstance(self.layer, nn.Linear) else 1

    def _per_channel(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
        ax = self._in_axis() % x.dim()
        dims = [d for d in range(x.dim()) if d != ax]
        return x.detach().abs().amax(dim=dims), x.detach().sum(dim=dims), x.numel() // x.shape[ax]

    def _shape_in(self, v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.layer, nn.Linear):
            return v
        return v.reshape(1, -1, *([1] * (x.dim() - 2)))

    def _shape_w(self, v: torch.Tensor) -> torch.Tensor:
        w = self.layer.weight
        return v.reshape(1, -1, *([1] * (w.dim() - 2)))

    def quantized_weight(self) -> torch.Tensor:
        w: torch.Tensor = self.layer.weight
        if self.smooth is not None:
            w = w * self._shape_w(self.smooth)
        if self.wq is None:
            return w
        if self.wq.log_scale is None and not torch.is_grad_enabled() and self.wq.spec.granularity != "group":
            ver = self.layer.weight._version
            if self._wcache is not None and self._wcache[0] == ver:
                return self._wcache[1]
            q: torch.Tensor = self.wq(w)
            self._wcache = (ver, q)
            return q
        out: torch.Tensor = self.wq(w)
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.collect_stats:
            amax, s, n = self._per_channel(x)
            self.in_absmax = amax if self.in_absmax is None else torch.maximum(self.in_absmax, amax)
            self.in_sum = s if self.in_sum is None else self.in_sum + s
            self.in_count += n
        if self.smooth is not None:
            x = x / self._shape_in(self.smooth, x)
        if self.aq is not None:
            x = self.aq(x)
        w = self.quantized_weight()
        layer = self.layer
        if isinstance(layer, nn.Linear):
            return F.linear(x, w, layer.bias)
        out: torch.Tensor = layer._conv_forward(x, w, layer.bias)
        return out

    def invalidate(self) -> None:
        self._wcache = None

    def extra_repr(self) -> str:
        w = self.wq.spec.describe() if self.wq is not None else "float"
        a = self.aq.spec.describe() if self.aq is not None else "float"
        return f"weights={w}, inputs={a}" + (", smoothquant" if self.smooth is not None else "")
