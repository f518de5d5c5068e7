"""Price a trace on a device at a precision: time, energy and money per op and in total.

Per op (all from shapes):
- compute: matrix-like ops (matmul, conv, attention) go to the device's matrix unit
  model (units.py) at the effective format. Other ops run on the vector unit at
  flops / vector_ops_per_s.
- memory: bytes (the trace's fp32 bytes scaled to the format's storage width,
  cost.memory.traffic_scale) over the
  bandwidth of the level that serves them. That is on-chip SRAM when the op's
  working set fits in it, else main memory, derated to 85 % of peak unless the
  bandwidth was measured (assumed: typical achievable STREAM-like fraction).
- time = max(compute, memory) + the device's per-op dispatch overhead; views
  (metadata only) cost nothing.
- fallback: op classes the device leaves to its host, and formats it cannot run
  when its policy is "host", run on the host device and pay the host link both
  ways: the op's inputs go over, its outputs come back (two messages, each paying
  the link's latency, plus the bytes over its bandwidth).
- energy: flops x arithmetic pJ/op (hardware.energy) + bytes x pJ/byte of the
  serving level + idle power x time; host fallbacks add the host's energy and the
  link's bytes at LINK_PJ_PER_BYTE.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import operator
from collections import defaultdict
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from chipfit.cost.fusion import compile_trace
from chipfit.cost.memory import StepMemory, step_memory, traffic_scale
from chipfit.cost.residency import resident_reads
from chipfit.cost.sparse import SparseGemm, SparseLayers, sparse_gemm
from chipfit.cost.units import MATRIX_MODELS
from chipfit.errors import InputError
from chipfit.formats import get_format
from chipfit.hardware import Device, get_device
from chipfit.hardware.precision import PRECISION_ALIASES, How, Precision, resolve_precision
from chipfit.hardware.pricing import PriceQuote, Pricing
from chipfit.hardware.sparsity import Pattern
from chipfit.hardware.stacks import Execution, Stack, resolve_stack
from chipfit.trace import Trace
from chipfit.trace.records import OpRecord
from chipfit.vocab import MATRIX_CLASSES, OpClass, Phase

__all__ = [
    "PRECISION_ALIASES",
    "Bound",
    "Estimate",
    "OpCost",
    "Precision",
    "Pricer",
    "Unit",
    "estimate",
    "resolve_precision",
]

BW_EFFICIENCY_ASSUMED = 0.85
# assumed: a weight-only GEMM upcasts each weight it reads with one convert and one multiply by its
# group's scale, on the vector unit (fused into the GEMM's prologue, as Marlin/AWQ kernels do)
DEQUANT_OPS_PER_WEIGHT = 2
LINK_PJ_PER_BYTE = 8.0 * 8  # assumed: about 8 pJ/bit for a PCIe-class SerDes link, both ends together
# rounding: a step the calibration prices at exactly its TDP is not throttled
POWER_CAP_TOLERANCE = 1e-6
FRESH_ALLOC_THRESHOLD = 32 * 2**20  # glibc's largest mmap threshold: bigger outputs are fresh pages


class Unit(StrEnum):
    """Where an op's arithmetic runs."""

    MATRIX = "matrix"
    VECTOR = "vector"
    HOST = "host"  # the device's host CPU, over the host link
    NONE = "none"  # views and framework overheads: no arithmetic


class Bound(StrEnum):
    """What an op's time is set by."""

    COMPUTE = "compute"
    MEMORY = "memory"
    OVERHEAD = "overhead"  # launch / dispatch
    TRANSFER = "transfer"  # the host link (fallbacks)
    POWER = "power"  # the chip clocks down to hold its TDP (power_cap_s)
    NONE = "none"


@dataclass(frozen=True)
class OpCost:
    """One op priced on one device; additive over ops."""

    index: int
    op: str
    module: str
    op_class: str
    phase: str
    unit: Unit
    time_s: float
    compute_s: float
    memory_s: float
    overhead_s: float
    transfer_s: float
    bound: Bound
    energy_j: float
    bytes: float
    flops: int
    utilization: float  # useful flops / (time x peak of the unit used)
    fallback: bool
    latency_s: float = 0.0  # the kernel's fixed duration on the device beyond its work (compute.kernel_latency_s)
    sparse: bool = False  # ran on the sparse matrix math (its weights pruned, cost.sparse)
    main_memory_s: float = 0.0  # of memory_s, the seconds main memory is busy for it
    # main-memory seconds of the outputs it left in on-chip memory, written back later while other kernels
    # run (not in time_s; `writeback_s` charges what the step's idle main-memory time cannot absorb)
    writeback_s: float = 0.0


