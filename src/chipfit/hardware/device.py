"""Devices as frozen, typed, sourced data. Units live in field names; derived values are computed.

A catalog file fills these; `loader.py` validates ranges so a unit slip (TB/s
typed as B/s, GB typed as bytes) fails at load time, not in a report.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from chipfit.errors import InputError
from chipfit.formats import get_format
from chipfit.hardware import energy
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
    "Link",
    "MatrixUnit",
    "MemoryLevel",
    "Power",
    "Price",
    "Source",
    "Support",
]

FAMILIES = ("gpu", "tpu", "inference-asic", "training-asic", "npu", "fpga", "cpu")
MATRIX_KINDS = ("systolic", "tensor-core", "simd", "dsp")
MEMORY_KINDS = ("hbm", "gddr", "dram", "sram")
LINK_KINDS = (
    "pcie", "nvlink", "ici", "neuronlink", "infinity-fabric", "hccs", "roce", "ethernet", "infiniband", "efa", "dcn",
    "usb", "soc",
)  # fmt: skip
TOPOLOGIES = ("none", "point-to-point", "switch", "ring", "torus-2d", "torus-3d", "hypercube", "mesh")
SOURCE_KINDS = ("datasheet", "paper", "measured", "derived", "third-party", "assumed")
DATAFLOWS = ("output-stationary", "weight-stationary")
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


@dataclass(frozen=True)
class Price:
    usd_per_hour: float
    basis: str
    date: str
    source: Source


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
    view_overhead_s: float = 0.0  # eager frameworks pay dispatch even for views; compiled stacks do not
    module_overhead_s: float = 0.0  # per nn.Module call in eager frameworks
    class_overhead_s: Mapping[str, float] = field(default_factory=lambda: FrozenMap({}))  # per op class
    gemm_half_dims: tuple[float, float, float] | None = None  # Hockney n1/2 of (M, N, K) for the simd model
    class_efficiency: Mapping[str, float] = field(default_factory=lambda: FrozenMap({}))  # e.g. conv vs GEMM
    fresh_alloc_bytes_per_s: float = 0.0  # eager CPU: first touch of outputs >= 32 MB (glibc mmap threshold)
    efficiency_source: Source = Source("assumed", "default")


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
    price: Price | None = None
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

    def ridge_point(self, fmt: str) -> float:
        """Ops per byte of main-memory traffic at which compute and bandwidth balance."""
        return self.peak(fmt) / self.main_memory.bandwidth_bytes_per_s

    def accumulate(self, fmt: str) -> str:
        return self.compute.accumulate.get(fmt, "float32")

    def energy_pj_per_op(self, fmt: str) -> float:
        """Arithmetic energy of one op in `fmt` (see hardware.energy for the rule)."""
        return energy.energy_pj_per_op(fmt, self.accumulate(fmt), self.process_nm)

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
