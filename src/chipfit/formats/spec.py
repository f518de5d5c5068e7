"""Number formats as frozen dataclasses whose limits are derived, never typed in.

A float format is fully described by its exponent and mantissa widths, its
bias, and how it spends its special codes (infinities, NaN patterns, signed
zero). Everything else — largest finite value, smallest normal and subnormal,
epsilon, bit width, number of codes — is computed from those fields, so adding
a format is one line in the registry.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from fractions import Fraction

from chipfit.errors import InputError

__all__ = [
    "BinaryFormat",
    "BlockFormat",
    "FloatFormat",
    "Format",
    "IntFormat",
    "NanEncoding",
    "Overflow",
    "Rounding",
    "ScaleRule",
]


class NanEncoding(enum.StrEnum):
    """How a float format spends codes on NaN."""

    IEEE = "ieee"  # exponent all ones, mantissa non-zero (many NaN codes)
    FN = "fn"  # only the all-ones magnitude pattern is NaN ("finite, NaN")
    FNUZ = "fnuz"  # the negative-zero code is the single NaN ("finite, NaN, unsigned zero")
    NONE = "none"  # no NaN at all (fp4, fp6)


class Rounding(enum.StrEnum):
    """Rounding modes of `quantize`."""

    NEAREST_EVEN = "nearest-even"
    NEAREST_AWAY = "nearest-away"
    TOWARD_ZERO = "toward-zero"
    UP = "up"  # toward +inf
    DOWN = "down"  # toward -inf
    STOCHASTIC = "stochastic"


class Overflow(enum.StrEnum):
    """What a finite value beyond the largest finite one becomes."""

    SATURATE = "saturate"  # clamp to +-max
    NONSAT = "nonsat"  # inf where the format has one, else NaN (IEEE 754 semantics)


class ScaleRule(enum.StrEnum):
    """How a block format picks its shared power-of-two scale from the block's amax."""

    FLOOR = "floor"  # OCP MX v1.0: 2^(floor(log2 amax) - emax_elem); may clip the top
    CEIL = "ceil"  # NVIDIA/torchao RCEIL: smallest 2^k with amax / 2^k <= max_elem; never clips
    EVEN = "even"  # torchao EVEN: amax rounded (half up) to the element precision, then floor


def container_bits(bits: int) -> int:
    """Bits one element of a `bits`-wide format occupies in memory. Formats up to 8 bits are
    packed at their width (two int4/fp4 codes per byte, four fp6 codes in three bytes, as the
    stacks that store them do); wider ones fill the next power-of-two word: TF32's 19 bits
    have no memory format of their own and live in 32-bit words."""
    return bits if bits <= 8 else 1 << (bits - 1).bit_length()


def _check_name(name: str) -> None:
    if not name or not all(c.isalnum() or c in "_-" for c in name):
        raise InputError(f"format name {name!r} must be non-empty letters, digits, '_' or '-'")


