"""Compatibility profiles: the reference stacks disagree, so bit-exactness is a
claim against a named profile (see shared/reference/numerics.md).

Finite, in-range rounding is the same everywhere. Profiles differ in
- overflow: torch 2.13 saturates float8_e4m3fn (and ±inf) to ±448, ml_dtypes
  returns NaN;
- the NaN bits a round trip produces (torch bf16 → 0xFFFF, numpy fp16 keeps
  signalling NaNs, ml_dtypes fp4/fp6 map NaN to a zero of the opposite sign);
- E8M0: ml_dtypes maps zero and negatives to NaN, torch takes |x| and maps
  zero to 2^-127; both round float32 subnormal inputs by their encoding.

Measured quirk not modelled: torch 2.13 decodes float16 NaN codes to
0x7FFFFFFF in the scalar tail of its vectorised cast loop (the last n mod 8
elements of a tensor); the ``torch`` profile follows the vectorised path.

The default profile is ``torch``: it matches what a PyTorch user's own casts
produce, and its e4m3 saturation is also what CUDA's SATFINITE conversions and
TransformerEngine do. Formats a stack does not have follow the OCP rules.
"""

from __future__ import annotations

from dataclasses import dataclass

from chipfit.formats.spec import FloatFormat, NanEncoding, Overflow

__all__ = ["DEFAULT_PROFILE", "PROFILES", "NanRule", "Profile", "get_profile"]

SIGN = 0x80000000
QNAN = 0x7FC00000
EXP_ONES = 0x7F800000
TORCH_SINGLE_NAN = 0x7F800001  # torch's widening of the fnuz / e8m0 NaN code


@dataclass(frozen=True)
class NanRule:
    """float32 NaN bits b → ((b & keep) | set) ^ (b & flip); if `fix` and the
    result's mantissa is zero, `fix` is or-ed in (keeps a truncated payload a NaN)."""

    keep: int
    set: int
    flip: int = 0
    fix: int = 0

    def apply(self, bits: int) -> int:
        out = ((bits & self.keep) | self.set) ^ (bits & self.flip)
        if self.fix and out & 0x7FFFFF == 0:
            out |= self.fix
        return out & 0xFFFFFFFF


def _payload_mask(fmt: FloatFormat) -> int:
    """float32 mantissa bits that survive narrowing to `fmt`."""
    return 0x7FFFFF & ~((1 << (23 - fmt.man_bits)) - 1)


IDENTITY = NanRule(keep=0xFFFFFFFF, set=0)
CANONICAL = NanRule(keep=SIGN, set=QNAN)
SIGNED_ZERO = NanRule(keep=SIGN, set=0)


