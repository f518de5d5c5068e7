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

from collections import deque
from dataclasses import dataclass, field

import torch

from chipfit.emulate.policy import Operand
from chipfit.formats import BlockFormat, IntFormat, get_format, quantize

__all__ = ["ScaleState", "prepare", "round_to"]

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
        return quantize(x, fmt, rounding=rounding, out=out)
    y = x.to(dtype).to(torch.float32)
    if out is None:
        return y
    return out.copy_(y)


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


def _amax(x: torch.Tensor, dim: int | None) -> torch.Tensor:
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
    k_dim is the reduction axis (block formats share their scale along it)."""
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
    fmt_max = float(fmt.max)
    if s.kind == "delayed":
        if state is None:
            raise ValueError("delayed scaling needs a ScaleState")
        scale = state.scale
        amax_now = float(_amax(xf, None))
        if integer:
            step = scale if state.steps else (amax_now / fmt_max if amax_now > 0 else 1.0)
            q = quantize(xf / step, fmt, rounding=op.rounding)
            inv: Inv = step
        else:
            q = quantize(xf * scale, fmt, rounding=op.rounding, overflow="saturate")
            inv = 1.0 / scale
        state.update(amax_now, fmt_max, s.amax_algo, s.margin, integer)
        return q, inv
    dim = {"dynamic": None, "per-channel": channel_dim, "per-row": row_dim}[s.kind]
    amax = _amax(xf, dim)
    safe = torch.where(amax > 0, amax, torch.ones_like(amax))
    if integer:
        step_t = safe / fmt_max
        return quantize(xf / step_t, fmt, rounding=op.rounding), step_t
    scale_t = (fmt_max / safe) / 2.0**s.margin
    return quantize(xf * scale_t, fmt, rounding=op.rounding, overflow="saturate"), 1.0 / scale_t