BY_KEYS = ("op_class", "module", "layer", "phase", "unit")


@dataclass(frozen=True)
class Estimate:
    """A trace priced on one device at one precision: one OpCost per op, and the step's memory."""

    device: str
    precision: Precision
    mode: str
    items: int
    rows: tuple[OpCost, ...]
    memory: StepMemory
    capacity_bytes: float
    price: PriceQuote | None  # per chip-hour, on the basis the estimate was asked for
    peak_ops_per_s: float
    energy_basis: str = ""  # what the device's energy calibration rests on (hardware EnergyCalibration)
    energy_assumed: bool = False  # ... and whether that is an assumed power figure
    execution: str = "eager"  # the stack that ran the step (hardware.stacks): eager, tensorrt, xla, ...
    sparsity: str = ""  # the pruned layers' pattern ("2:4"), "" for a dense model
    sparse_covered: int = 0  # forward GEMMs reading pruned weights (those that ran sparse: sparse_gemms)

    @property
    def sparse_gemms(self) -> int:
        """GEMMs that ran on the sparse matrix math."""
        return sum(1 for r in self.rows if r.sparse)

    def sparsity_note(self) -> str:
        """One line: how the pruned layers ran ('' for a dense model)."""
        if not self.sparsity:
            return ""
        if self.sparse_gemms == self.sparse_covered:
            return f"{self.sparse_gemms} pruned GEMMs ran at the {self.sparsity} sparse rate"
        fmt = self.precision.format
        if not self.sparse_gemms:
            return (f"{self.device} has no {self.sparsity} sparse math for {fmt}: the pruned GEMMs cost what dense "
                    "ones do")  # fmt: skip
        return f"{self.sparse_gemms} of {self.sparse_covered} pruned GEMMs ran at the {self.sparsity} sparse rate"

    @property
    def price_usd_per_hour(self) -> float | None:
        return self.price.usd_per_hour if self.price is not None else None

    @functools.cached_property
    def latency_s(self) -> float:
        """Summed once (the planner asks a 7,000-op estimate for it many times)."""
        return sum(r.time_s for r in self.rows)

    @functools.cached_property
    def energy_j(self) -> float:
        return sum(r.energy_j for r in self.rows)

    @property
    def throughput(self) -> float:
        return self.items / self.latency_s if self.latency_s else 0.0

    @property
    def energy_per_item_j(self) -> float:
        return self.energy_j / self.items

    @property
    def usd_per_million(self) -> float | None:
        if self.price_usd_per_hour is None:
            return None
        return self.price_usd_per_hour * self.latency_s / 3600 / self.items * 1e6

    @property
    def matrix_utilization(self) -> float:
        useful = sum(r.flops for r in self.rows if r.unit is Unit.MATRIX)
        return useful / (self.latency_s * self.peak_ops_per_s) if self.latency_s and self.peak_ops_per_s else 0.0

    @property
    def footprint_bytes(self) -> int:
        return int(self.memory.total_bytes)

    @property
    def fits(self) -> bool:
        return self.footprint_bytes <= self.capacity_bytes

    def share(self, bound: str) -> float:
        return sum(r.time_s for r in self.rows if r.bound == bound) / self.latency_s if self.latency_s else 0.0

    def fallbacks(self) -> list[OpCost]:
        return [r for r in self.rows if r.fallback]

    def by(self, key: str) -> dict[str, dict[str, float]]:
        """Sums by 'op_class', 'module' (first path component), 'layer' (the full module path: the
        innermost module that ran the op), 'phase' or 'unit'; largest time first."""
        if key not in BY_KEYS:
            raise InputError(f"unknown key {key!r}; known: {', '.join(BY_KEYS)}")
        out: dict[str, dict[str, float]] = defaultdict(lambda: {"time_s": 0.0, "energy_j": 0.0, "flops": 0.0, "ops": 0})
        for r in self.rows:
            k = r.module.split(".")[0] if key == "module" else r.module if key == "layer" else getattr(r, key)
            row = out[k]
            row["time_s"] += r.time_s
            row["energy_j"] += r.energy_j
            row["flops"] += r.flops
            row["ops"] += 1
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["time_s"]))

    def totals(self) -> dict[str, Any]:
        return {
            "device": self.device,
            "precision": asdict(self.precision),
            "mode": self.mode,
            "execution": self.execution,
            "items": self.items,
            "latency_s": self.latency_s,
            "throughput_items_per_s": self.throughput,
            "energy_j": self.energy_j,
            "energy_per_item_j": self.energy_per_item_j,
            "energy_basis": self.energy_basis,
            "energy_rests_on_assumed_power": self.energy_assumed,
            "usd_per_million_items": self.usd_per_million,
            "price": self.price.as_dict() if self.price is not None else None,
            "matrix_utilization": self.matrix_utilization,
            "share_compute_bound": self.share(Bound.COMPUTE),
            "share_memory_bound": self.share(Bound.MEMORY),
            "share_overhead": self.share(Bound.OVERHEAD),
            "share_transfer": self.share(Bound.TRANSFER),
            "share_power_cap": self.share(Bound.POWER),
            "footprint_bytes": self.footprint_bytes,
            "memory": self.memory.as_dict(),
            "capacity_bytes": self.capacity_bytes,
            "fits_one_chip": self.fits,
            "fallback_ops": len(self.fallbacks()),
            "fallback_time_s": sum(r.time_s for r in self.fallbacks()),
            "sparsity": self.sparsity or None,
            "sparse_gemms": self.sparse_gemms,
            "sparse_covered_gemms": self.sparse_covered,
            "sparsity_note": self.sparsity_note() or None,
        }