@dataclass(frozen=True)
class FloatFormat:
    """A binary floating-point format of at most 32 bits that fits inside float32.

    `subnormals=True` means exponent code 0 encodes zero and subnormals (IEEE);
    `False` means exponent code 0 is an ordinary binade and the format has no
    zero (OCP E8M0). `signed=False` drops the sign bit.
    """

    name: str
    exp_bits: int
    man_bits: int
    bias: int
    inf: bool
    nan: NanEncoding
    subnormals: bool = True
    signed: bool = True

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not isinstance(self.nan, NanEncoding):
            object.__setattr__(self, "nan", NanEncoding(self.nan))
        if not 1 <= self.exp_bits <= 8:
            raise InputError(f"{self.name}: exp_bits must be in 1..8, got {self.exp_bits}")
        if not 0 <= self.man_bits <= 23:
            raise InputError(f"{self.name}: man_bits must be in 0..23, got {self.man_bits}")
        if self.inf and self.nan is not NanEncoding.IEEE:
            raise InputError(f"{self.name}: infinities need the IEEE NaN encoding (exponent all ones)")
        if self.nan is NanEncoding.FNUZ and not self.signed:
            raise InputError(f"{self.name}: fnuz needs a sign bit (its NaN is the negative-zero code)")
        if self.nan is NanEncoding.IEEE and self.man_bits == 0 and not self.inf:
            raise InputError(f"{self.name}: IEEE NaN needs at least one mantissa bit")
        if self.max_exponent > 127 or self.min_exponent - self.man_bits < -149:
            raise InputError(
                f"{self.name}: range 2^{self.min_exponent - self.man_bits}..2^{self.max_exponent} "
                "does not fit in float32 (2^-149..2^127)"
            )

    # -- widths and codes -------------------------------------------------
    @property
    def bits(self) -> int:
        return int(self.signed) + self.exp_bits + self.man_bits

    @property
    def storage_bits(self) -> int:
        """Bits one element occupies in memory (TF32: 32)."""
        return container_bits(self.bits)

    @property
    def num_codes(self) -> int:
        return 1 << self.bits

    @property
    def exp_all_ones(self) -> int:
        return (1 << self.exp_bits) - 1

    @property
    def max_magnitude_code(self) -> int:
        """Code (sign bit clear) of the largest finite value."""
        all_ones = (1 << (self.exp_bits + self.man_bits)) - 1
        if self.nan is NanEncoding.IEEE or self.inf:
            return (self.exp_all_ones - 1) << self.man_bits | ((1 << self.man_bits) - 1)
        if self.nan is NanEncoding.FN:
            return all_ones - 1
        return all_ones

    @property
    def signed_zero(self) -> bool:
        """Whether -0 exists (fnuz formats spend that code on NaN)."""
        return self.signed and self.subnormals and self.nan is not NanEncoding.FNUZ

    @property
    def has_zero(self) -> bool:
        return self.subnormals

    # -- derived limits ---------------------------------------------------
    @property
    def min_exponent(self) -> int:
        """Exponent of the smallest normal value."""
        return (1 if self.subnormals else 0) - self.bias

    @property
    def max_exponent(self) -> int:
        return (self.max_magnitude_code >> self.man_bits) - self.bias

    def magnitude_value(self, code: int) -> Fraction:
        """Exact value of a finite magnitude code (sign bit clear)."""
        e_field = code >> self.man_bits
        m = code & ((1 << self.man_bits) - 1)
        if self.subnormals and e_field == 0:
            return Fraction(m) * Fraction(2) ** (self.min_exponent - self.man_bits)
        return (1 + Fraction(m, 1 << self.man_bits)) * Fraction(2) ** (e_field - self.bias)

    @property
    def max(self) -> float:
        return float(self.magnitude_value(self.max_magnitude_code))

    @property
    def min_normal(self) -> float:
        return math.ldexp(1.0, self.min_exponent)

    @property
    def min_subnormal(self) -> float:
        """Smallest positive value (the smallest normal when there are no subnormals)."""
        if self.subnormals and self.man_bits > 0:
            return math.ldexp(1.0, self.min_exponent - self.man_bits)
        return self.min_normal

    @property
    def eps(self) -> float:
        """Distance from 1.0 to the next larger value."""
        return math.ldexp(1.0, -self.man_bits)

    @property
    def kind(self) -> str:
        return "float"

    def describe(self) -> str:
        specials = []
        specials.append("inf" if self.inf else "no inf")
        specials.append({"ieee": "IEEE NaN", "fn": "one NaN/sign", "fnuz": "NaN=-0", "none": "no NaN"}[self.nan.value])
        if not self.signed:
            specials.append("unsigned")
        return f"E{self.exp_bits}M{self.man_bits} bias {self.bias}, " + ", ".join(specials)


