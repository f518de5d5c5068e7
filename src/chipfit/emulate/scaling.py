"""Rounding one matrix-op operand to its format, with its scale.

`prepare` returns (q, inv): q holds the values the chip's matrix unit sees (on
the format's grid, already scaled) and `inv` the factor that undoes the scale
(1.0, a scalar tensor, or a tensor broadcasting over the output channel or row).
Scales factor out of the dot product, so the emulator multiplies the
accumulated result by `inv_a * inv_b` in the epilogue, as scaled GEMMs do.

Float formats (FP8) follow TransformerEngine: scale = fmt_max / amax / 2^margin,
q = cast(x * scale) with saturation, scale_inv = 1 / scale. Integer formats
follow the symmetric TensorRT convention: step = amax / qmax, q = round(x / step)
clamped, and the step is the inverse scale.
"""

from __future__ import annotations

import functools
import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from chipfit.emulate.policy import Operand
from chipfit.errors import InputError
from chipfit.formats import BlockFormat, FloatFormat, IntFormat, Rounding, get_format, quantize
from chipfit.formats._kernels import dynamic_int_kernel, dynamic_scaled_kernel
from chipfit.formats.profiles import get_profile
from chipfit.formats.quantize import empty_f32, parse_rounding, quantizer
from chipfit.formats.spec import Overflow

__all__ = ["ScaleState", "amax_over", "format_max", "prepare", "round_to"]

Inv = float | torch.Tensor
# torch's own casts are the `torch` profile bit for bit (tests/formats) and cost less per call
# on the small tensors of an op-by-op emulation
_TORCH_CASTS = {"bfloat16": torch.bfloat16, "float16": torch.float16}


def round_to(
    x: torch.Tensor, fmt: str, rounding: str = "nearest-even", out: torch.Tensor | None = None
) -> torch.Tensor:
    """quantize(x, fmt) under the default (torch) profile, via torch's cast where it is the same."""
    dtype = _TORCH_CASTS.get(fmt)
    if dtype is None or rounding != "nearest-even":
        return quantizer(fmt, rounding)(x.contiguous(), out=out)
    if out is None:
        return x.to(dtype).to(torch.float32)
    return out.copy_(x.to(dtype))  # copy_ widens exactly: one op fewer than .to(float32) then copy_


@dataclass
class ScaleState:
    """Delayed scaling's memory for one operand site: the scale in use and the amax history."""

    history_len: int
    scale: float = 1.0
    history: deque[float] = field(default_factory=deque)
    steps: int = 0

    def update(self, amax: float, fmt_max: float, algo: str, margin: int, integer: bool) -> None:
        self.history.append(amax)
        while len(self.history) > self.history_len:
            self.history.popleft()
        ref = max(self.history) if algo == "max" else self.history[-1]
        self.steps += 1
        if ref > 0 and ref != float("inf"):  # TE keeps the previous scale on 0 or non-finite amax
            self.scale = (ref / fmt_max) if integer else (fmt_max / ref) / 2.0**margin


def _f32(v: float) -> float:
    """v rounded to the nearest FP32 value (ties to even)."""
    return float(np.float32(v))


@functools.lru_cache(maxsize=128)
def format_max(name: str) -> float:
    """The largest finite value of an elementwise format (a computed property: cached here)."""
    f = get_format(name)
    if isinstance(f, BlockFormat):
        raise TypeError(f"{name} is a block format; its element format has the maximum")
    return float(f.max)


@functools.lru_cache(maxsize=64)
def _dynamic(fmt: str, rounding: str) -> Any:
    """The fused dynamic-scaling kernel for an elementwise float format (saturating, as
    `quantizer(fmt, rounding, "saturate")`) or an integer format (`quantizer(fmt, rounding)`),
    or None where it does not apply (stochastic rounding)."""
    f = get_format(fmt)
    mode = parse_rounding(rounding)
    if mode is Rounding.STOCHASTIC:
        return None
    if isinstance(f, IntFormat):
        return dynamic_int_kernel(f, mode)
    if not isinstance(f, FloatFormat):
        return None
    return dynamic_scaled_kernel(f, get_profile(None), mode, Overflow.SATURATE)