def _level(device: Device, fits_on_chip: bool) -> tuple[float, float]:
    """(achievable bytes/s, pJ/byte) of on-chip memory when the data fits there, else of main memory."""
    level = device.on_chip if fits_on_chip and device.on_chip is not None else device.main_memory
    eff = 1.0 if level.source.kind == "measured" else BW_EFFICIENCY_ASSUMED
    return level.bandwidth_bytes_per_s * eff, level.energy_pj_per_byte


class Traffic(NamedTuple):
    """An op's memory traffic priced (`_memory`)."""

    seconds: float  # its memory time: every level's bytes at that level's bandwidth, one after another
    joules: float
    write_bytes_per_s: float  # the bandwidth its outputs are written at
    main_s: float  # of seconds, those main memory is busy for it
    writeback_s: float  # main-memory seconds of the outputs it left on chip, written back later (not in seconds)


def _memory(
    device: Device, rec: OpRecord, scale: float, model_bytes: float, wscale: float | None = None,
    sparse: SparseGemm | None = None, resident: float = 0.0, defer: bool = False,
) -> Traffic:  # fmt: skip
    """Weights stream from main memory unless the whole model fits on chip; activations come from on-chip
    memory when the op's working set fits there; otherwise the `resident` bytes of its activation reads
    that an earlier op left on chip (cost.residency) come from there and the rest from main memory.
    `defer` (compiled stacks): outputs that fit on chip are written there (write-back caching) and reach
    main memory later, while other kernels run (`Traffic.writeback_s`, charged over the step by
    `writeback_s`). `wscale`: the weights' bytes per traced byte when they are stored narrower than the
    math (weight-only); `sparse`: the pruned weight reads compressed (cost.sparse)."""
    cap = device.on_chip.capacity_bytes if device.on_chip is not None else 0.0
    pruned = sparse.weight_bytes * (1 - sparse.weight_share) if sparse is not None else 0.0
    weights = (rec.param_bytes - pruned) * (scale if wscale is None else wscale)
    acts = (rec.bytes - rec.param_bytes) * scale
    w_bw, w_pj = _level(device, model_bytes <= cap)
    fits = rec.bytes * scale <= cap
    a_bw, a_pj = _level(device, fits)
    # a gather reads only its rows of a table whose whole size is param_bytes: its activation reads can be
    # smaller than nothing, so the credit is floored at zero (eager, with no residency, must stay exact)
    hit = 0.0 if fits or resident <= 0 else min(resident, max(0.0, (rec.bytes_read - rec.param_bytes) * scale))
    h_bw, h_pj = _level(device, True)
    joules = (weights * w_pj + (acts - hit) * a_pj + hit * h_pj) * 1e-12
    written = rec.bytes_written * scale
    late = written if defer and not fits and 0 < written <= cap else 0.0
    w_main = 0.0 if model_bytes <= cap else weights / w_bw
    a_main = 0.0 if fits else (acts - hit - late) / a_bw
    seconds = weights / w_bw + (acts - hit - late) / a_bw + (hit + late) / h_bw
    return Traffic(seconds, joules, h_bw if late else a_bw, w_main + a_main, late / a_bw)


