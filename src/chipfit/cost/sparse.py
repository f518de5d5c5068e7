"""Which of a trace's GEMMs run sparse, and what a sparse GEMM costs a device.

A forward GEMM whose weights are pruned to an N:M pattern (`SparseLayers`: the pattern and the module
names of the pruned layers, from `chipfit.sparsity`) runs, on a chip whose catalog entry lists sparse
math for the pattern and format (`Device.sparsity`):

- compute at the sparse rate: the GEMM as the unit models price it (tiling, waves, latency), its
  work done at the sparse-over-dense peak ratio (a 2:4 sparse MMA covers twice the K of a dense one
  in the same cycles: mma.sp m16n8k32 beside mma m16n8k16) times what sparse kernels achieve of that
  ratio on large GEMMs (`SparseMath.efficiency`, from published sparse-vs-dense GEMM sweeps: A100
  FP16 1.28x of 2x);
- memory: the weights read compressed, the kept values plus their index metadata in the hardware
  pattern's layout at the weights' storage width (`Pattern.compressed_share`); other inputs as dense;
- arithmetic energy for the multiplications it does (the kept ones); assumed proportional.

On a chip without sparse math for them, the same GEMM costs what the dense one costs: its runtime
multiplies the zeros (the weights stay dense in memory). Backward GEMMs (training) stay dense: the
pattern runs along the forward reduction only, and the gradients are dense.
"""

from __future__ import annotations

from dataclasses import dataclass

from chipfit.hardware import Device
from chipfit.hardware.sparsity import Pattern
from chipfit.trace.records import OpRecord
from chipfit.vocab import MATRIX_CLASSES, Phase

__all__ = ["SparseGemm", "SparseLayers", "sparse_gemm"]

TRACED_BYTES_PER_WEIGHT = 4  # the tracer records FP32 parameters


@dataclass(frozen=True)
class SparseLayers:
    """Layers whose weights are pruned to `pattern` (module names, as the trace records them)."""

    pattern: Pattern
    layers: frozenset[str]

    def covers(self, rec: OpRecord) -> bool:
        """Is `rec` a forward GEMM reading the weights of a pruned layer?"""
        return (
            rec.module in self.layers and rec.op_class in MATRIX_CLASSES and rec.param_bytes > 0
            and rec.gemm is not None and rec.phase == Phase.FORWARD
        )  # fmt: skip

    def describe(self) -> str:
        return f"{self.pattern.describe()} on {len(self.layers)} layers"


@dataclass(frozen=True)
class SparseGemm:
    """How one covered GEMM runs on one device at one format."""

    hardware: Pattern  # the pattern of the unit that runs it
    speedup: float  # on large GEMMs: sparse peak / dense peak x what sparse kernels achieve of it
    peak_ops_per_s: float
    weight_bytes: float  # of the record's traced param bytes, those of the pruned weight (FP32)
    weight_share: float  # compressed bytes per dense byte of that weight at its storage width


def sparse_gemm(device: Device, fmt: str, weight_bits: int, rec: OpRecord, pattern: Pattern) -> SparseGemm | None:
    """The sparse GEMM `rec` becomes on `device` at `fmt` (weights stored at `weight_bits`), or None where
    the device has no sparse math for the pattern and format, or its sparse kernels would be no faster (the
    GEMM then costs what a dense one does, as a compiler picking the faster kernel runs it)."""
    if device.sparsity is None or rec.gemm is None:
        return None
    best = device.sparsity.best(pattern, fmt)
    if best is None or not device.peak(fmt):
        return None
    hw, peak = best
    _m, n, k, b = rec.gemm
    weight = min(float(rec.param_bytes), float(TRACED_BYTES_PER_WEIGHT * n * k * b))
    speedup = device.sparse_speedup(fmt, pattern)
    if speedup <= 1.0:  # its sparse kernels gain nothing at this format (Trainium2 FP8 loses the double-rate mode)
        return None
    return SparseGemm(hw, speedup, peak, weight, hw.compressed_share(weight_bits))
