"""The precision vocabulary, in one place: names and aliases, how a device runs each one, and
the short labels tables print. cost, emulate, quant and plan all import it from here, so the
numerics can be used without the cost model.

A precision is a format name (`bfloat16`, `nvfp4`, ...) or an alias (`bf16`, `fp8`, ...) that
names the formats it may mean in order of preference; resolving it on a device says which
format the matrix unit uses and how (`How`).
"""

from __future__ import annotations

from dataclasses import dataclass

from chipfit.errors import InputError
from chipfit.formats import FORMATS
from chipfit.hardware.device import Device
from chipfit.vocab import How

__all__ = [
    "MATRIX_PRECISIONS",
    "PRECISION_ALIASES",
    "SHORT_LABELS",
    "WEIGHT_ONLY",
    "How",
    "Precision",
    "SupportRow",
    "precision_label",
    "precision_names",
    "resolve_precision",
    "short_label",
    "support_matrix",
]


PRECISION_ALIASES: dict[str, tuple[str, ...]] = {
    "fp32": ("float32",),
    "tf32": ("tfloat32",),
    "bf16": ("bfloat16",),
    "fp16": ("float16",),
    "fp8": ("float8_e4m3fn", "float8_e4m3fnuz"),
    "e5m2": ("float8_e5m2", "float8_e5m2fnuz"),
    "int8": ("int8",),
    "int4": ("int4",),
    "fp4": ("float4_e2m1fn", "nvfp4", "mxfp4"),
    "mxfp8": ("mxfp8_e4m3",),
}

# weight-only precisions: the weights' storage format; the matrix math runs at 16 bits (bf16, else fp16),
# as TensorRT-LLM's and vLLM's W8A16/W4A16 kernels run it (the weights upcast in the GEMM's prologue)
WEIGHT_ONLY: dict[str, str] = {"w8a16": "int8", "w4a16": "int4"}

# A format's label in tables: the alias it is first in, else these (fnuz variants), else its name.
SHORT_LABELS: dict[str, str] = {
    **{names[0]: alias for alias, names in PRECISION_ALIASES.items()},
    "float8_e4m3fnuz": "fp8fnuz",
    "float8_e5m2fnuz": "e5m2fnuz",
}


def short_label(fmt: str) -> str:
    """The short name of a format in tables (`bfloat16` -> `bf16`, `nvfp4` -> `nvfp4`)."""
    return SHORT_LABELS.get(fmt, fmt)


# how a precision runs, in words: what a label says after the precision's name
HOW_WORDS = {How.VECTOR: "vector unit, no matrix unit for it", How.HOST: "host CPU fallback"}


def precision_label(requested: str, fmt: str, how: How | str) -> str:
    """How a row runs, in its label: `bf16`; a compiler cast names the cast (`fp32→bf16`); a
    format the matrix unit lacks says where it runs (`fp8 (vector unit, no matrix unit for it)`)."""
    how = How(how)
    if how is How.AUTOCAST:
        first = PRECISION_ALIASES.get(requested, (requested,))[0]
        return f"{short_label(first)}→{short_label(fmt)}"
    if how is How.WEIGHT_ONLY:
        return f"{requested} ({WEIGHT_ONLY.get(requested, 'narrow')} weights, {short_label(fmt)} compute)"
    if how in HOW_WORDS:
        return f"{requested} ({HOW_WORDS[how]})"
    return requested


def _weight_only(device: Device, precision: str) -> Precision:
    """w8a16/w4a16: the weights at int8/int4, the math at bf16 (fp16 where the matrix unit lacks bf16:
    T4's W4A16 kernels compute in FP16). Only where the device's stack runs weight-only kernels
    (catalog support.weight_only); elsewhere the 16-bit math is flagged as the device's fallback."""
    w = WEIGHT_ONLY[precision]
    compute = resolve_precision(device, "bf16")
    if not compute.on_matrix_unit:
        half = resolve_precision(device, "fp16")
        compute = half if half.on_matrix_unit else compute
    if w in device.support.weight_only and compute.on_matrix_unit:
        return Precision(precision, compute.format, How.WEIGHT_ONLY, weight_format=w)
    return Precision(precision, compute.format, How(device.support.unsupported_format), weight_format=w)