def _lane_narrow_conv(device: Device, rec: OpRecord) -> bool:
    """A grouped convolution whose groups are narrower than a SIMD unit's lanes (depthwise: one output
    channel per group) on a CPU: its library kernel vectorises across channels on the vector unit, with
    no matrix to block (measured here: a 144-channel depthwise 3x3 at 56x56, batch 8, 13 GFLOP/s where
    the same CPU's GEMMs reach 100)."""
    if rec.op_class != OpClass.CONV or rec.gemm is None or not device.matrix_units:
        return False
    unit = device.matrix_units[0]
    _m, n, _k, groups = rec.gemm
    return unit.kind == "simd" and groups > 1 and n < unit.cols


def _matrix_seconds(device: Device, fmt: str, rec: OpRecord, sparse: SparseGemm | None = None) -> float:
    if not device.peak(fmt):
        return rec.flops / device.compute.vector_ops_per_s
    if rec.gemm is None or not device.matrix_units:
        peak = device.peak(fmt) * (sparse.speedup if sparse is not None else 1.0)
        return rec.flops / (peak * device.compute.efficiency(fmt))
    unit = device.matrix_units[0]
    m, n, k, b = rec.gemm
    t = MATRIX_MODELS[unit.kind](device, unit, fmt, rec.gemm, sparse.speedup if sparse is not None else 1.0)
    gemm_flops = 2 * m * n * k * b
    # conv backward (two GEMMs) and fused attention (QK^T and PV) do a multiple of one GEMM's work
    return t.seconds * (rec.flops / gemm_flops if gemm_flops else 1.0)


def _op_on(
    device: Device, prec: Precision, rec: OpRecord, scale: float, model_bytes: float, launch_s: float | None = None,
    pattern: Pattern | None = None, resident: float = 0.0, defer: bool = False,
) -> tuple[float, float, float, float, Unit, float, float, float, bool, Traffic]:  # fmt: skip
    """(compute_s, memory_s, overhead_s, energy_j, unit, peak used, latency_s, bytes moved, ran sparse, its memory
    traffic: `_memory`) for an op on
    `device`; `launch_s`: what starting its kernel costs under a compiling stack (None: the device's eager
    dispatch, which already exceeds a kernel's fixed latency, so that is added only when compiled);
    `pattern`: the op's weights are pruned to it (they run sparse where the device can, cost.sparse);
    `resident`: bytes of its activation reads still on chip from earlier ops (cost.residency)."""
    wscale = traffic_scale(prec.weights) if prec.weight_format else None
    on_matrix = rec.op_class in MATRIX_CLASSES and prec.how is not How.VECTOR and not _lane_narrow_conv(device, rec)
    fmt = prec.format if device.peak(prec.format) else device.formats[0]
    sparse = None
    if pattern is not None and on_matrix:
        sparse = sparse_gemm(device, fmt, int(get_format(prec.weights).storage_bits), rec, pattern)
    traffic = _memory(device, rec, scale, model_bytes, wscale, sparse, resident, defer)
    memory_s, memory_j, acts_bw = traffic.seconds, traffic.joules, traffic.write_bytes_per_s
    dequant_ops = 0.0
    arith = 1.0  # the share of the op's multiplications done (a sparse GEMM skips the pruned ones)
    if on_matrix:
        compute_s, unit = _matrix_seconds(device, fmt, rec, sparse), Unit.MATRIX
        peak = sparse.peak_ops_per_s if sparse is not None else device.peak(fmt)
        arith = 1 / sparse.speedup if sparse is not None else 1.0
        compute_s /= device.compute.class_efficiency.get(rec.op_class, 1.0)
        if prec.how is How.WEIGHT_ONLY and rec.param_bytes:  # upcast every weight it reads, on the vector unit
            dequant_ops = DEQUANT_OPS_PER_WEIGHT * rec.param_bytes / 4  # traced weights are FP32: 4 bytes each
            compute_s += dequant_ops / device.compute.vector_ops_per_s
        e_op = device.energy_pj_per_op(fmt)
    else:
        compute_s, unit, peak = (
            rec.flops / device.compute.vector_ops_per_s,
            Unit.VECTOR,
            device.compute.vector_ops_per_s,
        )
        vec_fmt = prec.format if device.peak(prec.format) else "float32"
        e_op = device.energy_pj_per_op(vec_fmt, matrix=False)
    launch = device.compute.dispatch_overhead_s if launch_s is None else launch_s
    overhead = device.compute.class_overhead_s.get(rec.op_class, launch)
    if launch_s is None:  # eager: an op's own measured fixed cost, where the device has one
        overhead = device.compute.op_overhead_s.get(rec.op, overhead)
    if device.compute.fresh_alloc_bytes_per_s and rec.bytes_written * scale >= FRESH_ALLOC_THRESHOLD:
        memory_s += rec.bytes_written * scale / device.compute.fresh_alloc_bytes_per_s
    latency = 0.0
    if launch_s is not None and rec.op_class in MATRIX_CLASSES and device.compute.kernel_latency_s:
        # a compiled GEMM kernel: its fixed duration, and the epilogue writing each output tile after the
        # tile's main loop (not overlapped with it: the K-independent part of XLA's H100 GEMM times)
        epilogue = min(memory_s, rec.bytes_written * scale / acts_bw)
        memory_s -= epilogue
        latency = device.compute.kernel_latency_s + epilogue
    time_s = max(compute_s, memory_s) + overhead + latency
    vec_j = dequant_ops * device.energy_pj_per_op("float32", matrix=False) * 1e-12 if dequant_ops else 0.0
    energy = rec.flops * arith * e_op * 1e-12 + vec_j + memory_j + device.power.idle_w * time_s
    moved = rec.bytes * scale
    if sparse is not None:  # the pruned weight's bytes it does not read
        moved -= sparse.weight_bytes * (1 - sparse.weight_share) * (scale if wscale is None else wscale)
    return compute_s, memory_s, overhead, energy, unit, peak, latency, moved, sparse is not None, traffic


