"""Compatibility profiles: the reference stacks disagree, so bit-exactness is a
claim against a named profile (see shared/reference/numerics.md).

Finite, in-range rounding is the same everywhere. Profiles differ in
- overflow: torch 2.13 saturates float8_e4m3fn (and ±inf) to ±448, ml_dtypes
  returns NaN;
- the NaN bits a round trip produces (torch bf16 → 0xFFFF, numpy fp16 keeps
  signalling NaNs, ml_dtypes fp4/fp6 map NaN to a zero of the opposite sign);
- E8M0: ml_dtypes maps zero and negatives to NaN, torch takes |x| and maps
  zero to 2^-127; torch and ml_dtypes 0.6 round float32 subnormal inputs by
  their encoding, ml_dtypes 0.7 by their value (the one change between 0.6.0
  and 0.7.0 over every input: benchmarks/results/ml_dtypes_versions.md).

The ``ml_dtypes`` name is an alias for the profile of the installed release
(``ml_dtypes-0.6`` or ``ml_dtypes-0.7``); each profile says which release it models.

Measured quirk not modelled: torch 2.13 decodes float16 NaN codes to
0x7FFFFFFF in the scalar tail of its vectorised cast loop (the last n mod 8
elements of a tensor); the ``torch`` profile follows the vectorised path.

The default profile is ``torch``: it matches what a PyTorch user's own casts
produce, and its e4m3 saturation is also what CUDA's SATFINITE conversions and
TransformerEngine do. Formats a stack does not have follow the OCP rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from importlib import metadata

from chipfit.errors import InputError
from chipfit.formats.spec import FloatFormat, NanEncoding, Overflow

__all__ = [
    "ALIASES",
    "DEFAULT_PROFILE",
    "PROFILES",
    "NanBits",
    "NanRule",
    "Profile",
    "Saturation",
    "get_profile",
    "profile_names",
]

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


class NanBits(StrEnum):
    """Whose NaN bit patterns a profile reproduces."""

    TORCH = "torch"  # torch 2.13's CPU casts
    NUMPY = "numpy"  # ml_dtypes' and numpy's astype
    OCP = "ocp"  # canonical quiet NaNs, as the OCP specs write them


class Saturation(StrEnum):
    """Which formats a profile saturates on overflow by default (callers may override per call)."""

    NONE = "none"  # overflow to inf or NaN
    FN = "fn"  # formats with a single NaN per sign and a mantissa (e4m3fn): torch >= 2.12
    ALL = "all"  # every format (CUDA SATFINITE, ONNX saturate=True)


@dataclass(frozen=True)
class Profile:
    """A named set of rules for overflow, NaN bits and E8M0 edge cases, as data.

    `negative_is_nan` / `zero_is_nan`: in unsigned formats without zero (E8M0), does a
    negative input or zero become NaN (else |x| and the smallest value)?
    `subnormal_inputs_by_value`: for formats reaching below float32's normal range
    (E8M0), are float32 subnormal inputs rounded by their exact value? Otherwise they
    are rounded by their encoding, as torch and ml_dtypes 0.6 do: every input in
    (2^-127, 2^-126) then goes to 2^-126 and everything up to 2^-127 to 2^-127.
    `models`: the library release the profile is checked against, if any."""

    name: str
    description: str
    nan_bits: NanBits
    saturation: Saturation
    negative_is_nan: bool
    zero_is_nan: bool
    subnormal_inputs_by_value: bool
    models: str = ""

    def overflow(self, fmt: FloatFormat) -> Overflow:
        """Default overflow policy for `fmt` (callers may override per call)."""
        if fmt.nan is NanEncoding.NONE:
            return Overflow.SATURATE  # no inf, no NaN: every stack saturates
        if self.saturation is Saturation.ALL:
            return Overflow.SATURATE
        if self.saturation is Saturation.FN and fmt.nan is NanEncoding.FN and fmt.man_bits > 0:
            return Overflow.SATURATE
        return Overflow.NONSAT

    def nan_rule(self, fmt: FloatFormat) -> NanRule:
        """Bits of quantize(NaN): the NaN code this stack encodes, decoded back."""
        if fmt.exp_bits == 8 and fmt.man_bits == 23:
            return IDENTITY
        if fmt.nan is NanEncoding.NONE:
            if self.nan_bits is NanBits.NUMPY:
                return NanRule(keep=0, set=SIGN, flip=SIGN)  # measured: NaN -> zero of opposite sign
            return SIGNED_ZERO
        if self.nan_bits is NanBits.TORCH:
            return self._torch_nan(fmt)
        if self.nan_bits is NanBits.NUMPY and fmt.nan is NanEncoding.IEEE and fmt.exp_bits == 5 and fmt.man_bits == 10:
            # numpy's float16 keeps the (truncated) payload and the signalling bit
            return NanRule(keep=SIGN | _payload_mask(fmt), set=EXP_ONES, fix=1 << (23 - fmt.man_bits))
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

    def decode_nan(self, fmt: FloatFormat, widened: int) -> int:
        """float32 bits of a NaN code, given its plain widening
        sign | 0x7F800000 | mantissa << (23 - man_bits)."""
        if fmt.exp_bits == 8 and fmt.man_bits >= 7:
            return widened  # bf16 / tf32 / f32 decode is a shift in every stack
        if self.nan_bits is NanBits.TORCH:
            if fmt.nan is NanEncoding.FNUZ or not fmt.signed:
                return TORCH_SINGLE_NAN
            return widened | 0x400000
        if self.nan_bits is NanBits.NUMPY and fmt.nan is NanEncoding.IEEE and fmt.exp_bits == 5 and fmt.man_bits == 10:
            return widened  # numpy float16 keeps signalling NaNs
        if fmt.nan is NanEncoding.FNUZ:
            return SIGN | QNAN
        if not fmt.signed:
            return QNAN
        return (widened & SIGN) | QNAN


def _ml_dtypes(release: str, by_value: bool, note: str) -> Profile:
    return Profile(
        f"ml_dtypes-{release.rsplit('.', 1)[0]}",
        f"bit-exact with ml_dtypes {release} / numpy astype (non-saturating{note})",
        NanBits.NUMPY,
        Saturation.NONE,
        negative_is_nan=True,
        zero_is_nan=True,
        subnormal_inputs_by_value=by_value,
        models=f"ml_dtypes {release}",
    )


def _ocp(name: str, description: str, saturation: Saturation) -> Profile:
    return Profile(
        name,
        description,
        NanBits.OCP,
        saturation,
        negative_is_nan=True,
        zero_is_nan=True,
        subnormal_inputs_by_value=True,
    )


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in [
        Profile(
            "torch",
            "bit-exact with torch 2.13 CPU casts (e4m3fn saturates; torch NaN bits)",
            NanBits.TORCH,
            Saturation.FN,
            negative_is_nan=False,
            zero_is_nan=False,
            subnormal_inputs_by_value=False,
            models="torch 2.13.0",
        ),
        _ml_dtypes("0.6.0", False, ""),
        _ml_dtypes("0.7.0", True, "; E8M0 rounds float32-subnormal inputs by value"),
        _ocp("ocp-nonsat", "OCP 8-bit FP spec, non-saturating: overflow to inf or NaN, canonical NaN", Saturation.NONE),
        _ocp(
            "ocp-satfinite",
            "OCP saturating mode (CUDA SATFINITE, ONNX saturate=True): finite overflow to +-max",
            Saturation.ALL,
        ),
    ]
}
DEFAULT_PROFILE = "torch"


def _ml_dtypes_profile() -> str:
    """The ml_dtypes profile that models the installed ml_dtypes (the newest modelled
    one when it is not installed, or newer than any profile)."""
    try:
        version = metadata.version("ml_dtypes")
    except metadata.PackageNotFoundError:
        return "ml_dtypes-0.7"
    major_minor = tuple(int(p) for p in re.findall(r"\d+", version)[:2])
    return "ml_dtypes-0.6" if major_minor < (0, 7) else "ml_dtypes-0.7"


# Names that stand for another profile: `ml_dtypes` follows the installed release.
ALIASES: dict[str, str] = {"ml_dtypes": _ml_dtypes_profile()}


def profile_names() -> list[str]:
    """Every name `get_profile` accepts: the profiles, then the aliases."""
    return [*PROFILES, *ALIASES]


def get_profile(profile: str | Profile | None) -> Profile:
    if profile is None:
        return PROFILES[DEFAULT_PROFILE]
    if isinstance(profile, Profile):
        return profile
    try:
        return PROFILES[ALIASES.get(profile, profile)]
    except (KeyError, TypeError):
        raise InputError(f"unknown profile {profile!r}; known: {', '.join(profile_names())}") from None