def precision_names() -> list[str]:
    """Every name `resolve_precision` accepts: the aliases, then the registered formats."""
    return [*PRECISION_ALIASES, *WEIGHT_ONLY, *FORMATS]


@dataclass(frozen=True)
class Precision:
    """What running `requested` on a device means: the format the matrix unit uses and how."""

    requested: str
    format: str  # the effective format of the matrix math
    how: How
    weight_format: str = ""  # weight-only: the weights' storage format ("": the same as `format`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "how", How(self.how))  # a plain string names a member or fails, listing them

    @property
    def on_matrix_unit(self) -> bool:
        """The matrix unit runs it natively, by the compiler's documented cast, or with weights
        stored narrow and upcast (weight-only, where the device's stack does that)."""
        return self.how in (How.NATIVE, How.AUTOCAST, How.WEIGHT_ONLY)

    @property
    def weights(self) -> str:
        """The format the weights are stored and read in."""
        return self.weight_format or self.format


def resolve_precision(device: Device, precision: str) -> Precision:
    """The format and the way `device` runs `precision` (an alias or a format name). The compiler's
    default cast wins over a native unit (Neuron casts FP32 matmuls to BF16); otherwise the first
    format of the alias the device has a peak for; otherwise the device's fallback for formats it
    lacks (`support.unsupported_format`: vector or host)."""
    if precision in WEIGHT_ONLY:
        return _weight_only(device, precision)
    names = PRECISION_ALIASES.get(precision, (precision,))
    if names[0] not in FORMATS:
        raise InputError(f"unknown precision {precision!r}; known: {', '.join(precision_names())}")
    first = names[0]
    if first in device.support.autocast:
        return Precision(precision, device.support.autocast[first], How.AUTOCAST)
    for name in names:
        if device.peak(name):
            return Precision(precision, name, How.NATIVE)
    return Precision(precision, first, How(device.support.unsupported_format))


# the precisions a support matrix lists, in the order tables show them
MATRIX_PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8", "e5m2", "mxfp8", "int8", "int4", "fp4", "w8a16", "w4a16")


@dataclass(frozen=True, kw_only=True)
class SupportRow:
    """How one precision runs on one device: a row of `support_matrix`."""

    precision: str
    format: str  # the format the matrix math runs in
    how: How
    peak_ops_per_s: float  # the rate of the path it runs on (matrix unit, vector unit or host)
    trains: bool  # the device's stack trains in it (catalog training.formats)
    weights: str  # the weights' storage format (weight-only: narrower than `format`)

    @property
    def note(self) -> str:
        if self.how is How.AUTOCAST:
            return f"the compiler casts it to {self.format}"
        if self.how is How.WEIGHT_ONLY:
            return f"{self.weights} weights stored, upcast to {self.format} in the GEMM"
        if self.how is How.VECTOR:
            return "no matrix unit for it: the vector unit runs it"
        if self.how is How.HOST:
            return "no matrix unit for it: the host CPU runs it"
        return "native on the matrix unit" + (f" ({self.format})" if self.format != PRECISION_ALIASES.get(
            self.precision, (self.format,))[0] else "")  # fmt: skip


def support_matrix(device: Device, precisions: tuple[str, ...] = MATRIX_PRECISIONS) -> list[SupportRow]:
    """Every precision's way of running on `device`: native matrix-unit formats (with their peaks),
    compiler casts, weight-only (storage-only narrow weights) and the fallbacks; the planner offers
    exactly the rows whose `how` is on the matrix unit (plan.sweep.offered)."""
    rows = []
    for p in precisions:
        prec = resolve_precision(device, p)
        if prec.on_matrix_unit:
            peak = device.peak(prec.format)
        elif prec.how is How.VECTOR:
            peak = device.compute.vector_ops_per_s
        else:
            peak = 0.0  # the host's rate: not the device's
        rows.append(
            SupportRow(
                precision=p, format=prec.format, how=prec.how, peak_ops_per_s=peak,
                trains=device.trains_in(prec.format) and not prec.weight_format and prec.on_matrix_unit,
                weights=prec.weights,
            )
        )  # fmt: skip
    return rows
