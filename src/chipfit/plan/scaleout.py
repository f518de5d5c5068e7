"""Scale-out over a chip's interconnect: data, tensor and pipeline parallel step times.

- data parallel (training): each chip runs the per-chip batch; gradients are all-reduced as a
  ring: 2 (n - 1) / n x gradient bytes / link bandwidth, plus 2 (n - 1) link latencies. With
  overlap the all-reduce hides behind the backward pass and only its excess adds. Inference:
  independent replicas (no communication).
- tensor parallel: matrix ops' work split n ways (their per-op launch overheads are not);
  assumed Megatron-style pairs (column- then row-parallel), so every second matrix op's output
  is all-reduced (same ring formula); vector ops are not split.
- pipeline parallel (GPipe): n stages, m = min(8, batch) microbatches; a microbatch takes
  work / (n m) + overheads / n per stage plus a hand-off of an average op output (assumed), and
  the step takes (m + n - 1) of those: the bubble is (n - 1) / (m + n - 1). At batch 1 it is
  no faster than one chip.
Traced bytes are FP32; they are scaled to the estimate's format (cost.memory.traffic_scale).
The link is the catalog's chip-to-chip interconnect (bandwidth per chip, per direction).
"""

from __future__ import annotations

from dataclasses import dataclass

from chipfit.cost import Estimate
from chipfit.cost.estimate import Unit
from chipfit.cost.memory import traffic_scale
from chipfit.errors import InputError
from chipfit.hardware.device import Link
from chipfit.trace import Trace
from chipfit.vocab import Phase

__all__ = ["STRATEGIES", "ScaleOut", "StepParts", "ring_allreduce_s", "scale_out"]

STRATEGIES = ("data", "tensor", "pipeline")


@dataclass(frozen=True)
class ScaleOut:
    strategy: str
    chips: int
    step_s: float  # wall time of one step of the whole (global) batch
    comm_s: float  # communication time not hidden
    note: str = ""


@dataclass(frozen=True)
class StepParts:
    """The sums of one chip's step that every strategy and chip count needs, taken once per
    estimate (a 70B decoder's step has 7,000 ops; the sweep scales each estimate a dozen ways)."""

    step_s: float
    backward_s: float
    matrix_work_s: float  # matrix ops' time less their launch overheads
    matrix_overhead_s: float
    other_s: float  # all non-matrix ops' time
    matrix_ops: int
    pair_output_bytes: float  # every second matrix op's output, at the estimate's precision
    work_s: float  # all ops' time less overheads
    overhead_s: float
    mean_output_bytes: float  # an average op's output, at the estimate's precision
    grads_bytes: float  # at the estimate's precision

    @classmethod
    def of(cls, est: Estimate, trace: Trace) -> StepParts:
        scale = traffic_scale(est.precision.format)
        matrix = [r for r in est.rows if r.unit is Unit.MATRIX]
        written = [r.bytes_written for r in trace.records]
        return cls(
            step_s=est.latency_s,
            backward_s=sum(r.time_s for r in est.rows if r.phase == Phase.BACKWARD),
            matrix_work_s=sum(r.time_s - r.overhead_s for r in matrix),
            matrix_overhead_s=sum(r.overhead_s for r in matrix),
            other_s=sum(r.time_s for r in est.rows if r.unit is not Unit.MATRIX),
            matrix_ops=len(matrix),
            pair_output_bytes=sum(trace.records[r.index].bytes_written for r in matrix[1::2]) * scale,
            work_s=sum(r.time_s - r.overhead_s for r in est.rows),
            overhead_s=sum(r.overhead_s for r in est.rows),
            mean_output_bytes=sum(written) / max(len(written), 1) * scale,
            grads_bytes=trace.footprint.grads_bytes * scale,  # all-reduced at the compute format
        )


def ring_allreduce_s(nbytes: float, n: int, link: Link) -> float:
    if n <= 1 or nbytes <= 0:
        return 0.0
    return 2 * (n - 1) / n * nbytes / link.bandwidth_bytes_per_s + 2 * (n - 1) * link.latency_s


def scale_out(
    step: Estimate | StepParts,
    trace: Trace | None,
    strategy: str,
    n: int,
    link: Link | None,
    *,
    training: bool,
    batch: int = 1,
    overlap: bool = True,
    microbatches: int = 8,
) -> ScaleOut:
    """The step time of one chip's step (an Estimate with its trace, or its StepParts) spread over
    n chips with `strategy`."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if isinstance(step, StepParts):
        parts = step
    elif trace is None:
        raise InputError("scale_out needs the trace of an Estimate")
    else:
        parts = StepParts.of(step, trace)
    if n == 1:
        return ScaleOut(strategy, 1, parts.step_s, 0.0)
    if strategy == "data":
        if not training:
            return ScaleOut("data", n, parts.step_s, 0.0, "independent replicas")
        if link is None:
            raise InputError("no chip-to-chip interconnect in the catalog for data-parallel training")
        comm = ring_allreduce_s(parts.grads_bytes, n, link)
        exposed = max(0.0, comm - parts.backward_s) if overlap else comm
        return ScaleOut("data", n, parts.step_s + exposed, exposed, f"ring all-reduce {comm * 1e3:.3g} ms")
    if link is None:
        raise InputError(f"no chip-to-chip interconnect in the catalog for {strategy}-parallel")
    if strategy == "tensor":  # per-op launch overheads are not split
        split = parts.matrix_work_s / n + parts.matrix_overhead_s + parts.other_s
        comm = ring_allreduce_s(parts.pair_output_bytes, n, link)
        return ScaleOut("tensor", n, split + comm, comm, f"{parts.matrix_ops // 2} all-reduces")
    m = max(1, min(microbatches, batch))
    bubble = (n - 1) / (m + n - 1)
    stage = parts.work_s / (n * m) + parts.overhead_s / n  # one microbatch through one stage
    boundary = parts.mean_output_bytes / m  # assumed: an average op output
    handoff = boundary / link.bandwidth_bytes_per_s + link.latency_s
    step_s = (m + n - 1) * (stage + handoff)
    return ScaleOut("pipeline", n, step_s, (m + n - 1) * handoff, f"{m} microbatches, bubble {bubble:.0%}")