def _row(
    rec: OpRecord,
    unit: Unit,
    parts: tuple[float, float, float, float],
    bound: Bound,
    energy: float,
    nbytes: float,
    peak: float,
    fallback: bool,
    latency: float = 0.0,
    sparse: bool = False,
    traffic: Traffic | None = None,
) -> OpCost:
    """An OpCost for `rec`; parts = (compute, memory, overhead, transfer) seconds, plus the kernel's latency."""
    c, m, o, transfer = parts
    time_s = max(c, m) + o + transfer + latency
    util = rec.flops / (time_s * peak) if time_s and peak else 0.0
    return OpCost(
        index=rec.index, op=rec.op, module=rec.module, op_class=rec.op_class, phase=rec.phase, unit=unit,
        time_s=time_s, compute_s=c, memory_s=m, overhead_s=o, transfer_s=transfer, bound=bound, energy_j=energy,
        bytes=nbytes, flops=rec.flops, utilization=util, fallback=fallback, latency_s=latency, sparse=sparse,
        main_memory_s=traffic.main_s if traffic else 0.0, writeback_s=traffic.writeback_s if traffic else 0.0,
    )  # fmt: skip


# every OpCost field after (index, op, module): what twins of a repeated op share
_TAIL = operator.attrgetter(*(f.name for f in dataclasses.fields(OpCost)[3:]))


