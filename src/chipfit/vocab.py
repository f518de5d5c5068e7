"""Closed sets every stage speaks: what kind of op an op is, which phase of a step ran it, and
how a device runs a precision.

They live here, below every package (formats, hardware, trace, cost, emulate all import them),
so the op-class list exists once: the tracer assigns classes, device files name them (host
fallbacks, per-class overheads), the cost model and the emulator act on the matrix classes.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["DEVICE_OP_CLASSES", "MATRIX_CLASSES", "How", "OpClass", "Phase"]


class OpClass(StrEnum):
    """What an aten op does, for pricing and emulation."""

    MATMUL = "matmul"
    CONV = "conv"
    ATTENTION = "attention"
    ELEMENTWISE = "elementwise"
    REDUCTION = "reduction"
    NORMALIZATION = "normalization"
    SOFTMAX = "softmax"
    EMBEDDING = "embedding"
    DATA_MOVEMENT = "data-movement"  # copies, fills, allocations: bytes, no arithmetic
    VIEW = "view"  # metadata only
    OPTIMIZER = "optimizer"
    OTHER = "other"  # nothing known: reported as uncosted


# the classes a matrix unit runs
MATRIX_CLASSES: frozenset[OpClass] = frozenset({OpClass.MATMUL, OpClass.CONV, OpClass.ATTENTION})
# the classes a device file may name (host fallbacks, per-class costs): views cost nothing, "other" is unknown
DEVICE_OP_CLASSES: tuple[OpClass, ...] = tuple(c for c in OpClass if c not in (OpClass.VIEW, OpClass.OTHER))


class Phase(StrEnum):
    """Which part of a step an op belongs to."""

    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"


class How(StrEnum):
    """How a device runs a precision's matrix ops."""

    NATIVE = "native"  # its matrix unit has the format
    AUTOCAST = "autocast"  # its compiler casts the format to another by default (Neuron: fp32 -> bf16)
    VECTOR = "vector"  # no matrix unit for it: the vector unit runs it (FP32 arithmetic)
    HOST = "host"  # its host CPU runs it, over the host link
    WEIGHT_ONLY = "weight-only"  # weights stored narrow (int8/int4), upcast to the 16-bit compute format
