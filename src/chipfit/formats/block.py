"""Block-scaled formats: OCP MX v1.0 and NVIDIA NVFP4.

A block of `block_size` consecutive elements along `axis` shares one scale.

Power-of-two scales (E8M0, the MX formats), with the exponent k chosen by rule:
  floor  k = floor(log2 amax) - emax_elem            (OCP MX v1.0; may clip the top)
  ceil   k = smallest k with amax / 2^k <= max_elem   (NVIDIA/torchao RCEIL; never clips)
  even   k = floor(log2 round_half_up(amax, man_elem bits)) - emax_elem   (torchao EVEN)
Then k is clamped to the scale's range [-127, 127]. An all-zero block takes the
smallest scale 2^-127. A block holding NaN or inf gets the NaN scale (code 0xFF)
and decodes to NaN throughout. OCP leaves this to the implementation; it is
chipfit's choice. Elements are x / 2^k cast with saturation, as OCP specifies.

Scales with mantissa bits (NVFP4's E4M3) follow NVIDIA's two-level recipe:
  tensor_scale = amax(tensor) / (max_scale * max_elem)   (FP32; 1 if amax is 0)
  block scale  = e4m3(amax(block) / max_elem / tensor_scale)   (saturating)
  element      = e2m1(x / (block_scale * tensor_scale))
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from chipfit.formats.codec import _codes_of, decode
from chipfit.formats.profiles import Profile, get_profile
from chipfit.formats.quantize import as_float32, parse_rounding, quantize
from chipfit.formats.registry import get_format
from chipfit.formats.spec import BlockFormat, FloatFormat, IntFormat, Overflow, Rounding, ScaleRule

__all__ = ["BlockCodes", "block_scales", "decode_block", "encode_block", "quantize_block"]


@dataclass(frozen=True)
class BlockCodes:
    """Encoded block tensor: element codes (shape of x), one scale code per block, tensor scale."""

    fmt: BlockFormat
    elements: torch.Tensor  # uint8 codes, same shape as the input
    scales: torch.Tensor  # uint8 codes, shape of x with `axis` replaced by the number of blocks
    tensor_scale: float | None
    axis: int


def _to_blocks(x: torch.Tensor, block: int, axis: int) -> tuple[torch.Tensor, int]:
    """Move `axis` last and zero-pad it to a multiple of `block`: (..., nblocks, block)."""
    xt = x.movedim(axis, -1)
    n = xt.shape[-1]
    pad = (-n) % block
    if pad:
        xt = torch.nn.functional.pad(xt, (0, pad))
    return xt.reshape(*xt.shape[:-1], -1, block), n


def _from_blocks(blocks: torch.Tensor, n: int, axis: int) -> torch.Tensor:
    flat = blocks.reshape(*blocks.shape[:-2], -1)[..., :n]
    return flat.movedim(-1, axis)


def _floor_log2(v: torch.Tensor) -> torch.Tensor:
    """floor(log2 v) exactly, for finite v > 0 (frexp, no log rounding)."""
    _, ex = torch.frexp(v.double())
    return ex.to(torch.int64) - 1


def _element_man_bits(elem: FloatFormat | IntFormat) -> int:
    return elem.man_bits if isinstance(elem, FloatFormat) else elem.bits - 2


def block_scales(
    amax: torch.Tensor, fmt: BlockFormat, rule: ScaleRule, profile: Profile, tensor_scale: float
) -> torch.Tensor:
    """Scale value (float32) of each block from its amax."""
    elem_max = fmt.element.max
    if fmt.scale.man_bits > 0:
        target = amax.double() / elem_max / tensor_scale
        return quantize(target.float(), fmt.scale, overflow=Overflow.SATURATE, profile=profile)
    positive = amax > 0
    safe = torch.where(positive & torch.isfinite(amax), amax, torch.ones_like(amax)).double()
    k = _floor_log2(safe) - fmt.element_emax
    if rule is ScaleRule.CEIL:
        k = k + (safe > elem_max * torch.pow(2.0, k.double())).to(torch.int64)
    elif rule is ScaleRule.EVEN:
        m = _element_man_bits(fmt.element)
        bits = safe.float().view(torch.int32).to(torch.int64)
        rounded = ((bits + (1 << (22 - m))) & 0x7F800000).to(torch.int32).view(torch.float32)
        k = _floor_log2(rounded) - fmt.element_emax
    lo, hi = fmt.scale.min_exponent, fmt.scale.max_exponent
    k = torch.where(positive, k.clamp(lo, hi), torch.full_like(k, lo))
    scale = torch.pow(2.0, k.double()).float()
    return torch.where(torch.isfinite(amax), scale, torch.full_like(scale, float("nan")))


def _parts(
    x: torch.Tensor,
    fmt: BlockFormat,
    axis: int,
    rounding: Rounding,
    profile: Profile,
    generator: torch.Generator | None,
    scale_rule: ScaleRule | None,
) -> tuple[torch.Tensor, torch.Tensor, float | None, int]:
    """(quantized elements in blocks, scale per block, tensor scale, original length)."""
    if x.dim() == 0:
        x = x.reshape(1)
    if not -x.dim() <= axis < x.dim():
        raise ValueError(f"axis {axis} out of range for a {x.dim()}-d tensor")
    blocks, n = _to_blocks(x, fmt.block_size, axis)
    amax = blocks.abs().amax(dim=-1)
    ts: float | None = None
    if fmt.tensor_scale:
        t_amax = float(x.abs().max()) if x.numel() else 0.0
        ts = t_amax / (fmt.scale.max * fmt.element.max) if t_amax > 0 and t_amax == t_amax else 1.0
        if ts == float("inf"):
            ts = 1.0
    scale = block_scales(amax, fmt, scale_rule or fmt.scale_rule, profile, ts or 1.0)
    eff = (scale.double() * (ts or 1.0)).float().unsqueeze(-1)
    y = torch.where(eff > 0, blocks / eff, torch.zeros_like(blocks))
    y = torch.where(torch.isnan(eff), torch.full_like(y, float("nan")), y)
    q = quantize(y, fmt.element, rounding=rounding, overflow=Overflow.SATURATE, profile=profile, generator=generator)
    return q, scale, ts, n


def quantize_block(
    x: torch.Tensor,
    fmt: str | BlockFormat,
    *,
    axis: int = -1,
    rounding: str | Rounding = Rounding.NEAREST_EVEN,
    profile: str | Profile | None = None,
    generator: torch.Generator | None = None,
    scale_rule: str | ScaleRule | None = None,
) -> torch.Tensor:
    """Fake-quantize to a block format: float32 values after scale and element rounding."""
    f = _block(fmt)
    xf = as_float32(x)
    rule = ScaleRule(scale_rule) if scale_rule is not None else None
    q, scale, ts, n = _parts(xf, f, axis, parse_rounding(rounding), get_profile(profile), generator, rule)
    eff = (scale.double() * (ts or 1.0)).unsqueeze(-1)
    out = (q.double() * eff).float()
    return _from_blocks(out, n, axis).reshape(xf.shape)


def encode_block(
    x: torch.Tensor,
    fmt: str | BlockFormat,
    *,
    axis: int = -1,
    rounding: str | Rounding = Rounding.NEAREST_EVEN,
    profile: str | Profile | None = None,
    generator: torch.Generator | None = None,
    scale_rule: str | ScaleRule | None = None,
) -> BlockCodes:
    """Encode to element codes plus one scale code per block (and the FP32 tensor scale)."""
    f = _block(fmt)
    xf = as_float32(x)
    prof = get_profile(profile)
    rule = ScaleRule(scale_rule) if scale_rule is not None else None
    q, scale, ts, n = _parts(xf, f, axis, parse_rounding(rounding), prof, generator, rule)
    elem_codes = _codes_of(q, f.element, prof)
    scale_codes = _codes_of(scale, f.scale, prof)
    elements = _from_blocks(elem_codes, n, axis).reshape(xf.shape)
    return BlockCodes(f, elements, scale_codes.movedim(-1, axis) if scale_codes.dim() else scale_codes, ts, axis)


def decode_block(codes: BlockCodes, *, profile: str | Profile | None = None) -> torch.Tensor:
    """Inverse of `encode_block`."""
    f = codes.fmt
    prof = get_profile(profile)
    elems = decode(codes.elements, f.element, profile=prof)
    scales = decode(codes.scales, f.scale, profile=prof).movedim(codes.axis, -1)
    blocks, n = _to_blocks(elems, f.block_size, codes.axis)
    out = (blocks.double() * scales.double().unsqueeze(-1) * (codes.tensor_scale or 1.0)).float()
    return _from_blocks(out, n, codes.axis).reshape(elems.shape)


def _block(fmt: str | BlockFormat) -> BlockFormat:
    f = get_format(fmt)
    if not isinstance(f, BlockFormat):
        raise TypeError(f"{f.name} is not a block format; block formats: mxfp8_e4m3, mxfp8_e5m2, ... (see `chipfit formats`)")
    return f