def _cost(
    device: Device,
    prec: Precision,
    rec: OpRecord,
    scale: float,
    host: Device | None,
    model_bytes: float,
    launch_s: float | None = None,
    pattern: Pattern | None = None,
    resident: float = 0.0,
    defer: bool = False,
) -> OpCost:
    if rec.op_class == "view":
        o = device.compute.view_overhead_s
        return _row(
            rec, Unit.NONE, (0, 0, o, 0), Bound.OVERHEAD if o else Bound.NONE, device.power.idle_w * o, 0, 0, False
        )
    to_host = rec.op_class in device.support.host_op_classes or (
        prec.how is How.HOST and rec.op_class in MATRIX_CLASSES
    )
    if to_host and host is not None and device.host_link is not None:
        fp32_model = model_bytes / traffic_scale(prec.weights)
        c, m, o, e, _unit, peak, _lat, _, _, _ = _op_on(host, resolve_precision(host, "float32"), rec, 1.0, fp32_model)
        moved = rec.bytes * scale
        link = device.host_link  # inputs over, outputs back: two messages, each paying the link's latency
        transfer = moved / link.bandwidth_bytes_per_s + 2 * link.latency_s
        energy = e + moved * LINK_PJ_PER_BYTE * 1e-12 + device.power.idle_w * (max(c, m) + o + transfer)
        bound = Bound.TRANSFER if transfer >= max(c, m, o) else (Bound.COMPUTE if c >= m else Bound.MEMORY)
        return _row(rec, Unit.HOST, (c, m, o, transfer), bound, energy, moved, peak, True)
    c, m, o, e, unit, peak, lat, moved, sparse, wb = _op_on(
        device, prec, rec, scale, model_bytes, launch_s, pattern, resident, defer
    )
    bound = Bound.OVERHEAD if o + lat > max(c, m) else (Bound.COMPUTE if c >= m else Bound.MEMORY)
    fallback = prec.how is How.VECTOR and rec.op_class in MATRIX_CLASSES
    return _row(rec, unit, (c, m, o, 0.0), bound, e, moved, peak, fallback, lat, sparse, wb)


@dataclass(frozen=True)
class Pricer:
    """Prices kernel records on one device at one precision under one stack: the one pricing path that
    `estimate` and the serving model (chipfit.serve, which builds its kernels from a layer decomposition)
    share. `model_bytes`: the weights at their storage format (whether they fit on chip)."""

    device: Device
    precision: Precision
    stack: Stack
    model_bytes: float
    host: Device | None = None
    sparsity: SparseLayers | None = None  # pruned layers: their forward GEMMs run sparse where the device can

    @classmethod
    def of(
        cls, device: str | Device, precision: str | Precision, stack: Stack, model_bytes: float,
        sparsity: SparseLayers | None = None,
    ) -> Pricer:  # fmt: skip
        dev = get_device(device)
        prec = precision if isinstance(precision, Precision) else resolve_precision(dev, precision)
        host = get_device(dev.support.host) if dev.support.host else None
        return cls(device=dev, precision=prec, stack=stack, model_bytes=model_bytes, host=host, sparsity=sparsity)

    @functools.cached_property
    def scale(self) -> float:
        """Bytes moved per traced (FP32) byte at the compute format."""
        return traffic_scale(self.precision.format)

    @functools.cached_property
    def launch_s(self) -> float | None:
        return None if self.stack.execution is Execution.EAGER else self.stack.kernel_launch_on(self.device)

    def __call__(self, rec: OpRecord, sparse: bool | None = None, resident: float = 0.0, defer: bool = False) -> OpCost:
        """`rec` priced; `sparse`: whether its weights are pruned (None: whether `sparsity` covers it);
        `resident`: bytes of its activation reads an earlier op left on chip (`resident`); `defer`: its
        outputs' write-back to main memory leaves the kernel's time (`OpCost.writeback_s`): only for a
        caller that charges it over the step (`writeback_s`)."""
        if sparse is None:
            sparse = self.sparsity is not None and self.sparsity.covers(rec)
        pattern = self.sparsity.pattern if self.sparsity is not None and sparse else None
        return _cost(
            self.device, self.precision, rec, self.scale, self.host, self.model_bytes, self.launch_s, pattern,
            resident, defer and self.launch_s is not None,
        )  # fmt: skip

    def resident(self, trace: Trace) -> list[float]:
        """Per record of `trace`, the bytes of its activation reads still on chip from earlier ops (cost.residency),
        rounded to a thousandth of the op's reads so that repeated layers stay twins. Cached on the trace.
        Compiled stacks only: the eager model keeps the per-op rule that the CPU calibration (`chipfit
        calibrate`, fitted against eager PyTorch) and every eager figure before it rest on."""
        if self.stack.execution is Execution.EAGER:
            return [0.0] * len(trace.records)
        cap = self.device.on_chip.capacity_bytes if self.device.on_chip is not None else 0.0
        cache: dict[tuple[float, float], list[float]] = trace.__dict__.setdefault("_resident", {})
        key = (cap, self.scale)
        if key not in cache:
            hits = resident_reads(trace, cap, self.scale)
            cache[key] = [
                _round_share(h, (r.bytes_read - r.param_bytes) * self.scale)
                for h, r in zip(hits, trace.records, strict=True)
            ]
        return cache[key]