@dataclass(frozen=True)
class Profile:
    """A named set of rules for overflow, NaN bits and E8M0 edge cases."""

    name: str
    description: str

    def overflow(self, fmt: FloatFormat) -> Overflow:
        """Default overflow policy for `fmt` (callers may override per call)."""
        if fmt.nan is NanEncoding.NONE:
            return Overflow.SATURATE  # no inf, no NaN: every stack saturates
        if self.name == "ocp-satfinite":
            return Overflow.SATURATE
        if self.name == "torch" and fmt.nan is NanEncoding.FN and fmt.man_bits > 0:
            return Overflow.SATURATE  # torch >= 2.12 float8_e4m3fn casts
        return Overflow.NONSAT

    def nan_rule(self, fmt: FloatFormat) -> NanRule:
        """Bits of quantize(NaN): the NaN code this stack encodes, decoded back."""
        if fmt.exp_bits == 8 and fmt.man_bits == 23:
            return IDENTITY
        if fmt.nan is NanEncoding.NONE:
            if self.name == "ml_dtypes":
                return NanRule(keep=0, set=SIGN, flip=SIGN)  # measured: NaN -> zero of opposite sign
            return SIGNED_ZERO
        if self.name == "torch":
            return self._torch_nan(fmt)
        if self.name == "ml_dtypes":
            if fmt.nan is NanEncoding.IEEE and fmt.exp_bits == 5 and fmt.man_bits == 10:
                # numpy's float16 keeps the (truncated) payload and the signalling bit
                return NanRule(keep=SIGN | _payload_mask(fmt), set=EXP_ONES, fix=1 << (23 - fmt.man_bits))
            if fmt.nan is NanEncoding.FNUZ:
                return NanRule(keep=0, set=SIGN | QNAN)
            if not fmt.signed:
                return NanRule(keep=0, set=QNAN)
            return CANONICAL
        if fmt.nan is NanEncoding.FNUZ:
            return NanRule(keep=0, set=SIGN | QNAN)
        if not fmt.signed:
            return NanRule(keep=0, set=QNAN)
        return CANONICAL

    def _torch_nan(self, fmt: FloatFormat) -> NanRule:
        if fmt.nan is NanEncoding.FNUZ or not fmt.signed:
            return NanRule(keep=0, set=TORCH_SINGLE_NAN)
        if fmt.exp_bits == 8 and fmt.man_bits == 7:
            return NanRule(keep=0, set=0xFFFF0000)  # AVX512 path blends in 0xFFFF for every NaN
        if fmt.nan is NanEncoding.IEEE and fmt.man_bits >= 10:
            return NanRule(keep=SIGN | _payload_mask(fmt), set=QNAN)  # quieted, payload kept
        # 8-bit IEEE and fn: all-ones code of the input's sign, widened with the quiet bit
        return NanRule(keep=SIGN, set=EXP_ONES | _payload_mask(fmt) | 0x400000)

    def negative_to_nan(self, fmt: FloatFormat) -> bool:
        """Unsigned float formats (E8M0): does a negative input become NaN (else |x|)?"""
        return self.name != "torch"

    def zero_to_nan(self, fmt: FloatFormat) -> bool:
        """Formats without zero (E8M0): does 0 become NaN (else the smallest value)?"""
        return self.name != "torch"

    def exact_subnormal_exponent(self, fmt: FloatFormat) -> bool:
        """For formats reaching below float32's normal range (E8M0), round float32
        subnormal inputs by their exact value (OCP profiles) or, as torch and
        ml_dtypes both do, by their encoding: every input in (2^-127, 2^-126) then
        goes to 2^-126 and everything up to 2^-127 to 2^-127."""
        return self.name not in ("torch", "ml_dtypes")

    def decode_nan(self, fmt: FloatFormat, widened: int) -> int:
        """float32 bits of a NaN code, given its plain widening
        sign | 0x7F800000 | mantissa << (23 - man_bits)."""
        if fmt.exp_bits == 8 and fmt.man_bits >= 7:
            return widened  # bf16 / tf32 / f32 decode is a shift in every stack
        if self.name == "torch":
            if fmt.nan is NanEncoding.FNUZ or not fmt.signed:
                return TORCH_SINGLE_NAN
            return widened | 0x400000
        if self.name == "ml_dtypes" and fmt.nan is NanEncoding.IEEE and fmt.exp_bits == 5 and fmt.man_bits == 10:
            return widened  # numpy float16 keeps signalling NaNs
        if fmt.nan is NanEncoding.FNUZ:
            return SIGN | QNAN
        if not fmt.signed:
            return QNAN
        return (widened & SIGN) | QNAN


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile("torch", "bit-exact with torch 2.13 CPU casts (e4m3fn saturates; torch NaN bits)"),
        Profile("ml_dtypes", "bit-exact with ml_dtypes 0.6 / numpy astype (non-saturating)"),
        Profile("ocp-nonsat", "OCP 8-bit FP spec, non-saturating: overflow to inf or NaN, canonical NaN"),
        Profile("ocp-satfinite", "OCP saturating mode (CUDA SATFINITE, ONNX saturate=True): finite overflow to +-max"),
    ]
}
DEFAULT_PROFILE = "torch"


def get_profile(profile: str | Profile | None) -> Profile:
    if profile is None:
        return PROFILES[DEFAULT_PROFILE]
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[profile]
    except (KeyError, TypeError):
        raise ValueError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}") from None
