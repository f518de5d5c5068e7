"""Devices as frozen, typed, sourced data. Units live in field names; derived values are computed.

A catalog file fills these; `loader.py` validates ranges so a unit slip (TB/s
typed as B/s, GB typed as bytes) fails at load time, not in a report.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

from chipfit.errors import InputError
from chipfit.formats import get_format
from chipfit.hardware import energy
from chipfit.hardware.sparsity import Pattern
from chipfit.vocab import How

__all__ = [
    "FAMILIES",
    "LINK_KINDS",
    "MATRIX_KINDS",
    "MEMORY_KINDS",
    "SOURCE_KINDS",
    "TOPOLOGIES",
    "Compute",
    "Device",
    "EnergyCalibration",
    "Link",
    "MatrixUnit",
    "MemoryLevel",
    "Power",
    "Price",
    "PriceBasis",
    "PriceUnit",
    "Source",
    "SparseMath",
    "Support",
]

FAMILIES = ("gpu", "tpu", "inference-asic", "training-asic", "npu", "fpga", "cpu")
MATRIX_KINDS = ("systolic", "tensor-core", "simd", "dsp", "dataflow")
MEMORY_KINDS = ("hbm", "gddr", "dram", "sram")
LINK_KINDS = (
    "pcie", "nvlink", "ici", "neuronlink", "infinity-fabric", "hccs", "roce", "ethernet", "infiniband", "efa", "dcn",
    "usb", "soc",
)  # fmt: skip
TOPOLOGIES = ("none", "point-to-point", "switch", "ring", "torus-2d", "torus-3d", "hypercube", "mesh")
SOURCE_KINDS = ("datasheet", "paper", "measured", "derived", "third-party", "assumed", "user")  # user: --prices
DATAFLOWS = ("output-stationary", "weight-stationary")
# a chip at its compute peak draws at least this share of its full-load power (idle included), even where
# its main memory at full bandwidth would leave less for arithmetic (assumed floor; measured: TPU v4 170 W
# mean of 192 W max, Jouppi et al. ISCA 2023; an 8 x H100 node 8.4 of its 10.2 kW rating)
MIN_PEAK_SHARE = 0.5
FALLBACKS = (How.VECTOR.value, How.HOST.value)  # what a device does with a format its matrix unit lacks


@dataclass(frozen=True)
class Source:
    """Where a group of numbers comes from: `kind: reference` in catalog files."""

    kind: str
    ref: str

    @classmethod
    def parse(cls, text: str) -> Source:
        kind, sep, ref = text.partition(":")
        kind = kind.strip()
        if not sep or kind not in SOURCE_KINDS or not ref.strip():
            raise InputError(
                f"source must be 'KIND: reference' with KIND one of {', '.join(SOURCE_KINDS)}; got {text!r}"
            )
        return cls(kind, ref.strip())

    def __str__(self) -> str:
        return f"{self.kind}: {self.ref}"


@dataclass(frozen=True)
class MatrixUnit:
    """A matrix engine: a systolic array (rows x cols PEs), tensor cores (an m x n x k MMA
    per clock each), SIMD/matrix extensions, or FPGA DSP slices (rows x cols x depth MACs)."""

    name: str
    kind: str
    count: int
    rows: int
    cols: int
    depth: int
    clock_hz: float
    source: Source
    dataflow: str | None = None

    @property
    def macs_per_cycle(self) -> int:
        return self.count * self.rows * self.cols * self.depth

    @property
    def peak_macs_per_s(self) -> float:
        return self.macs_per_cycle * self.clock_hz


@dataclass(frozen=True)
class MemoryLevel:
    name: str
    kind: str
    capacity_bytes: float
    bandwidth_bytes_per_s: float
    source: Source
    energy_pj_per_byte: float
    energy_source: Source


@dataclass(frozen=True, kw_only=True)
class Link:
    """A host link, a chip-to-chip interconnect (the fast domain) or a scale-out network;
    bandwidth per chip, per direction.

    A collective over the link is costed step by step as alpha + bytes / bandwidth
    (plan.collectives): alpha is `latency_s` (one message step, endpoint to endpoint, with the
    communication library's own cost) plus `hop_latency_s` for every hop beyond the first on a
    direct network (a torus); every collective also pays `collective_latency_s` once (the
    library's fixed cost of launching one: NCCL's baseLat)."""

    kind: str
    bandwidth_bytes_per_s: float
    topology: str
    source: Source
    latency_s: float
    latency_source: Source
    generation: str = ""
    hop_latency_s: float = 0.0
    collective_latency_s: float = 0.0
    domain_chips: int = 0  # chips this link joins directly (an NVLink board, a TPU pod's torus); 0: unbounded


@dataclass(frozen=True)
class Power:
    tdp_w: float
    idle_w: float
    source: Source
    idle_source: Source
    load_w: float | None = None  # published power under a full AI load (MLPerf Power, vendor "typical")
    load_source: Source | None = None
    # measured: the matrix rate a continuous large GEMM sustains at the power cap (tdp_w), per format,
    # where the chip cannot hold its peak within its TDP (a 70 W T4 clocks down under cuBLAS)
    sustained_ops_per_s: Mapping[str, float] = field(default_factory=lambda: FrozenMap({}))
    sustained_source: Source | None = None
    # where the measurement was made on another part of the same die (power.sustained_from): that part's
    # name and the power above idle its measured GEMM drew (its TDP less its idle). The die's energy per op
    # is the same on every part; each part's own TDP then caps it (cost.estimate.power_cap_s)
    sustained_part: str | None = None
    sustained_dynamic_w: float | None = None

    @property
    def sustained_budget_w(self) -> float:
        """Watts above idle the measured GEMMs drew: this part's TDP budget, or the measuring part's."""
        return self.sustained_dynamic_w if self.sustained_dynamic_w is not None else self.tdp_w - self.idle_w


@dataclass(frozen=True, kw_only=True)
class EnergyCalibration:
    """How a device's energy per op is set. An op costs its arithmetic (Horowitz, hardware.energy)
    plus the energy of delivering its operand to the arithmetic (register files, operand buses,
    array wiring, control, clocking), taken as proportional to the operand's storage bits:
    `delivery_pj_per_bit`. That one number per device is chosen so that the chip at the peak of its
    most power-hungry format, with its main memory streaming at full bandwidth, draws
    `full_load_w` (idle included). A step's time is at least its compute time and at least its
    memory time, so no workload is then priced above `full_load_w`; and a format at twice the peak
    with half the bits delivers the same bits per second, so FP8 at its peak draws about what BF16
    draws at its own (an assumption: where a die's power-capped GEMMs are measured, each measured
    format costs what its measurement implies, and the GH100's say an FP8 op costs 0.71 of a BF16
    one). Where the arithmetic alone would exceed the budget, delivery is zero and the arithmetic is
    scaled down by `arithmetic_scale` (< 1)."""

    delivery_pj_per_bit: float
    arithmetic_scale: float
    full_load_w: float
    basis: str  # in words: what full_load_w is
    assumed: bool  # full_load_w rests on an assumed (unsourced) power figure
    limiting_format: str
    memory_w: float  # main memory at full bandwidth


class PriceBasis(StrEnum):
    """How a price is paid: what a record in the catalog is, and what `--price-basis` picks."""

    ON_DEMAND = "on-demand"
    ONE_YEAR = "1-year"  # a one-year commitment (reserved instance, committed use)
    THREE_YEAR = "3-year"
    SPOT = "spot"  # preemptible
    CAPACITY_BLOCK = "capacity-block"  # a reservation of a fixed block of time (AWS EC2 Capacity Blocks)
    PURCHASE = "purchase"  # bought: a record's price is paid once (see hardware.pricing for TCO)


class PriceUnit(StrEnum):
    ACCELERATOR_HOUR = "accelerator-hour"
    INSTANCE_HOUR = "instance-hour"  # an instance of `accelerators` chips
    PURCHASE = "purchase"  # paid once, for `accelerators` chips (a card, a board, a server)


@dataclass(frozen=True, kw_only=True)
class Price:
    """One sourced price, as its source prints it (`usd` in `unit`, for `accelerators` chips)."""

    basis: PriceBasis
    provider: str
    unit: PriceUnit
    usd: float
    date: str  # YYYY, YYYY-MM or YYYY-MM-DD: when the source says it applied
    source: Source
    region: str = ""
    accelerators: int = 1
    instance: str = ""

    @property
    def usd_per_accelerator(self) -> float:
        """Per accelerator-hour for an hourly price, per accelerator bought for a purchase."""
        return self.usd / self.accelerators

    @property
    def hourly(self) -> bool:
        return self.unit is not PriceUnit.PURCHASE

    @property
    def from_user(self) -> bool:
        return self.source.kind == "user"

    def describe(self) -> str:
        """'AWS p5.48xlarge, us-east-1, 2025-06: $55.04 per instance-hour / 8 accelerators'."""
        where = ", ".join(x for x in (f"{self.provider} {self.instance}".strip(), self.region, self.date) if x)
        per = f"${self.usd:,.6g} per {self.unit}" if self.hourly else f"${self.usd:,.6g}"
        if self.accelerators > 1:
            per += f" / {self.accelerators} accelerators"
        return f"{where}: {per}"


@dataclass(frozen=True)
class Compute:
    """Dense peak throughput per number format (ops/s, one FMA = 2 ops) and what accumulates it."""

    peak_ops_per_s: Mapping[str, float]
    accumulate: Mapping[str, str]
    source: Source
    vector_ops_per_s: float
    vector_source: Source
    units: int  # SMs, TensorCores, NeuronCores, cores: what work is spread over
    dispatch_overhead_s: float
    overhead_source: Source
    kernel_tile_mnk: tuple[int, int, int] = (1, 1, 1)  # tensor-core kernels' block shape
    matmul_efficiency: float = 0.75  # achievable fraction of peak on large GEMMs
    # per-format values where one format's kernels reach a different fraction (AMX INT8/BF16 beside AVX-512 FP32)
    matmul_efficiency_format: Mapping[str, float] = field(default_factory=lambda: FrozenMap({}))
    view_overhead_s: float = 0.0  # eager frameworks pay dispatch even for views; compiled stacks do not
    module_overhead_s: float = 0.0  # per nn.Module call in eager frameworks
    class_overhead_s: Mapping[str, float] = field(default_factory=lambda: FrozenMap({}))  # per op class
    # eager: per aten op ("aten.gelu.default"), measured on a tiny input, where an op's own fixed cost
    # departs from its class's (gelu costs 10x an add here); ahead of class_overhead_s and the dispatch
    op_overhead_s: Mapping[str, float] = field(default_factory=lambda: FrozenMap({}))
    param_access_s: float = 0.0  # eager: reading one parameter or buffer through nn.Module attributes
    gemm_half_dims: tuple[float, float, float] | None = None  # Hockney n1/2 of (M, N, K) for the simd model
    # measured FP32 GEMM rates on a full grid of (M, N, K), as (m, n, k, flops_per_s) rows (chipfit calibrate):
    # the simd model interpolates them (gemm_table_rate) ahead of the half-dims form; (): not measured
    gemm_table: tuple[tuple[int, int, int, float], ...] = ()
    gemm_table_source: Source | None = None
    class_efficiency: Mapping[str, float] = field(default_factory=lambda: FrozenMap({}))  # e.g. conv vs GEMM
    fresh_alloc_bytes_per_s: float = 0.0  # eager CPU: first touch of outputs >= 32 MB (glibc mmap threshold)
    # compiled: one call into the compiled graph beyond its kernels (torch.compile's guards and Python
    # wrapper), measured by chipfit calibrate; ahead of the stack's step_launch_s on this device; 0: not known
    graph_call_s: float = 0.0
    graph_call_source: Source | None = None
    # the shortest a matrix-unit kernel runs on the device (prologue, first loads, epilogue), launch excluded:
    # what a compiled stack's GEMM costs beyond its work (eager's dispatch already exceeds it); 0: not known
    kernel_latency_s: float = 0.0
    kernel_latency_source: Source | None = None
    # a wave of output tiles' pipeline fill before its first K step and its accumulators' drain after the
    # last: exposed once at each end of a tiled kernel, and on every wave whose work is shorter than it
    # (cost.units.tiled_time); per-format values where a format's kernels differ (TF32 on sm_90/sm_100); 0: not known
    wave_latency_s: float = 0.0
    wave_latency_format_s: Mapping[str, float] = field(default_factory=lambda: FrozenMap({}))
    wave_latency_source: Source | None = None
    efficiency_source: Source = Source("assumed", "default")

    def gemm_table_rate(self, m: int, n: int, k: int) -> float:
        """FP32 GEMM flops/s at (m, n, k) from the measured grid (`gemm_table_rate`)."""
        return gemm_table_rate(self.gemm_table, m, n, k)

    def efficiency(self, fmt: str) -> float:
        """The fraction of `fmt`'s peak a large GEMM achieves (compute.matmul_efficiency, or its per-format value)."""
        return self.matmul_efficiency_format.get(fmt, self.matmul_efficiency)

    def wave_latency(self, fmt: str) -> float:
        """Seconds one wave of `fmt` output tiles pays beyond its work (compute.wave_latency_s)."""
        return self.wave_latency_format_s.get(fmt, self.wave_latency_s)


@dataclass(frozen=True)
class Support:
    """What the compiler does with formats and ops the matrix unit does not run."""

    autocast: Mapping[str, str]  # format -> format the compiler casts to by default
    unsupported_format: str  # "vector" (run at the vector rate) or "host"
    host_op_classes: tuple[str, ...]  # op classes that always run on the host
    host: str | None  # catalog name of the host CPU
    source: Source
    weight_only: tuple[str, ...] = ()  # weight formats its stack runs weight-only GEMMs with (int8, int4)
    weight_only_source: Source | None = None
    # the vendor's compiling stack (hardware/stacks.toml) and the execution priced by default: compiled,
    # or eager for the CPUs whose figures are calibrated against eager PyTorch
    stack: str = "graph-compiler"
    execution: str = "compiled"


@dataclass(frozen=True)
class SparseMath:
    """A device's N:M sparse matrix math: per hardware pattern ("2:4"), the sparse peak ops/s per format
    as vendors print them (the dense work a sparse GEMM stands for, per second: 2:4 at twice the dense
    peak). Empty: the chip has none, and `source` says how that is known."""

    peak_ops_per_s: Mapping[str, Mapping[str, float]]
    source: Source
    # what sparse GEMM kernels achieve: their measured speed-up over dense kernels on large compute-bound
    # GEMMs, as a share of the peak ratio (published cuSPARSELt / hipSPARSELt against cuBLAS / hipBLASLt
    # sweeps: A100 FP16 median 1.28x of 2x, 0.64). 1.0 on a chip with none (unused there)
    efficiency: float = 1.0
    efficiency_source: Source | None = None

    @property
    def patterns(self) -> tuple[Pattern, ...]:
        return tuple(Pattern.parse(p) for p in self.peak_ops_per_s)

    @property
    def formats(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f for t in self.peak_ops_per_s.values() for f in t))

    def best(self, pattern: Pattern, fmt: str) -> tuple[Pattern, float] | None:
        """(hardware pattern, sparse peak) of the fastest unit that runs `pattern` weights in `fmt`."""
        runs = [(hw, table[fmt]) for p, table in self.peak_ops_per_s.items()
                if fmt in table and pattern.runs_on(hw := Pattern.parse(p))]  # fmt: skip
        return max(runs, key=lambda t: t[1]) if runs else None


