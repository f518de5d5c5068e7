"""Slow, obviously-correct scalar reference for quantize / encode / decode.

Works on one float32 bit pattern at a time with exact rational arithmetic
(`fractions.Fraction`): find the two representable neighbours of the exact
input value, pick one by the rounding mode, then apply the profile's overflow,
NaN and signed-zero rules. The fast kernel (`_kernels.py`) is tested against
this, and this is tested against ml_dtypes and torch.
"""

from __future__ import annotations

import struct
from fractions import Fraction

from chipfit.errors import InputError
from chipfit.formats.profiles import EXP_ONES, QNAN, SIGN, Profile, get_profile
from chipfit.formats.spec import (
    BinaryFormat,
    FloatFormat,
    IntFormat,
    NanEncoding,
    Overflow,
    Rounding,
)

__all__ = [
    "decode_code",
    "f32_bits",
    "f32_value",
    "int_bounds_f32",
    "mx_scale_exponents",
    "quantize_bits",
    "round_fraction",
    "stochastic_up",
]


def f32_value(bits: int) -> Fraction:
    """Exact value of finite float32 bits."""
    e_field = (bits >> 23) & 0xFF
    m = bits & 0x7FFFFF
    sign = -1 if bits & SIGN else 1
    if e_field == 0:
        return sign * Fraction(m) * Fraction(2) ** -149
    return sign * Fraction(0x800000 | m) * Fraction(2) ** (e_field - 150)


def f32_bits(value: Fraction | float) -> int:
    """Bits of a value exactly representable in float32 (raises otherwise)."""
    f = float(value)
    bits: int = struct.unpack("<I", struct.pack("<f", f))[0]
    if isinstance(value, Fraction) and f32_value(bits) != value:
        raise InputError(f"{value} is not representable in float32")
    return bits


def _floor_log2(x: Fraction) -> int:
    """floor(log2(x)) for x > 0, exactly."""
    e = x.numerator.bit_length() - x.denominator.bit_length()
    if Fraction(2) ** e > x:
        e -= 1
    return e


def stochastic_up(frac: Fraction, rand32: int) -> bool:
    """Stochastic rounding with 32 random bits: round up iff rand32 < floor(frac * 2^32).

    Exactly unbiased whenever at most 32 bits are dropped (frac * 2^32 is an integer)."""
    return rand32 < (frac * (1 << 32)).__floor__()


def _round_between(
    lo: Fraction, q: Fraction, mag: Fraction, negative: bool, rounding: Rounding, rand32: int
) -> Fraction:
    """Pick lo or lo + q for lo <= mag < lo + q (magnitudes; `negative` is the sign)."""
    if mag == lo:
        return lo
    frac = (mag - lo) / q
    half = Fraction(1, 2)
    if rounding is Rounding.NEAREST_EVEN:
        up = frac > half or (frac == half and (lo / q) % 2 == 1)
    elif rounding is Rounding.NEAREST_AWAY:
        up = frac >= half
    elif rounding is Rounding.TOWARD_ZERO:
        up = False
    elif rounding is Rounding.UP:
        up = not negative
    elif rounding is Rounding.DOWN:
        up = negative
    else:
        up = stochastic_up(frac, rand32)
    return lo + q if up else lo


def round_fraction(value: Fraction, rounding: Rounding = Rounding.NEAREST_EVEN) -> float:
    """An exact rational rounded once to float32 (finite results only), e.g. an exact dot product."""
    if value == 0:
        return 0.0
    mag = abs(value)
    e = _floor_log2(mag)
    q = Fraction(2) ** (max(e, -126) - 23)
    r = _round_between((mag / q).__floor__() * q, q, mag, value < 0, rounding, 0)
    if r >= Fraction(2) ** 128:
        raise OverflowError(f"{float(value)} overflows float32")
    return float(-r if value < 0 else r)


