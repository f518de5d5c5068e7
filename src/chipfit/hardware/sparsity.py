"""Structured sparsity as a fact about weights and a chip: the N:M pattern, and a device's sparse
matrix math.

A pattern keeps N of every M consecutive weights along the reduction dimension (2:4: NVIDIA's sparse
tensor cores since Ampere, AMD's sparse matrix cores on CDNA 3). A chip's sparse matrix unit runs a
GEMM whose sparse operand satisfies its pattern at its printed sparse peak, reading the kept values
plus index metadata in place of the dense operand (`hardware.device.SparseMath`, catalog section
`[NAME.sparsity]`).

A weight pruned to one pattern runs on hardware built for another when every group of the hardware's
size holds at most the hardware's count: 1:4 and 2:8 weights run on 2:4 units, 4:8 weights do not
(`Pattern.runs_on`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from chipfit.errors import InputError

__all__ = ["Pattern"]


@dataclass(frozen=True)
class Pattern:
    """N:M (keep n of every m along the reduction dimension), or unstructured at `share` pruned."""

    n: int = 2
    m: int = 4
    share: float | None = None  # unstructured: the pruned share

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """'2:4', '1:4', '4:8' or 'unstructured:0.5'."""
        try:
            if text.startswith("unstructured:"):
                share = float(text.split(":", 1)[1])
                if 0 <= share < 1:
                    return cls(share=share)
            else:
                n, m = (int(x) for x in text.split(":"))
                if 0 < n <= m:
                    return cls(n, m)
        except ValueError:
            pass
        raise InputError(
            f"pattern {text!r}: give N:M with 0 < N <= M (2:4, 4:8) or unstructured:SHARE with 0 <= SHARE < 1 (0.5)"
        )

    @property
    def structured(self) -> bool:
        return self.share is None

    @property
    def kept(self) -> float:
        """The share of weights kept."""
        return self.n / self.m if self.share is None else 1.0 - self.share

    @property
    def index_bits(self) -> int:
        """Metadata bits per kept value: its position within its group of m (2:4: 2 bits)."""
        return max(1, math.ceil(math.log2(self.m))) if self.structured and self.m > 1 else 0

    def compressed_share(self, storage_bits: int) -> float:
        """Bytes a compressed N:M weight stores per dense byte at `storage_bits` per value: the kept
        values plus their index metadata (2:4 FP16: (2 x 16 + 2 x 2) / (4 x 16) = 0.5625)."""
        if not self.structured:
            raise InputError("unstructured sparsity has no fixed compressed layout on a matrix unit")
        return self.kept * (1 + self.index_bits / storage_bits)

    def runs_on(self, hardware: Pattern) -> bool:
        """Does every group of the hardware's m weights hold at most its n nonzeros? (1:4 and 2:8 run on
        2:4; 4:8 does not.)"""
        if not (self.structured and hardware.structured):
            return False
        if hardware.m % self.m == 0:  # whole groups of ours inside one of the hardware's
            return self.n * (hardware.m // self.m) <= hardware.n
        if self.m % hardware.m == 0:  # one of ours spans several of the hardware's: all n may fall in one
            return self.n <= hardware.n
        return False

    def describe(self) -> str:
        return f"unstructured {self.share:.0%}" if self.share is not None else f"{self.n}:{self.m}"

    def __str__(self) -> str:
        return f"unstructured:{self.share:g}" if self.share is not None else f"{self.n}:{self.m}"