@dataclass(frozen=True)
class IntFormat:
    """A two's-complement (or unsigned) integer, optionally fixed point.

    Values are k * 2^-frac_bits for integers k in [min_int, max_int]. `narrow`
    drops the most negative code so the range is symmetric (-127..127).
    """

    name: str
    bits: int
    signed: bool
    frac_bits: int = 0
    narrow: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        if not 1 <= self.bits <= 32:
            raise InputError(f"{self.name}: bits must be in 1..32, got {self.bits}")
        if self.narrow and not self.signed:
            raise InputError(f"{self.name}: narrow range only applies to signed integers")

    @property
    def num_codes(self) -> int:
        return 1 << self.bits

    @property
    def storage_bits(self) -> int:
        """Bits one element occupies in memory."""
        return container_bits(self.bits)

    @property
    def min_int(self) -> int:
        if not self.signed:
            return 0
        return -(1 << (self.bits - 1)) + int(self.narrow)

    @property
    def max_int(self) -> int:
        return (1 << (self.bits - 1)) - 1 if self.signed else (1 << self.bits) - 1

    @property
    def step(self) -> float:
        return math.ldexp(1.0, -self.frac_bits)

    @property
    def max(self) -> float:
        return self.max_int * self.step

    @property
    def min(self) -> float:
        return self.min_int * self.step

    @property
    def eps(self) -> float:
        return self.step

    @property
    def kind(self) -> str:
        return "int"

    def describe(self) -> str:
        s = f"{'signed' if self.signed else 'unsigned'} {self.bits}-bit"
        if self.frac_bits:
            s += f", step 2^-{self.frac_bits}"
        return s + (", narrow" if self.narrow else "")


@dataclass(frozen=True)
class BinaryFormat:
    """One bit per value: -1 or +1 (binarized networks). Code 1 is +1, 0 is -1."""

    name: str = "binary"

    @property
    def bits(self) -> int:
        return 1

    @property
    def storage_bits(self) -> int:
        return 1

    @property
    def num_codes(self) -> int:
        return 2

    @property
    def max(self) -> float:
        return 1.0

    @property
    def kind(self) -> str:
        return "binary"

    def describe(self) -> str:
        return "+-1, sign of the input (0 -> +1)"


ElementFormat = FloatFormat | IntFormat


@dataclass(frozen=True)
class BlockFormat:
    """Block-scaled format: `block_size` elements share one scale along an axis.

    MX (OCP v1.0) uses a power-of-two E8M0 scale chosen by `scale_rule`;
    NVFP4 uses an E4M3 scale per 16 elements times one FP32 tensor scale.
    """

    name: str
    element: ElementFormat
    block_size: int
    scale: FloatFormat
    scale_rule: ScaleRule = ScaleRule.FLOOR
    tensor_scale: bool = False

    def __post_init__(self) -> None:
        _check_name(self.name)
        if self.block_size < 1:
            raise InputError(f"{self.name}: block_size must be >= 1")
        if not isinstance(self.scale_rule, ScaleRule):
            object.__setattr__(self, "scale_rule", ScaleRule(self.scale_rule))
        if self.element.max <= 0:
            raise InputError(f"{self.name}: element format has no positive values")

    @property
    def element_emax(self) -> int:
        """Exponent of the largest power of two the element format can hold."""
        return math.floor(math.log2(self.element.max))

    @property
    def bits(self) -> float:
        """Average bits per element, the block's scale included (the tensor scale of NVFP4,
        32 bits per tensor, is left out)."""
        return self.storage_bits

    @property
    def storage_bits(self) -> float:
        """Bits one element occupies in memory with its share of the block scale: MXFP4 4.25,
        NVFP4 4.5, MXFP8 8.25."""
        return self.element.storage_bits + self.scale.storage_bits / self.block_size

    @property
    def max(self) -> float:
        return self.element.max * self.scale.max

    @property
    def kind(self) -> str:
        return "block"

    def describe(self) -> str:
        extra = " x FP32 tensor scale" if self.tensor_scale else ""
        return f"{self.block_size} x {self.element.name}, {self.scale.name} scale ({self.scale_rule.value}){extra}"


Format = FloatFormat | IntFormat | BinaryFormat | BlockFormat