@dataclass(frozen=True, kw_only=True)
class Training:
    """The formats the device's software stack trains in (mixed precision: FP32 master weights,
    the matrix math in the format). A device without it is not offered for training; integer
    formats never are (no production stack trains in INT8)."""

    formats: tuple[str, ...]
    source: Source


@dataclass(frozen=True)
class Device:
    name: str
    display_name: str
    vendor: str
    family: str
    year: int
    process_nm: float
    description: str
    source: Source
    compute: Compute
    matrix_units: tuple[MatrixUnit, ...]
    memory: tuple[MemoryLevel, ...]
    power: Power
    support: Support
    host_link: Link | None = None
    interconnect: Link | None = None  # the fast domain: what tensor parallelism uses
    scale_out: Link | None = None  # the network between fast domains (InfiniBand, EFA, a TPU pod's DCN)
    training: Training | None = None  # None: no training stack in the catalog
    sparsity: SparseMath | None = None  # None: the catalog entry does not say (user files may omit it)
    prices: tuple[Price, ...] = ()  # every sourced record; hardware.pricing picks one per basis
    published_ops_per_j: float | None = None
    published_efficiency_source: Source | None = None
    file: str = ""
    extends: str | None = None

    # ------------------------------------------------------------ derived
    @property
    def formats(self) -> tuple[str, ...]:
        """Formats the matrix unit runs natively (the keys of the peak table)."""
        return tuple(self.compute.peak_ops_per_s)

    @property
    def main_memory(self) -> MemoryLevel:
        """The largest off-chip (or, for SRAM-only chips, the largest) memory level."""
        off = [m for m in self.memory if m.kind != "sram"]
        return max(off or self.memory, key=lambda m: m.capacity_bytes)

    @property
    def on_chip(self) -> MemoryLevel | None:
        sram = [m for m in self.memory if m.kind == "sram"]
        return max(sram, key=lambda m: m.capacity_bytes) if sram else None

    def trains_in(self, fmt: str) -> bool:
        """Does the device's stack train with its matrix math in `fmt` (catalog `training.formats`)?"""
        return self.training is not None and fmt in self.training.formats

    def peak(self, fmt: str) -> float:
        """Dense peak ops/s for `fmt` (0 when the matrix unit does not run it)."""
        return self.compute.peak_ops_per_s.get(fmt, 0.0)

    def sparse_speedup(self, fmt: str, pattern: Pattern | str) -> float:
        """How much faster the matrix unit runs a large GEMM in `fmt` whose weights are `pattern`-sparse:
        its sparse peak over its dense peak times what sparse kernels achieve of that (`SparseMath.efficiency`),
        1.0 where it has no sparse math for them."""
        pat = Pattern.parse(pattern) if isinstance(pattern, str) else pattern
        sp = self.sparsity
        best = sp.best(pat, fmt) if sp is not None and self.peak(fmt) else None
        if sp is None or best is None:
            return 1.0
        return max(1.0, best[1] / self.peak(fmt) * sp.efficiency)

    def ridge_point(self, fmt: str) -> float:
        """Ops per byte of main-memory traffic at which compute and bandwidth balance."""
        return self.peak(fmt) / self.main_memory.bandwidth_bytes_per_s

    def accumulate(self, fmt: str) -> str:
        return self.compute.accumulate.get(fmt, "float32")

    def raw_pj_per_op(self, fmt: str, *, matrix: bool = True) -> float:
        """Horowitz's arithmetic energy of one op in `fmt`, process-scaled, on the matrix unit (its dot
        products `depth` long) or on the vector unit (one FMA at a time)."""
        depth = self.matrix_units[0].depth if matrix and self.matrix_units and self.peak(fmt) else 1
        return energy.energy_pj_per_op(fmt, self.accumulate(fmt), self.process_nm, depth)

    @functools.cached_property
    def energy_calibration(self) -> EnergyCalibration:
        """The per-bit operand delivery energy that makes the chip draw its full-load power at peak."""
        p = self.power
        if p.load_w is not None:
            full, basis, assumed = p.load_w, f"published full-load power ({p.load_source})", False
        else:
            full, basis, assumed = p.tdp_w, f"TDP ({p.source})", p.source.kind == "assumed"
        if self.published_ops_per_j and self.formats:
            best = max(self.formats, key=self.peak)
            pub = self.peak(best) / self.published_ops_per_j
            if pub < full:
                src = self.published_efficiency_source
                full, basis = pub, f"published {self.published_ops_per_j / 1e12:g} TOPS/W at {best} peak ({src})"
                assumed = src is not None and src.kind == "assumed"
        # (ops/s, raw pJ/op, operand bits) of each way the chip computes at its peak
        paths = {f: (self.peak(f), self.raw_pj_per_op(f), get_format(f).storage_bits) for f in self.formats}
        paths["vector float32"] = (self.compute.vector_ops_per_s, self.raw_pj_per_op("float32", matrix=False), 32)
        mm = self.main_memory
        memory_w = mm.bandwidth_bytes_per_s * mm.energy_pj_per_byte * 1e-12
        budget_w = max(full - p.idle_w - memory_w, MIN_PEAK_SHARE * full - p.idle_w)
        # the delivery energy at which the first path reaches the budget at its peak
        per_path = {k: (budget_w * 1e12 / ops - pj) / bits for k, (ops, pj, bits) in paths.items()}
        limiting = min(per_path, key=per_path.__getitem__)
        c = per_path[limiting]
        scale = 1.0
        # measured: the TDP holds a continuous GEMM below the peak; the delivery energy at which that GEMM,
        # at the rate measured, draws the TDP (all of its power above idle going to the arithmetic). A
        # measured format costs what its own measurement implies (energy_pj_per_op); the others, the
        # largest of these per-bit energies
        capped = {
            f: (p.sustained_budget_w * 1e12 / ops - self.raw_pj_per_op(f)) / get_format(f).storage_bits
            for f, ops in p.sustained_ops_per_s.items()
        }
        capped_by = max(capped, key=capped.__getitem__, default=None)
        # a measurement on another part of the die is the die's energy, whatever this part's TDP implies
        if capped_by is not None and (p.sustained_part is not None or capped[capped_by] > c):
            limiting, c = capped_by, capped[capped_by]
            # at its peak each path draws its op energy: a measured format what its measurement implies
            per_op = {k: p.sustained_budget_w * 1e12 / p.sustained_ops_per_s[k] if k in p.sustained_ops_per_s
                      else pj + c * bits for k, (_, pj, bits) in paths.items()}  # fmt: skip
            full = p.idle_w + memory_w + max(paths[k][0] * e for k, e in per_op.items()) * 1e-12
            rate = p.sustained_ops_per_s[limiting]
            where = (f"on the {p.sustained_part} (the same die) sustains {rate / 1e12:g} TOPS at its TDP"
                     if p.sustained_part else f"sustains {rate / 1e12:g} TOPS at the {p.tdp_w:g} W TDP")  # fmt: skip
            basis = (f"power-capped: a continuous {limiting} GEMM {where} ({p.sustained_source}); at its peak "
                     f"it would draw {full:.0f} W")  # fmt: skip
            assumed = False
        elif c < 0:  # arithmetic alone is over budget somewhere
            ops, pj, _ = max(paths.values(), key=lambda t: t[0] * t[1])
            c, scale = 0.0, budget_w * 1e12 / (ops * pj)
        return EnergyCalibration(
            delivery_pj_per_bit=c, arithmetic_scale=scale, full_load_w=full, basis=basis, assumed=assumed,
            limiting_format=limiting, memory_w=memory_w,
        )  # fmt: skip

    def energy_pj_per_op(self, fmt: str, *, matrix: bool = True) -> float:
        """Energy of one op in `fmt`: its arithmetic plus the delivery of its operand (EnergyCalibration)."""
        cal = self.energy_calibration
        rate = self.power.sustained_ops_per_s.get(fmt) if matrix else None
        if rate:  # measured: a continuous GEMM in fmt draws the (measuring part's) TDP at this rate
            return self.power.sustained_budget_w * 1e12 / rate
        bits = get_format(fmt).storage_bits if (matrix and self.peak(fmt)) else 32
        return self.raw_pj_per_op(fmt, matrix=matrix) * cal.arithmetic_scale + cal.delivery_pj_per_bit * bits

    def tdp_pj_per_op(self, fmt: str) -> float:
        """Chip-level upper bound on energy per op: TDP / dense peak (1 W per TFLOP/s = 1 pJ/op)."""
        return self.power.tdp_w / self.peak(fmt) * 1e12 if self.peak(fmt) else float("inf")

    def describe_formats(self) -> dict[str, dict[str, float | str]]:
        out: dict[str, dict[str, float | str]] = {}
        for f in self.formats:
            out[f] = {
                "peak_ops_per_s": self.peak(f),
                "accumulate": self.accumulate(f),
                "ridge_ops_per_byte": self.ridge_point(f),
                "energy_pj_per_op": self.energy_pj_per_op(f),
                "tdp_pj_per_op": self.tdp_pj_per_op(f),
                "bits": float(get_format(f).bits),
            }
        return out