def _round_share(part: float, whole: float) -> float:
    """`part` of `whole` rounded to a thousandth of it."""
    return round(part / whole * 1000) / 1000 * whole if whole > 0 else 0.0


def param_reads(trace: Trace) -> int:
    """The parameters and buffers the forward reads, each once: what an eager framework fetches through
    module attributes (nn.Module.__getattr__) on every call. Cached on the trace."""
    if "_param_reads" not in trace.__dict__:
        ids = {
            t
            for r in trace.records
            if r.phase == Phase.FORWARD
            for t, is_param in zip(r.reads, r.read_params, strict=False)
            if is_param
        }
        trace.__dict__["_param_reads"] = len(ids)
    n: int = trace.__dict__["_param_reads"]
    return n


def _step_row(index: int, op: str, op_class: str, seconds: float, dev: Device, bound: Bound = Bound.OVERHEAD) -> OpCost:
    """A once-a-step cost that is no kernel (module calls, a graph launch, a power-capped clock, the write-back
    main memory could not absorb): fixed time, the device idling through it. Write-back time is memory work
    (it shrinks with the bytes a chip writes, e.g. under tensor parallelism), the rest is overhead."""
    memory = seconds if bound is Bound.MEMORY else 0.0
    return OpCost(
        index=index, op=op, module="", op_class=op_class, phase=Phase.FORWARD, unit=Unit.NONE, time_s=seconds,
        compute_s=0, memory_s=memory, overhead_s=seconds - memory, transfer_s=0, bound=bound,
        energy_j=dev.power.idle_w * seconds, bytes=0, flops=0, utilization=0, fallback=False,
    )  # fmt: skip


def writeback_s(rows: list[OpCost], backlog_cap_s: float = math.inf) -> float:
    """What the step's deferred write-backs (`OpCost.writeback_s`: outputs a kernel left in on-chip memory)
    add to it, replayed in launch order: a kernel's write-back joins the backlog when it runs, and the
    backlog drains while main memory idles (each row's time beyond its `main_memory_s`, that row's own
    included: its output is written as it goes); idle time before a write cannot absorb it. The backlog
    never holds more than the on-chip memory does (`backlog_cap_s`: its capacity in main-memory seconds):
    what a new write-back pushes past that is written out at once and charged. What is still pending at
    the step's end is charged too. Write-back caching cannot create bandwidth: a step never runs faster
    than its main-memory bytes allow."""
    backlog = charged = 0.0
    for r in rows:
        backlog += r.writeback_s
        if backlog > backlog_cap_s:
            charged += backlog - backlog_cap_s
            backlog = backlog_cap_s
        backlog = max(0.0, backlog - max(0.0, r.time_s - r.main_memory_s))
    return charged + backlog


def _backlog_cap_s(device: Device) -> float:
    """The on-chip memory's capacity in main-memory write seconds: the most write-back a step can defer."""
    if device.on_chip is None:
        return 0.0
    return device.on_chip.capacity_bytes / _level(device, False)[0]


def power_cap_s(device: Device, time_s: float, energy_j: float) -> float:
    """Seconds a step of `time_s` and `energy_j` (idle included) takes beyond `time_s` because the chip
    may not average more than its TDP: it lowers its clock until the work's energy above idle fits the
    TDP's budget above idle, time >= (energy - idle x time) / (TDP - idle), the power roofline. Applied
    only where the energy per op comes from a measured power-capped GEMM (power.sustained_ops_per_s):
    elsewhere the energy model rests on the TDP itself (or a published load power) and is no measurement
    of what the chip would draw unthrottled. The energy per op is held at its full-clock value (a lower
    clock at a lower voltage spends less per op: the bound is conservative)."""
    p = device.power
    if not p.sustained_ops_per_s:
        return 0.0
    dynamic_j = energy_j - p.idle_w * time_s
    capped = dynamic_j / (p.tdp_w - p.idle_w) if p.tdp_w > p.idle_w else time_s
    return capped - time_s if capped > time_s * (1 + POWER_CAP_TOLERANCE) else 0.0