def amax_over(x: torch.Tensor, dim: int | None) -> torch.Tensor:
    """max |x| over every dim but `dim` (kept, the others size 1), or over all dims when dim is None."""
    if dim is None and x.numel():  # one pass, no |x| temporary: a third of abs().amax()'s time here
        lo, hi = torch.aminmax(x.detach())
        return torch.maximum(-lo, hi)
    a = x.detach().abs()
    if dim is None:
        return a.amax()
    dims = [d for d in range(x.dim()) if d != dim % x.dim()]
    return a.amax(dim=dims, keepdim=True) if dims else a


def prepare(
    x: torch.Tensor,
    op: Operand,
    *,
    channel_dim: int | None = None,
    row_dim: int | None = None,
    k_dim: int = -1,
    state: ScaleState | None = None,
) -> tuple[torch.Tensor, Inv]:
    """Round `x` as operand `op`; channel_dim/row_dim say where per-channel and per-row scales go,
    k_dim is the reduction axis (block formats share their scale along it).

    Scales are computed in FP32 (as TransformerEngine and TensorRT do); a per-tensor scale
    comes back as a Python float holding that FP32 value."""
    xf = x.detach().float()
    if op.exact:
        return xf, 1.0
    fmt = get_format(op.format)
    if isinstance(fmt, BlockFormat):
        return quantize(xf, fmt, rounding=op.rounding, axis=k_dim), 1.0
    s = op.scaling
    if s.kind == "none":
        return round_to(xf, op.format, op.rounding), 1.0
    integer = isinstance(fmt, IntFormat)
    fmt_max = format_max(op.format)
    q_fn = quantizer(op.format, op.rounding, None if integer else "saturate")
    if s.kind == "delayed":
        if state is None:
            raise InputError("delayed scaling needs a ScaleState")
        scale = state.scale
        amax_now = float(amax_over(xf, None))
        if integer:
            step = scale if state.steps else (amax_now / fmt_max if amax_now > 0 else 1.0)
            q = q_fn(xf / step)
            inv: Inv = step
        else:
            q = q_fn(xf * scale)
            inv = 1.0 / scale
        state.update(amax_now, fmt_max, s.amax_algo, s.margin, integer)
        return q, inv
    if s.kind == "dynamic" and xf.device.type == "cpu":
        fused = _dynamic(op.format, op.rounding)
        if fused is not None:  # amax, scale and rounding in one numba call: what follows, fused
            src = xf.contiguous()
            dst = empty_f32(src.shape)
            if integer:
                return dst, fused(src.view(-1).numpy(), dst.view(-1).numpy(), fmt_max)
            got = fused(src.view(-1).numpy(), dst.view(-1).numpy(), fmt_max, 2.0**s.margin)
            if got > 0:
                return dst, _f32(1.0 / got)
    if s.kind == "dynamic":  # one scale, computed in FP32 without tensor ops: an FP32 quotient is
        # the FP64 quotient rounded once to FP32 (53 >= 2 * 24 + 2 bits), so _f32(a / b) is it
        amax = float(amax_over(xf, None))
        safe = amax if 0 < amax < math.inf else 1.0  # no finite range (0, NaN or inf): scale 1
        if integer:
            step = _f32(safe / fmt_max)
            return q_fn(xf / step), step
        scale = _f32(fmt_max / safe / 2.0**s.margin)
        return q_fn(xf * scale), _f32(1.0 / scale)
    dim = {"per-channel": channel_dim, "per-row": row_dim}[s.kind]
    amax_t = amax_over(xf, dim)
    safe_t = torch.where(amax_t > 0, amax_t, torch.ones_like(amax_t))
    if integer:
        step_t = safe_t / fmt_max
        return q_fn(xf / step_t), step_t
    scale_t = (fmt_max / safe_t) / 2.0**s.margin
    return q_fn(xf * scale_t), 1.0 / scale_t