def gemm_table_rate(table: tuple[tuple[int, int, int, float], ...], m: int, n: int, k: int) -> float:
    """FP32 GEMM flops/s at (m, n, k) from a measured grid of (m, n, k, flops_per_s) rows: trilinear in log M,
    log N, log K of the log rate, each dimension clamped to the grid (a GEMM larger than any measured runs at
    the rate of the largest; smaller, at the smallest's)."""
    axes, rates = _gemm_grid(table)
    brackets: list[tuple[tuple[int, float], ...]] = []  # per dimension: (grid index, weight) pairs
    for v, ax in zip((m, n, k), axes, strict=True):
        x = math.log(min(max(v, ax[0]), ax[-1]))
        hi = next(i for i, a in enumerate(ax) if math.log(a) >= x)
        if hi == 0 or math.log(ax[hi]) == x:
            brackets.append(((hi, 1.0),))
            continue
        t = (x - math.log(ax[hi - 1])) / (math.log(ax[hi]) - math.log(ax[hi - 1]))
        brackets.append(((hi - 1, 1 - t), (hi, t)))
    log_rate = sum(
        wi * wj * wl * math.log(rates[(i, j, li)])
        for i, wi in brackets[0]
        for j, wj in brackets[1]
        for li, wl in brackets[2]
    )
    return math.exp(log_rate)