def compiled(trace: Trace, stack: Stack) -> Trace:
    """`trace` as `stack` runs it, compiled once per trace and stack (cached on the trace)."""
    if stack.execution is Execution.EAGER:
        return trace
    cache: dict[str, Trace] = trace.__dict__.setdefault("_compiled", {})
    if stack.name not in cache:
        cache[stack.name] = compile_trace(trace, stack)
    return cache[stack.name]


def estimate(
    trace: Trace,
    device: str | Device,
    precision: str = "bf16",
    *,
    items: int | None = None,
    pricing: Pricing | None = None,
    execution: str | None = None,
    sparsity: SparseLayers | None = None,
) -> Estimate:
    """Price `trace` on `device` at `precision` (a format name or an alias: fp32, tf32, bf16, fp16, fp8, int8, ...).

    items: what one step processes (default the trace's batch size), for throughput and $ per million items.
    pricing: the price basis, TCO assumptions and user prices (default: on-demand, the catalog's records).
    execution: None (the device's default: `support.execution`), "eager" (one kernel per aten op, as
    eager PyTorch runs it), "compiled" (the device's own stack: the kernels it launches, cost.fusion)
    or a stack's name (hardware/stacks.toml: inductor, tensorrt, xla, ...).
    sparsity: the layers pruned to an N:M pattern (`chipfit.sparsity.sparse_layers`); their forward GEMMs
    run on the device's sparse matrix math where it has it for the pattern and format (cost.sparse),
    and cost what dense ones do where it does not (`Estimate.sparse_gemms` counts those that ran sparse).
    """
    dev = get_device(device)
    stack = resolve_stack(dev, execution, trace.mode)
    trace = compiled(trace, stack)
    prec = resolve_precision(dev, precision)
    price = Pricer.of(dev, prec, stack, trace.footprint.params_bytes * traffic_scale(prec.weights), sparsity)
    # repeated layers repeat their ops: price each distinct op once, then copy the priced fields after
    # (index, op, module) positionally (dataclasses.replace was most of a 70B decoder's estimate). Twins
    # differ in module, so a pruned layer's GEMM and its dense twin are distinct: keyed by both
    reps, where = trace.distinct_ops()
    covered = [sparsity is not None and sparsity.covers(r) for r in trace.records]
    priced: dict[tuple[int, bool, float], OpCost] = {}
    tails: dict[tuple[int, bool, float], tuple[Any, ...]] = {}
    rows = []
    for r, pos, sp, hit in zip(trace.records, where, covered, price.resident(trace), strict=True):
        key = (pos, sp, hit)
        if key not in priced:
            priced[key] = price(reps[pos], sp, hit, defer=True)
            tails[key] = _TAIL(priced[key])  # shallow: astuple's deep copy was a fifth of a plan's pricing
        c = priced[key]
        rows.append(c if c.index == r.index else OpCost(r.index, r.op, r.module, *tails[key]))
    if dev.compute.module_overhead_s and trace.module_calls:
        o = dev.compute.module_overhead_s * trace.module_calls + dev.compute.param_access_s * param_reads(trace)
        rows.append(_step_row(len(rows), "nn.Module calls", "module-call", o, dev))
    if stack.step_launch_on(dev):
        rows.append(_step_row(len(rows), f"{stack.display_name} step launch", "launch", stack.step_launch_on(dev), dev))
    if late := writeback_s(rows, _backlog_cap_s(dev)):
        rows.append(_step_row(len(rows), "main-memory write-back", "write-back", late, dev, Bound.MEMORY))
    extra = power_cap_s(dev, sum(r.time_s for r in rows), sum(r.energy_j for r in rows))
    if extra:
        cap = f"power cap ({dev.power.tdp_w:g} W TDP)"
        rows.append(_step_row(len(rows), cap, "power-cap", extra, dev, Bound.POWER))
    return Estimate(
        device=dev.name,
        precision=prec,
        mode=trace.mode,
        items=items or trace.batch,
        rows=tuple(rows),
        memory=step_memory(trace, prec.format, prec.weight_format or None),
        capacity_bytes=dev.main_memory.capacity_bytes,
        price=(pricing or Pricing()).quote(dev),
        energy_basis=dev.energy_calibration.basis,
        energy_assumed=dev.energy_calibration.assumed,
        peak_ops_per_s=dev.peak(prec.format) or dev.compute.vector_ops_per_s,
        execution=stack.name,
        sparsity=str(sparsity.pattern) if sparsity is not None else "",
        sparse_covered=sum(covered),
    )