def quantize_bits(
    bits: int,
    fmt: FloatFormat,
    *,
    profile: str | Profile | None = None,
    rounding: Rounding = Rounding.NEAREST_EVEN,
    overflow: Overflow | None = None,
    flush_subnormals: bool = False,
    rand32: int = 0,
) -> int:
    """float32 bits -> float32 bits of the value `fmt` represents (reference)."""
    prof = get_profile(profile)
    ovf = overflow if overflow is not None else prof.overflow(fmt)
    if fmt.nan is NanEncoding.NONE:
        ovf = Overflow.SATURATE
    nan_rule = prof.nan_rule(fmt)
    sign = bits & SIGN
    a = bits & 0x7FFFFFFF
    if a > EXP_ONES:
        return nan_rule.apply(bits)
    if not fmt.signed and sign:
        if prof.negative_is_nan:
            return nan_rule.apply(QNAN)
        sign = 0
    nan_of_sign = nan_rule.apply(sign | QNAN)
    max_bits = f32_bits(fmt.magnitude_value(fmt.max_magnitude_code))
    if a == EXP_ONES:
        if fmt.inf:
            return sign | EXP_ONES
        return (sign | max_bits) if ovf is Overflow.SATURATE else nan_of_sign
    mag = abs(f32_value(a))
    negative = bool(sign)
    if mag == 0:
        if not fmt.has_zero:
            return nan_of_sign if prof.zero_is_nan else f32_bits(fmt.magnitude_value(0))
        return sign if fmt.signed_zero else 0
    m = fmt.man_bits
    emin = fmt.min_exponent
    f32_min_normal = Fraction(2) ** -126
    if not fmt.has_zero and emin < -126 and mag < f32_min_normal and not prof.subnormal_inputs_by_value:
        # torch / ml_dtypes 0.6: the float32 subnormal range is one binade [0, 2^-126) of the encoding
        r = _round_between(Fraction(0), f32_min_normal, mag, negative, rounding, rand32)
        r = r if r else Fraction(2) ** emin
    elif not fmt.has_zero and mag < Fraction(2) ** emin:
        r = Fraction(2) ** emin  # nothing smaller exists
    else:
        e = _floor_log2(mag)
        q = Fraction(2) ** (max(e, emin) - m)
        lo = (mag / q).__floor__() * q
        r = _round_between(lo, q, mag, negative, rounding, rand32)
    if r > fmt.magnitude_value(fmt.max_magnitude_code):
        away = (sign | EXP_ONES) if fmt.inf else nan_of_sign
        if ovf is Overflow.SATURATE:
            return sign | max_bits
        if rounding is Rounding.TOWARD_ZERO:
            return sign | max_bits
        if rounding is Rounding.UP and negative:
            return sign | max_bits
        if rounding is Rounding.DOWN and not negative:
            return max_bits
        return away
    if flush_subnormals and 0 < r < Fraction(2) ** emin:
        r = Fraction(0)
    if r == 0:
        return sign if fmt.signed_zero else 0
    return sign | f32_bits(r)


def int_bounds_f32(fmt: IntFormat) -> tuple[float, float]:
    """[min, max] of `fmt` as float32 values: the result is float32, so wide integer formats
    (int32) clamp to the nearest float32 inside their range (2^31 - 128 for int32)."""
    import numpy as np

    lo, hi = np.float32(fmt.min_int), np.float32(fmt.max_int)
    if float(hi) > fmt.max_int:
        hi = np.nextafter(hi, np.float32(0))
    if float(lo) < fmt.min_int:
        lo = np.nextafter(lo, np.float32(0))
    return float(lo), float(hi)


def quantize_int(value: float, fmt: IntFormat, rounding: Rounding = Rounding.NEAREST_EVEN, rand32: int = 0) -> float:
    """Reference for integer formats: round to a multiple of the step, then clamp.
    NaN becomes 0 (integers have no NaN); infinities clamp."""
    if value != value:
        return 0.0
    if value in (float("inf"), float("-inf")):
        lo, hi = int_bounds_f32(fmt)
        return (hi if value > 0 else lo) * fmt.step
    v = Fraction(value) / Fraction(fmt.step)
    negative = v < 0
    mag = abs(v)
    floor = Fraction(mag.__floor__())
    r = _round_between(floor, Fraction(1), mag, negative, rounding, rand32)
    k = -r if negative else r
    lo, hi = int_bounds_f32(fmt)
    k = min(max(k, Fraction(lo)), Fraction(hi))
    return float(k * Fraction(fmt.step))


