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

import functools
from dataclasses import dataclass

import numpy as np
import torch

from chipfit.errors import InputError
from chipfit.formats.codec import _codes_of, decode
from chipfit.formats.profiles import PROFILES, Profile, get_profile
from chipfit.formats.quantize import as_float32, empty_f32, parse_rounding, quantize
from chipfit.formats.registry import get_format
from chipfit.formats.spec import BlockFormat, FloatFormat, IntFormat, Overflow, Rounding, ScaleRule

__all__ = ["BlockCodes", "decode_block", "encode_block", "quantize_block"]


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


def _element_man_bits(elem: FloatFormat | IntFormat) -> int:
    return elem.man_bits if isinstance(elem, FloatFormat) else elem.bits - 2


def _mx_parts(blocks: torch.Tensor, fmt: BlockFormat, rule: ScaleRule) -> tuple[torch.Tensor, torch.Tensor]:
    """(y = blocks / 2^k, k per block) for power-of-two scales, by the numba pass."""
    from chipfit.formats import _block_kernels as bk

    b2 = blocks.reshape(-1, fmt.block_size).contiguous()
    y = empty_f32(b2.shape)
    k = np.empty(b2.shape[0], dtype=np.int64)
    code = {ScaleRule.FLOOR: bk.RULE_FLOOR, ScaleRule.CEIL: bk.RULE_CEIL, ScaleRule.EVEN: bk.RULE_EVEN}[rule]
    bk.scale_pass(
        b2.numpy(),
        y.numpy(),
        k,
        fmt.element_emax,
        code,
        float(fmt.element.max),
        _element_man_bits(fmt.element),
        fmt.scale.min_exponent,
        fmt.scale.max_exponent,
    )
    return y.reshape(blocks.shape), torch.from_numpy(k).reshape(blocks.shape[:-1])


def _k_to_scale(k: torch.Tensor) -> torch.Tensor:
    from chipfit.formats._block_kernels import NAN_BLOCK

    scale = torch.pow(2.0, k.clamp_min(-200).double()).float()
    return torch.where(k == NAN_BLOCK, torch.full_like(scale, float("nan")), scale)


def _parts(
    x: torch.Tensor,
    fmt: BlockFormat,
    axis: int,
    rounding: Rounding,
    profile: Profile,
    generator: torch.Generator | None,
    scale_rule: ScaleRule | None,
) -> tuple[torch.Tensor, torch.Tensor, float | None, int, torch.Tensor | None]:
    """(quantized elements in blocks, scale per block, tensor scale, original length,
    power-of-two exponent per block or None)."""
    if x.dim() == 0:
        x = x.reshape(1)
    if not -x.dim() <= axis < x.dim():
        raise InputError(f"axis {axis} out of range for a {x.dim()}-d tensor")
    blocks, n = _to_blocks(x, fmt.block_size, axis)
    amax = blocks.abs().amax(dim=-1) if fmt.scale.man_bits else torch.empty(0)
    ts: float | None = None
    if fmt.tensor_scale:
        t_amax = float(x.abs().max()) if x.numel() else 0.0
        ts = t_amax / (fmt.scale.max * fmt.element.max) if t_amax > 0 and t_amax == t_amax else 1.0
        if ts == float("inf"):
            ts = 1.0
    k: torch.Tensor | None = None
    if fmt.scale.man_bits == 0:
        y, k = _mx_parts(blocks, fmt, scale_rule or fmt.scale_rule)
        scale = _k_to_scale(k)
    else:
        target = amax.double() / fmt.element.max / (ts or 1.0)
        scale = quantize(target.float(), fmt.scale, overflow=Overflow.SATURATE, profile=profile)
        eff = (scale.double() * (ts or 1.0)).float().unsqueeze(-1)
        y = torch.where(eff > 0, blocks / eff, torch.zeros_like(blocks))
        y = torch.where(torch.isnan(eff), torch.full_like(y, float("nan")), y)
    q = quantize(y, fmt.element, rounding=rounding, overflow=Overflow.SATURATE, profile=profile, generator=generator)
    return q, scale, ts, n, k


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
    mode = parse_rounding(rounding)
    prof = get_profile(profile)
    if mode is Rounding.NEAREST_EVEN and _fused_ok(f, prof):
        fused = _quantize_fused(xf, f, axis)
        if fused is not None:
            return fused
    rule = ScaleRule(scale_rule) if scale_rule is not None else None
    q, scale, ts, n, k = _parts(xf, f, axis, mode, prof, generator, rule)
    if k is not None:
        from chipfit.formats._block_kernels import unscale_pass

        out = empty_f32(q.shape)
        unscale_pass(q.reshape(-1, f.block_size).numpy(), k.reshape(-1).numpy(), out.view(-1, f.block_size).numpy())
    else:
        out = (q.double() * (scale.double() * (ts or 1.0)).unsqueeze(-1)).float()
    return _from_blocks(out, n, axis).reshape(xf.shape)


