"""Numerics policies: what a chip does to each op's numbers at one precision.

A `NumericsPolicy` is plain frozen data. It says, for the matrix-like ops
(matmul, conv, attention), which format each operand is rounded to and how it
is scaled, how the K dimension is accumulated and what format the result is
stored in; which op classes compute in FP32 (softmax, normalizations,
reductions and losses, as PyTorch's autocast lists do); which op classes run
on the host; and how the other ops' outputs are stored.

`policy_for(device, precision)` derives one from the catalog: the precision is
resolved exactly as the cost model resolves it (`hardware.precision.resolve_precision`), so
the format that is priced is the format that is emulated.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum

from chipfit.emulate.accumulate import Accumulation, get_accumulation
from chipfit.errors import InputError
from chipfit.formats import BlockFormat, FloatFormat, IntFormat, get_format
from chipfit.formats.quantize import parse_rounding
from chipfit.hardware import Device, get_device
from chipfit.hardware.precision import PRECISION_ALIASES, How, resolve_precision

__all__ = [
    "FP32_CLASSES",
    "SCALING_KINDS",
    "NumericsPolicy",
    "Operand",
    "Scaling",
    "ScalingKind",
    "list_precisions",
    "policy_for",
]


class ScalingKind(StrEnum):
    """How an operand is scaled into its format (see Scaling)."""

    NONE = "none"
    DYNAMIC = "dynamic"
    DELAYED = "delayed"
    PER_CHANNEL = "per-channel"
    PER_ROW = "per-row"


SCALING_KINDS = tuple(ScalingKind)
AMAX_ALGOS = ("max", "most-recent")
# autocast's FP32 lists (torch/amp/autocast_mode, cuda and cpu): softmax, norms, reductions, losses
FP32_CLASSES = ("softmax", "normalization", "reduction")


@dataclass(frozen=True)
class Scaling:
    """How an operand is scaled into its format before rounding.

    none: round the values as they are (bf16, fp16, tf32).
    dynamic: one scale per tensor from the current amax (scale = fmt_max / amax / 2^margin).
    delayed: one scale per tensor from an amax history, as TransformerEngine's
      DelayedScaling: the scale used at step t comes from the history up to t-1
      (1.0 before any history); `amax_algo` max (over `history`) or most-recent.
    per-channel: one scale per output channel (weights: columns of B, rows of a conv weight).
    per-row: one scale per row of A (per token), from the current amax.
    Integer formats use symmetric scales (amax maps to the largest positive code).
    Block formats (MX, NVFP4) carry their own block scales and ignore this.
    """

    kind: ScalingKind = ScalingKind.NONE
    history: int = 1024
    margin: int = 0
    amax_algo: str = "max"

    def __post_init__(self) -> None:
        if self.kind not in SCALING_KINDS:
            raise InputError(f"unknown scaling {self.kind!r}; known: {', '.join(SCALING_KINDS)}")
        object.__setattr__(self, "kind", ScalingKind(self.kind))  # a name given as a string becomes the member
        if self.amax_algo not in AMAX_ALGOS:
            raise InputError(f"unknown amax_algo {self.amax_algo!r}; known: {', '.join(AMAX_ALGOS)}")
        if self.history < 1:
            raise InputError(f"history must be >= 1, got {self.history}")


@dataclass(frozen=True)
class Operand:
    """One matrix-op input: its format, how it is scaled, how it is rounded."""

    format: str = "float32"
    scaling: Scaling = field(default_factory=Scaling)
    rounding: str = "nearest-even"

    def __post_init__(self) -> None:
        f = get_format(self.format)  # unknown names raise, listing the known ones
        parse_rounding(self.rounding)
        if isinstance(f, IntFormat) and self.scaling.kind == "none":
            kinds = ", ".join(SCALING_KINDS[1:])
            raise InputError(f"{self.format} operands need a scale; scaling must be one of {kinds}")

    @property
    def exact(self) -> bool:
        """True when the operand is used as it is (FP32 in, no rounding)."""
        return self.format == "float32"

    @property
    def block(self) -> bool:
        return isinstance(get_format(self.format), BlockFormat)

    @property
    def integer(self) -> bool:
        return isinstance(get_format(self.format), IntFormat)


@dataclass(frozen=True)
class NumericsPolicy:
    """What one chip at one precision does to the numbers of every op class.

    a, b: the two inputs of matmul-like ops (b is the weight of linear/conv).
    grad: the format of gradient operands in backward matmuls (e.g. E5M2 in FP8 training).
    accumulate: how the K dimension is summed (see emulate.accumulate).
    output: the storage format of matrix-op results.
    activations: how other ops store their results. "promote" follows torch's type
      promotion under autocast: an op's output keeps the narrowest common storage
      format of its inputs, and FP32 inputs give FP32. A format name stores every
      non-FP32-class result in that format, as compilers that cast a whole graph do.
    fp32_classes: op classes computed and stored in FP32.
    host_classes: op classes the chip leaves to its host (FP32 there), listed as fallbacks.
    matrix_fallback: "" when the matrix unit runs the precision; else where matrix ops go
      instead ("vector" or "host"), in FP32, listed as fallbacks.
    """

    name: str
    a: Operand = field(default_factory=Operand)
    b: Operand = field(default_factory=Operand)
    grad: Operand | None = None
    accumulate: Accumulation = field(default_factory=Accumulation)
    output: str = "float32"
    activations: str = "promote"  # "promote" or a float format name
    fp32_classes: tuple[str, ...] = FP32_CLASSES
    host_classes: tuple[str, ...] = ()
    matrix_fallback: str = ""
    device: str = ""
    precision: str = ""
    notes: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        for fmt in (self.output, *([] if self.activations == "promote" else [self.activations])):
            if not isinstance(get_format(fmt), FloatFormat):
                raise InputError(f"storage format {fmt!r} must be a float format (outputs hold real values)")
        if self.matrix_fallback not in ("", "vector", "host"):
            raise InputError(f"matrix_fallback must be '', 'vector' or 'host', got {self.matrix_fallback!r}")

    @property
    def exact(self) -> bool:
        """True when matrix ops run as plain FP32 (nothing rounded, default accumulation)."""
        return self.a.exact and self.b.exact and self.accumulate.default and self.output == "float32"

    def with_(self, **changes: object) -> NumericsPolicy:
        """A copy with some fields changed (e.g. a different accumulation)."""
        return replace(self, **changes)  # type: ignore[arg-type]

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "device": self.device,
            "precision": self.precision,
            "a": _operand_text(self.a),
            "b": _operand_text(self.b),
            "grad": _operand_text(self.grad) if self.grad else _operand_text(self.a),
            "accumulate": self.accumulate.describe(),
            "output": self.output,
            "activations": self.activations,
            "fp32_classes": list(self.fp32_classes),
            "host_classes": list(self.host_classes),
            "matrix_fallback": self.matrix_fallback or "none",
            "notes": list(self.notes),
        }


def _operand_text(op: Operand) -> str:
    if op.exact:
        return "float32"
    parts = [op.format]
    if op.scaling.kind != "none" and not op.block:
        s = op.scaling
        parts.append(s.kind if s.kind != "delayed" else f"delayed(h={s.history},{s.amax_algo},m={s.margin})")
    if op.rounding != "nearest-even":
        parts.append(op.rounding)
    return " ".join(parts)


# ----------------------------------------------------------------- catalog-derived policies
# FP8 training as TransformerEngine's default recipe: E4M3 forward, E5M2 gradients
# ("HYBRID"), delayed scaling with a 1024-step history and margin 0 (TE DelayedScaling defaults).
_TE_DELAYED = Scaling(ScalingKind.DELAYED, history=1024, margin=0, amax_algo="max")


def list_precisions() -> tuple[str, ...]:
    """The precision names policies are built for (the cost model's aliases)."""
    return tuple(PRECISION_ALIASES)


def policy_for(
    device: str | Device,
    precision: str,
    *,
    accumulate: str | Accumulation | None = None,
    tf32_rounding: str = "nearest-even",
    fp8_scaling: str = "dynamic",
) -> NumericsPolicy:
    """The policy of `device` at `precision`: an alias (fp32, tf32, bf16, fp16, fp8, e5m2, int8, int4,
    fp4, mxfp8) or a format name (bfloat16, nvfp4, ...), resolved as the cost model resolves it.

    accumulate: an accumulation preset name or object (default: FP32 accumulation of exact products).
    tf32_rounding: how FP32 inputs are rounded to TF32 (nearest-even by default, an assumption:
      PTX's cvt.rna.tf32.f32 rounds ties away, tensor cores fed raw FP32 bits truncate).
    fp8_scaling: dynamic (current amax, as torchao's float8 and TransformerEngine's current-scaling
      recipe) or delayed (TransformerEngine's DelayedScaling: amax history of 1024, scale 1 at the start).
    """
    dev = get_device(device) if isinstance(device, str) else device
    if fp8_scaling not in ("delayed", "dynamic"):
        raise InputError(f"unknown fp8_scaling {fp8_scaling!r}; known: delayed, dynamic")
    acc = get_accumulation(accumulate) if accumulate is not None else Accumulation()
    prec = resolve_precision(dev, precision)  # an alias or a format name; unknown names list both
    host = tuple(dev.support.host_op_classes)
    auto = dict(dev.support.autocast)
    # compilers that cast whole FP32 graphs (Neuron --auto-cast, XLA on TPU) store every activation
    # in the low-precision format; eager GPUs follow autocast's promotion rule
    compiler_cast = "float32" in auto
    base = NumericsPolicy(
        name=f"{dev.name}:{precision}",
        device=dev.name,
        precision=precision,
        host_classes=host,
        accumulate=acc,
        activations="promote",
    )
    if prec.how in (How.VECTOR, How.HOST):
        where = "the host CPU" if prec.how is How.HOST else "the vector unit"
        return replace(
            base,
            matrix_fallback=prec.how,
            notes=(f"{dev.name} has no {prec.format} matrix unit: matrix ops run in FP32 on {where}",),
        )
    if prec.how is How.WEIGHT_ONLY:  # the 16-bit policy, with the weights rounded to int8/int4 first
        math = policy_for(dev, prec.format, accumulate=accumulate, tf32_rounding=tf32_rounding)
        return replace(
            math, name=base.name, precision=precision, b=Operand(prec.weights, Scaling(ScalingKind.PER_CHANNEL)),
            notes=(*math.notes, f"weight-only: {prec.weights} weights with one scale per output channel (deployed "
                   f"kernels use groups of 128: per-channel is the less accurate side), {prec.format} math"),
        )  # fmt: skip
    fmt = prec.format
    notes: list[str] = []
    if prec.how is How.AUTOCAST:
        notes.append(f"the compiler casts {precision} to {fmt} (catalog: support.autocast)")
    f = get_format(fmt)
    if fmt == "float32":
        return replace(base, notes=tuple(notes))
    if fmt == "tfloat32":
        op = Operand("tfloat32", rounding=tf32_rounding)
        return replace(base, a=op, b=op, notes=(*notes, "TF32: inputs rounded to 10 mantissa bits, FP32 out"))
    if isinstance(f, BlockFormat):
        op = Operand(fmt)
        act = "bfloat16" if compiler_cast else "promote"
        return replace(base, a=op, b=op, output="bfloat16", activations=act, notes=tuple(notes))
    if isinstance(f, IntFormat):
        acc_i = Accumulation() if accumulate is None else acc
        notes.append(f"{fmt}: symmetric per-tensor dynamic activations, per-channel weights, exact INT32 accumulation")
        return replace(
            base,
            a=Operand(fmt, Scaling(ScalingKind.DYNAMIC)),
            b=Operand(fmt, Scaling(ScalingKind.PER_CHANNEL)),
            accumulate=acc_i,
            notes=tuple(notes),
        )
    if not isinstance(f, FloatFormat):  # e.g. a device file whose autocast names a binary format
        raise InputError(f"{dev.name}: precision {precision!r} resolves to {fmt}, which has no matrix-unit numerics")
    if f.bits < 8:  # FP4/FP6 tensor cores always run block-scaled (NVFP4 or MX); else per-tensor scales
        block = next((b for b in ("nvfp4", "mxfp4") if dev.peak(b)), None)
        op = Operand(block) if block else Operand(fmt, Scaling(ScalingKind.DYNAMIC))
        notes.append(f"{fmt}: {block + ' block scales' if block else 'per-tensor dynamic scales'}, BF16 out")
        act = "bfloat16" if compiler_cast else "promote"
        return replace(base, a=op, b=op, output="bfloat16", activations=act, notes=tuple(notes))
    if f.bits == 8:  # FP8: scaled operands, BF16 out; gradients in E5M2 when the chip has it
        scaling = _TE_DELAYED if fp8_scaling == "delayed" else Scaling(ScalingKind.DYNAMIC)
        grad_fmt = next((g for g in ("float8_e5m2", "float8_e5m2fnuz") if dev.peak(g)), fmt)
        if fmt.endswith("fnuz") and dev.peak("float8_e5m2fnuz"):
            grad_fmt = "float8_e5m2fnuz"
        op = Operand(fmt, scaling)
        notes.append(f"FP8: {fmt} forward, {grad_fmt} gradients, {scaling.kind} per-tensor scaling, BF16 out")
        return replace(
            base, a=op, b=op, grad=Operand(grad_fmt, scaling), output="bfloat16",
            activations="bfloat16" if compiler_cast else "promote",
            notes=tuple(notes),
        )  # fmt: skip
    op = Operand(fmt)
    return replace(base, a=op, b=op, output=fmt, activations=fmt if compiler_cast else "promote", notes=tuple(notes))
