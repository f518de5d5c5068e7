"""Scale-out over a device's fabric: data, tensor and pipeline parallel step time and energy.

Communication is priced by plan.collectives (alpha + bytes / beta per algorithm step, flat
inside the fast domain, hierarchical beyond it), so more chips are never free.

- data parallel (training): each chip runs the per-chip batch; gradients are all-reduced in
  buckets of 25 MB (PyTorch DDP's default `bucket_cap_mb`), each a collective paying its own
  latency. With overlap the all-reduces hide behind the backward pass and only their excess
  adds. Inference: independent replicas (no communication).
- tensor parallel (Megatron-style column/row pairs, assumed): matrix ops' work is split n ways
  (their launch overheads are not), vector ops are not split, and every second matrix op's
  output is all-reduced: one collective per pair, each with its latency. Within the fast domain
  on the fast link; a degree beyond it crosses the scale-out network on every all-reduce.
- pipeline parallel (GPipe): n stages, m = min(8, batch) microbatches (assumed); a microbatch
  takes work / (n m) + overheads / n per stage plus a send/recv of an average op output (assumed
  boundary size) over the slowest link the pipeline uses, and the step takes (m + n - 1) of those:
  the bubble is (n - 1) / (m + n - 1). At batch 1 it is no faster than one chip.
- energy: the work's dynamic energy is the same however it is split; every chip draws its idle
  power for the whole step; the bytes a chip sends cost LINK_PJ_PER_BYTE.
Traced bytes are FP32; they are scaled to the estimate's format (cost.memory.traffic_scale).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from chipfit.cost import Estimate
from chipfit.cost.collectives import Collective, Fabric, collective_s
from chipfit.cost.estimate import LINK_PJ_PER_BYTE, Unit
from chipfit.cost.memory import traffic_scale
from chipfit.errors import InputError
from chipfit.hardware.device import Device
from chipfit.trace import Trace
from chipfit.vocab import Phase

__all__ = ["DDP_BUCKET_BYTES", "STRATEGIES", "ScaleOut", "StepParts", "scale_out"]

STRATEGIES = ("data", "tensor", "pipeline")
DDP_BUCKET_BYTES = 25 * 2**20  # PyTorch DistributedDataParallel bucket_cap_mb=25 (its documented default)


@dataclass(frozen=True)
class ScaleOut:
    strategy: str
    chips: int
    step_s: float  # wall time of one step of the whole (global) batch
    comm_s: float  # communication time not hidden
    energy_j: float  # all chips, one step
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
    tp_allreduce_bytes: tuple[tuple[float, int], ...]  # (bytes, how many): every second matrix op's output
    work_s: float  # all ops' time less overheads
    overhead_s: float
    mean_output_bytes: float  # an average op's output, at the estimate's precision
    grads_bytes: float  # at the estimate's precision
    energy_j: float  # one chip, the whole step
    idle_w: float

    @classmethod
    def of(cls, est: Estimate, trace: Trace, device: Device | None = None) -> StepParts:
        """`device`: the one `est` priced (default: the catalog's device of that name)."""
        from chipfit.cost.estimate import compiled
        from chipfit.hardware import get_device
        from chipfit.hardware.stacks import Execution, get_stack

        dev = device if device is not None else get_device(est.device)
        if est.execution != Execution.EAGER:  # the rows are the compiled trace's kernels
            trace = compiled(trace, get_stack(est.execution))
        scale = traffic_scale(est.precision.format)
        matrix = [r for r in est.rows if r.unit is Unit.MATRIX]
        written = [r.bytes_written for r in trace.records]
        pairs = Counter(trace.records[r.index].bytes_written * scale for r in matrix[1::2])
        return cls(
            step_s=est.latency_s,
            backward_s=sum(r.time_s for r in est.rows if r.phase == Phase.BACKWARD),
            # a kernel's launch and its fixed latency are paid on every chip: never split
            matrix_work_s=sum(r.time_s - r.overhead_s - r.latency_s for r in matrix),
            matrix_overhead_s=sum(r.overhead_s + r.latency_s for r in matrix),
            other_s=sum(r.time_s for r in est.rows if r.unit is not Unit.MATRIX),
            tp_allreduce_bytes=tuple(sorted(pairs.items())),
            work_s=sum(r.time_s - r.overhead_s - r.latency_s for r in est.rows),
            overhead_s=sum(r.overhead_s + r.latency_s for r in est.rows),
            mean_output_bytes=sum(written) / max(len(written), 1) * scale,
            grads_bytes=trace.footprint.grads_bytes * scale,  # all-reduced at the compute format
            energy_j=est.energy_j,
            idle_w=float(dev.power.idle_w),
        )

    @property
    def dynamic_energy_j(self) -> float:
        return max(0.0, self.energy_j - self.idle_w * self.step_s)


def _energy(parts: StepParts, n: int, step_s: float, sent_bytes: float, replicas: int = 1) -> float:
    """All n chips for one step: the work's dynamic energy (per replica), idle power, link bytes."""
    return replicas * parts.dynamic_energy_j + n * parts.idle_w * step_s + n * sent_bytes * LINK_PJ_PER_BYTE * 1e-12


def scale_out(
    step: Estimate | StepParts,
    trace: Trace | None,
    strategy: str,
    n: int,
    fabric: Fabric | Device | None,
    *,
    training: bool,
    batch: int = 1,
    overlap: bool = True,
    microbatches: int = 8,
) -> ScaleOut:
    """The step of one chip (an Estimate with its trace, or its StepParts) spread over n chips of
    `fabric` (a Fabric, or a Device whose fabric is used) with `strategy`. An InputError says why
    n chips cannot be joined (no interconnect, or beyond the fast domain with no network)."""
    if strategy not in STRATEGIES:
        raise InputError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
    if isinstance(step, StepParts):
        parts = step
    elif trace is None:
        raise InputError("scale_out needs the trace of an Estimate")
    else:
        parts = StepParts.of(step, trace)
    fab = Fabric.of(fabric) if isinstance(fabric, Device) else (fabric or Fabric(fast=None))
    if n == 1:
        return ScaleOut(strategy, 1, parts.step_s, 0.0, parts.energy_j)
    if strategy == "data" and not training:
        return ScaleOut("data", n, parts.step_s, 0.0, n * parts.energy_j, "independent replicas")
    why = fab.reach(n)
    if why:
        raise InputError(f"{strategy}-parallel over {n} chips: {why}")
    if strategy == "data":
        full, rest = divmod(parts.grads_bytes, DDP_BUCKET_BYTES)
        buckets = [(float(DDP_BUCKET_BYTES), int(full))] + ([(rest, 1)] if rest else [])
        comm = sum(k * collective_s(Collective.ALL_REDUCE, b, n, fab) for b, k in buckets)
        exposed = max(0.0, comm - parts.backward_s) if overlap else comm
        step_s = parts.step_s + exposed
        sent = 2 * parts.grads_bytes * (n - 1) / n
        note = f"{sum(k for _b, k in buckets)} bucketed all-reduces, {comm * 1e3:.3g} ms"
        return ScaleOut("data", n, step_s, exposed, _energy(parts, n, step_s, sent, replicas=n), note)
    if strategy == "tensor":  # per-op launch overheads are not split
        split = parts.matrix_work_s / n + parts.matrix_overhead_s + parts.other_s
        comm = sum(k * collective_s(Collective.ALL_REDUCE, b, n, fab) for b, k in parts.tp_allreduce_bytes)
        count = sum(k for _b, k in parts.tp_allreduce_bytes)
        sent = sum(2 * b * k * (n - 1) / n for b, k in parts.tp_allreduce_bytes)
        where = "" if fab.within_domain(n) else ", across the scale-out network"
        step_s = split + comm
        return ScaleOut("tensor", n, step_s, comm, _energy(parts, n, step_s, sent), f"{count} all-reduces{where}")
    m = max(1, min(microbatches, batch))
    bubble = (n - 1) / (m + n - 1)
    stage = parts.work_s / (n * m) + parts.overhead_s / n  # one microbatch through one stage
    boundary = parts.mean_output_bytes / m  # assumed: an average op output
    handoff = collective_s(Collective.SEND_RECV, boundary, 2, Fabric(fast=fab.link_for(n)))
    step_s = (m + n - 1) * (stage + handoff)
    sent = m * boundary
    note = f"{m} microbatches, bubble {bubble:.0%}"
    return ScaleOut("pipeline", n, step_s, (m + n - 1) * handoff, _energy(parts, n, step_s, sent), note)