def _fused_ok(f: BlockFormat, prof: Profile) -> bool:
    """The fused pass covers float scales with mantissa bits (NVFP4) over float elements with
    subnormals and signed zeros, under profiles that saturate them alike (finite input only)."""
    fmts = (f.element, f.scale)
    return (
        f.scale.man_bits > 0
        and all(isinstance(g, FloatFormat) and g.subnormals and g.signed_zero and g.has_zero for g in fmts)
        and prof in PROFILES.values()  # each built-in profile is checked against the eager path
    )


@functools.lru_cache(maxsize=32)
def _fused_consts(f: BlockFormat) -> tuple[float, tuple[float, float, float, int, int, float]]:
    """(scale max * element max, the kernel's constants: element max, 2^-element mantissa bits,
    2^(element min exponent + 1), scale mantissa bits, scale min exponent, scale max)."""
    el, sc = f.element, f.scale
    assert isinstance(el, FloatFormat)  # _fused_ok
    el_max, sc_max = float(el.max), float(sc.max)
    consts = (el_max, 2.0**-el.man_bits, 2.0 ** (el.min_exponent + 1), sc.man_bits, sc.min_exponent, sc_max)
    return sc_max * el_max, consts


def _quantize_fused(xf: torch.Tensor, f: BlockFormat, axis: int) -> torch.Tensor | None:
    """quantize_block for NVFP4-style formats in one numba call that takes the tensor amax, the
    per-tensor scale and every block; None for input it does not cover (non-finite values,
    0-d), which then takes the eager path. Blocks along the last axis need no copy."""
    from chipfit.formats import _block_kernels as bk
    from chipfit.formats._kernels import PARALLEL_THRESHOLD

    if xf.dim() == 0 or not -xf.dim() <= axis < xf.dim():
        return None
    last = axis % xf.dim() == xf.dim() - 1
    xt = xf if last else xf.movedim(axis, -1)
    if xt.numel() == 0:
        return torch.zeros_like(xf)
    x2 = xt.reshape(-1, xt.shape[-1])
    if not x2.is_contiguous():
        x2 = x2.contiguous()
    both_max, consts = _fused_consts(f)
    out = empty_f32(x2.shape)
    kernel = bk.scaled_par if x2.numel() >= PARALLEL_THRESHOLD else bk.scaled_ser
    if kernel(x2.numpy(), out.numpy(), f.block_size, both_max, f.tensor_scale, *consts) < 0:
        return None
    return out.view(xf.shape) if last else out.reshape(xt.shape).movedim(-1, axis)


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
    q, scale, ts, n, _ = _parts(xf, f, axis, parse_rounding(rounding), prof, generator, rule)
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
        raise TypeError(
            f"{f.name} is not a block format; block formats: mxfp8_e4m3, mxfp8_e5m2, ... (see `chipfit formats`)"
        )
    return f