def quantize_binary(value: float, rounding: Rounding = Rounding.NEAREST_EVEN, rand32: int = 0) -> float:
    """Reference for binary: sign(x) with 0 and NaN -> +1; stochastic: P(+1) = clip((x+1)/2, 0, 1)."""
    if rounding is Rounding.STOCHASTIC:
        if value != value:
            return 1.0
        p = (
            min(max((Fraction(value) + 1) / 2, Fraction(0)), Fraction(1))
            if abs(value) != float("inf")
            else Fraction(int(value > 0))
        )
        return 1.0 if stochastic_up(p, rand32) or p == 1 else -1.0
    return -1.0 if value < 0 else 1.0


def decode_code(code: int, fmt: FloatFormat | IntFormat | BinaryFormat, profile: str | Profile | None = None) -> int:
    """Code -> float32 bits, by reading the code's fields (reference)."""
    if isinstance(fmt, BinaryFormat):
        return f32_bits(1.0 if code & 1 else -1.0)
    if isinstance(fmt, IntFormat):
        k = code - (1 << fmt.bits) if fmt.signed and code >> (fmt.bits - 1) else code
        return f32_bits(Fraction(k) * Fraction(fmt.step))
    prof = get_profile(profile)
    width = fmt.exp_bits + fmt.man_bits
    sign = (code >> width) & 1 if fmt.signed else 0
    mag = code & ((1 << width) - 1)
    sbit = SIGN if sign else 0
    e_field = mag >> fmt.man_bits
    man = mag & ((1 << fmt.man_bits) - 1)
    widened = sbit | EXP_ONES | (man << (23 - fmt.man_bits))
    is_nan = (
        (fmt.nan is NanEncoding.IEEE and e_field == fmt.exp_all_ones and man != 0)
        or (fmt.nan is NanEncoding.FN and mag == (1 << width) - 1)
        or (fmt.nan is NanEncoding.FNUZ and sign and mag == 0)
    )
    if is_nan:
        return prof.decode_nan(fmt, widened)
    if fmt.inf and e_field == fmt.exp_all_ones:
        return sbit | EXP_ONES
    return sbit | f32_bits(fmt.magnitude_value(mag))


def mx_scale_exponents(
    amax: list[float], elem_max: float, elem_emax: int, man_bits: int, rule: str, lo: int = -127, hi: int = 127
) -> list[int | None]:
    """Shared exponent k per block for power-of-two scales (None for NaN/inf blocks), exactly:
    floor: floor(log2 amax) - emax; ceil: smallest k with amax / 2^k <= elem_max;
    even: floor(log2 of amax rounded half up to man_bits mantissa bits) - emax."""
    out: list[int | None] = []
    for a in amax:
        if a != a or a in (float("inf"), float("-inf")):
            out.append(None)
            continue
        if a == 0:
            out.append(lo)
            continue
        v = Fraction(abs(a))
        e = _floor_log2(v)
        if rule == "floor":
            k = e - elem_emax
        elif rule == "ceil":
            k = e - elem_emax
            while v / Fraction(2) ** k > Fraction(elem_max):
                k += 1
        elif rule == "even":
            sig = v / Fraction(2) ** e  # in [1, 2)
            step = Fraction(1, 2**man_bits)
            rounded = (sig / step + Fraction(1, 2)).__floor__() * step
            k = e + (1 if rounded >= 2 else 0) - elem_emax
        else:
            raise InputError(f"unknown scale rule {rule!r}; known: floor, ceil, even")
        out.append(min(max(k, lo), hi))
    return out