@functools.cache
def _gemm_grid(
    table: tuple[tuple[int, int, int, float], ...],
) -> tuple[tuple[tuple[int, ...], ...], dict[tuple[int, int, int], float]]:
    """The grid's sorted axes (M, N, K values) and each grid point's rate, by index (built once per table)."""
    axes = tuple(tuple(sorted({int(row[d]) for row in table})) for d in range(3))
    rates = {(axes[0].index(m), axes[1].index(n), axes[2].index(k)): rate for m, n, k, rate in table}
    return axes, rates


K = TypeVar("K")
V = TypeVar("V")


class FrozenMap(Mapping[K, V]):
    """A read-only mapping that pickles (types.MappingProxyType does not), so a Device travels to
    the planner's worker processes and Ray tasks."""

    __slots__ = ("_d",)

    def __init__(self, d: Mapping[K, V]) -> None:
        self._d = dict(d)

    def __getitem__(self, key: K) -> V:
        return self._d[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._d)

    def __len__(self) -> int:
        return len(self._d)

    def __hash__(self) -> int:
        return hash(frozenset(self._d.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._d!r})"

    def __reduce__(self) -> tuple[Any, ...]:
        return (FrozenMap, (self._d,))


def frozen_map(d: Mapping[K, V]) -> Mapping[K, V]:
    return FrozenMap(d)
