"""encode / decode between float32 values and a format's integer codes, and
packed storage for sub-byte codes.

encode = quantize (the one place rounding happens) followed by an exact
mapping of the representable float32 value to its code; decode is a lookup in
a per-(format, profile) table of all codes, built vectorised and checked
against the scalar reference in the tests.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import torch

from chipfit.errors import InputError
from chipfit.formats.profiles import Profile, get_profile
from chipfit.formats.quantize import quantize
from chipfit.formats.registry import get_format
from chipfit.formats.spec import BinaryFormat, BlockFormat, FloatFormat, Format, IntFormat, NanEncoding

__all__ = ["code_dtype", "decode", "decode_table", "encode", "pack", "unpack"]


def code_dtype(fmt: FloatFormat | IntFormat | BinaryFormat) -> torch.dtype:
    """uint8 for formats of up to 8 bits, int32 for wider ones (codes are non-negative)."""
    return torch.uint8 if fmt.bits <= 8 else torch.int32


def _elementwise(fmt: str | Format) -> FloatFormat | IntFormat | BinaryFormat:
    f = get_format(fmt)
    if isinstance(f, BlockFormat):
        raise TypeError(f"{f.name} is a block format: use chipfit.formats.block.encode_block / decode_block")
    return f


def encode(x: torch.Tensor, fmt: str | Format, *, packed: bool = False, **quantize_kwargs: Any) -> torch.Tensor:
    """float tensor -> integer codes of `fmt` (rounding as in `quantize`, same keyword arguments).

    With packed=True, sub-byte codes are packed little-endian into a flat uint8
    tensor (two 4-bit codes per byte, four 6-bit codes per three bytes, ...)."""
    f = _elementwise(fmt)
    q = quantize(x, f, **quantize_kwargs)
    codes = _codes_of(q, f, get_profile(quantize_kwargs.get("profile")))
    return pack(codes, f.bits) if packed else codes


def _codes_of(q: torch.Tensor, f: FloatFormat | IntFormat | BinaryFormat, prof: Profile) -> torch.Tensor:
    if isinstance(f, BinaryFormat):
        return (q > 0).to(torch.uint8)
    if isinstance(f, IntFormat):
        k = torch.round(q.double() * 2.0**f.frac_bits).to(torch.int64)
        return (k & (f.num_codes - 1)).to(code_dtype(f))
    bits = q.contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    sign = (bits >> 31) & 1
    a = bits & 0x7FFFFFFF
    width = f.exp_bits + f.man_bits
    v = q.double().abs()
    mant, exp = torch.frexp(v)  # v = mant * 2^exp, mant in [0.5, 1)
    e = exp.to(torch.int64) - 1
    man_field = ((mant.double() * 2 - 1) * 2.0**f.man_bits).round().to(torch.int64)
    normal = ((e + f.bias) << f.man_bits) | man_field
    if f.subnormals:
        sub = (v * 2.0 ** (f.man_bits - f.min_exponent)).round().to(torch.int64)
        mag = torch.where(e < f.min_exponent, sub, normal)
    else:
        mag = normal
    mag = torch.where(a == 0, torch.zeros_like(mag), mag)
    if f.inf:
        mag = torch.where(a == 0x7F800000, torch.full_like(mag, f.exp_all_ones << f.man_bits), mag)
    is_nan = a > 0x7F800000
    if f.nan is NanEncoding.IEEE:
        payload = (a & 0x7FFFFF) >> (23 - f.man_bits)
        nan_mag = (f.exp_all_ones << f.man_bits) | payload
    elif f.nan is NanEncoding.FN:
        nan_mag = torch.full_like(mag, (1 << width) - 1)
    else:  # FNUZ: the negative-zero code; NONE: quantize never yields NaN
        nan_mag = torch.zeros_like(mag)
    mag = torch.where(is_nan, nan_mag, mag)
    if f.signed:
        s = sign
        if f.nan is NanEncoding.FNUZ:
            s = torch.where(is_nan, torch.ones_like(sign), torch.where(a == 0, torch.zeros_like(sign), sign))
        mag = mag | (s << width)
    return mag.to(code_dtype(f))


@functools.lru_cache(maxsize=64)
def decode_table(fmt: FloatFormat | IntFormat | BinaryFormat, profile: Profile) -> torch.Tensor:
    """float32 value of every code of `fmt` (formats of up to 24 bits)."""
    if fmt.bits > 24:
        raise InputError(f"{fmt.name} has {fmt.bits}-bit codes; tables are built for up to 24 bits")
    codes = np.arange(fmt.num_codes, dtype=np.int64)
    if isinstance(fmt, BinaryFormat):
        return torch.tensor([-1.0, 1.0], dtype=torch.float32)
    if isinstance(fmt, IntFormat):
        k = np.where(fmt.signed & (codes >= (1 << (fmt.bits - 1))), codes - fmt.num_codes, codes)
        return torch.from_numpy(np.ldexp(k.astype(np.float64), -fmt.frac_bits).astype(np.float32))
    width = fmt.exp_bits + fmt.man_bits
    sign = (codes >> width) & 1 if fmt.signed else np.zeros_like(codes)
    mag = codes & ((1 << width) - 1)
    e_field = mag >> fmt.man_bits
    man = mag & ((1 << fmt.man_bits) - 1)
    normal = np.ldexp(1.0 + man / 2.0**fmt.man_bits, (e_field - fmt.bias).astype(np.int32))
    if fmt.subnormals:
        sub = np.ldexp(man.astype(np.float64), fmt.min_exponent - fmt.man_bits)
        val = np.where(e_field == 0, sub, normal)
    else:
        val = normal
    val = np.where(sign == 1, -val, val)
    with np.errstate(over="ignore"):  # the all-ones exponent codes overflow here; they are replaced below
        out = val.astype(np.float32).view(np.uint32).astype(np.int64)
    if fmt.inf:
        is_inf = (e_field == fmt.exp_all_ones) & (man == 0)
        out = np.where(is_inf, (sign << 31) | 0x7F800000, out)
    if fmt.nan is NanEncoding.IEEE:
        is_nan = (e_field == fmt.exp_all_ones) & (man != 0)
    elif fmt.nan is NanEncoding.FN:
        is_nan = mag == (1 << width) - 1
    elif fmt.nan is NanEncoding.FNUZ:
        is_nan = (sign == 1) & (mag == 0)
    else:
        is_nan = np.zeros_like(codes, dtype=bool)
    widened = (sign << 31) | 0x7F800000 | (man << (23 - fmt.man_bits))
    for i in np.flatnonzero(is_nan):
        out[i] = profile.decode_nan(fmt, int(widened[i]))
    return torch.from_numpy(out.astype(np.uint32).view(np.float32).copy())


def decode(
    codes: torch.Tensor,
    fmt: str | Format,
    *,
    profile: str | Profile | None = None,
    packed: bool = False,
    count: int | None = None,
) -> torch.Tensor:
    """Integer codes -> float32 values. For packed input pass `count` (the number of codes)."""
    f = _elementwise(fmt)
    if not isinstance(codes, torch.Tensor) or codes.dtype.is_floating_point or codes.dtype.is_complex:
        raise TypeError("codes must be an integer torch.Tensor")
    if packed:
        if count is None:
            raise InputError("decode(packed=True) needs count, the number of codes packed")
        codes = unpack(codes, f.bits, count)
    if isinstance(f, FloatFormat) and f.bits == 32:
        return codes.to(torch.int32).view(torch.float32)  # float32 codes are its bits, as int32
    c = codes.to(torch.int64)
    if bool((c < 0).any()) or bool((c >= f.num_codes).any()):
        raise InputError(f"codes out of range for {f.name}: valid codes are 0..{f.num_codes - 1}")
    table = decode_table(f, get_profile(profile)).to(codes.device)
    return table[c]


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack codes of `bits` (1..8) bits into a flat little-endian uint8 bitstream."""
    if not 1 <= bits <= 8:
        raise InputError(f"pack handles 1..8-bit codes, got {bits}")
    c = codes.detach().cpu().reshape(-1).to(torch.uint8).numpy()
    if bits == 8:
        return torch.from_numpy(c.copy())
    bitmat = np.unpackbits(c[:, None], axis=1, bitorder="little")[:, :bits]
    return torch.from_numpy(np.packbits(bitmat.reshape(-1), bitorder="little"))


def unpack(data: torch.Tensor, bits: int, count: int) -> torch.Tensor:
    """Inverse of `pack`: the first `count` codes as uint8."""
    if not 1 <= bits <= 8:
        raise InputError(f"unpack handles 1..8-bit codes, got {bits}")
    raw = data.detach().cpu().reshape(-1).to(torch.uint8).numpy()
    if bits == 8:
        if count > raw.size:
            raise InputError(f"asked for {count} codes, data holds {raw.size}")
        return torch.from_numpy(raw[:count].copy())
    stream = np.unpackbits(raw, bitorder="little")
    if count * bits > stream.size:
        raise InputError(f"asked for {count} {bits}-bit codes, data holds {stream.size // bits}")
    bitmat = stream[: count * bits].reshape(count, bits)
    padded = np.zeros((count, 8), dtype=np.uint8)
    padded[:, :bits] = bitmat
    return torch.from_numpy(np.packbits(padded, axis=1, bitorder="little").reshape(-1))
