"""What an emulated run reports: per-op-site statistics (formats, fallbacks, SQNR against the
FP32 shadow) and, for training, what rounding gradients to their storage formats flushed or
overflowed."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.weak import WeakTensorKeyDictionary

from chipfit.emulate.policy import NumericsPolicy

__all__ = ["OpStat", "Report", "RoundingCount", "RoundingWatch"]


@dataclass
class OpStat:
    """One op site (phase, module, op) aggregated over its calls."""

    order: int
    phase: str
    module: str
    op: str
    op_class: str
    numerics: str
    fallback: str  # "" | host | vector | unclassified
    calls: int = 0
    signal: float = 0.0  # sum of squares of the FP32 shadow output
    noise: float = 0.0  # sum of squares of (emulated - shadow)
    measured: bool = False

    @property
    def sqnr_db(self) -> float | None:
        """Signal-to-quantization-noise ratio of this op's output against the FP32 shadow run."""
        if not self.measured:
            return None
        if self.noise == 0:
            return math.inf
        if self.signal == 0:
            return -math.inf
        # as a difference of logs: signal / noise underflows to 0.0 for a subnormal signal (an op whose
        # FP32 output is all but zero, e.g. a masked score), and log10(0) is a domain error
        return 10 * (math.log10(self.signal) - math.log10(self.noise))

    def as_dict(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "module": self.module,
            "op": self.op,
            "op_class": self.op_class,
            "numerics": self.numerics,
            "fallback": self.fallback or None,
            "calls": self.calls,
            "sqnr_db": self.sqnr_db,
        }


@dataclass
class Report:
    policy: NumericsPolicy
    rows: list[OpStat]
    shadow: bool

    @property
    def fallbacks(self) -> list[OpStat]:
        return [r for r in self.rows if r.fallback]

    def as_dict(self) -> dict[str, Any]:
        return {
            "policy": self.policy.describe(),
            "shadow": self.shadow,
            "ops": [r.as_dict() for r in self.rows],
            "fallbacks": [r.as_dict() for r in self.fallbacks],
        }

    def worst(self, n: int = 5) -> list[OpStat]:
        """The n op sites with the lowest SQNR (needs shadow=True)."""
        measured = [r for r in self.rows if r.sqnr_db is not None]
        return sorted(measured, key=lambda r: r.sqnr_db if r.sqnr_db is not None else math.inf)[:n]


@dataclass
class RoundingCount:
    """What rounding to a storage format did to a set of values."""

    values: int = 0
    nonzero: int = 0  # values that were not zero before rounding
    underflow: int = 0  # nonzero values that became zero
    overflow: int = 0  # finite values that became inf (or NaN)

    def add(self, other: RoundingCount) -> None:
        self.values += other.values
        self.nonzero += other.nonzero
        self.underflow += other.underflow
        self.overflow += other.overflow

    @property
    def underflow_fraction(self) -> float:
        return self.underflow / self.values if self.values else 0.0

    @property
    def overflow_fraction(self) -> float:
        return self.overflow / self.values if self.values else 0.0

    @staticmethod
    def of(before: torch.Tensor, after: torch.Tensor) -> RoundingCount:
        b, a = before.detach(), after.detach()
        nz = b != 0
        return RoundingCount(
            int(b.numel()),
            int(nz.sum()),
            int((nz & (a == 0)).sum()),
            int((torch.isfinite(b) & ~torch.isfinite(a)).sum()),
        )


@dataclass
class RoundingWatch:
    """Counts, during backward, what storing each op's output in its format flushes to zero
    or overflows: per op and per output tensor (so a gradient can be traced to its parameter)."""

    by_op: dict[str, RoundingCount] = field(default_factory=dict)
    by_tensor: WeakTensorKeyDictionary = field(default_factory=WeakTensorKeyDictionary)

    def record(self, op: str, before: torch.Tensor, after: torch.Tensor) -> None:
        c = RoundingCount.of(before, after)
        self.by_op.setdefault(op, RoundingCount()).add(c)
        self.by_tensor[after] = c

    def total(self) -> RoundingCount:
        t = RoundingCount()
        for c in self.by_op.values():
            t.add(c)
        return t

    def reset(self) -> None:
        self.by_op.clear()
