"""Matrix-unit time models, one per kind, registered by the kind a device names.

Each model maps a GEMM (M, N, K, batch) on a device at a format to seconds of
compute, using shapes only. The registry is the seam for a new kind of matrix
unit; registering one kind twice is an error.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from chipfit.errors import InputError
from chipfit.hardware import Device, MatrixUnit
from chipfit.hardware.device import MATRIX_KINDS

__all__ = [
    "MATRIX_MODELS",
    "GemmTime",
    "check_matrix_models",
    "dataflow_time",
    "half_dims_time",
    "packed_gemms",
    "register_matrix_model",
    "systolic_cycles",
    "tiled_time",
]


@dataclass(frozen=True)
class GemmTime:
    seconds: float
    padded_flops: float  # flops the unit spent, padding included (>= useful flops)


# (device, unit, format, (M, N, K, batch), speed) -> time; speed: the unit's rate multiplier for this GEMM
# (a sparse GEMM's sparse-over-dense rate, cost.sparse), 1.0 for a dense one
MatrixModel = Callable[[Device, MatrixUnit, str, tuple[int, int, int, int], float], GemmTime]
MATRIX_MODELS: dict[str, MatrixModel] = {}


def register_matrix_model(kind: str) -> Callable[[MatrixModel], MatrixModel]:
    def deco(fn: MatrixModel) -> MatrixModel:
        if kind in MATRIX_MODELS:
            raise InputError(f"a matrix model for {kind!r} is already registered")
        MATRIX_MODELS[kind] = fn
        return fn

    return deco


def _rate_ratio(device: Device, unit: MatrixUnit, fmt: str) -> float:
    """Format throughput relative to the unit's native 16-bit (or int8) MAC rate."""
    native = 2 * unit.peak_macs_per_s
    return device.peak(fmt) / native if native else 1.0


def systolic_cycles(m: int, n: int, k: int, rows: int, cols: int, dataflow: str) -> int:
    """Cycles for one (M x K)(K x N) GEMM on one R x C systolic array, no batching.

    SCALE-Sim's analytical model (Samajdar et al., "A Systematic Methodology for
    Characterizing Scalability of DNN Accelerators using SCALE-Sim", ISPASS 2020):
    an operand mapping with spatial extents Sr x Sc and temporal extent T runs in
    folds of the array, each fold taking

        tau = 2 R + C + T - 2 cycles,   folds = ceil(Sr / R) * ceil(Sc / C),

    with output stationary (OS): Sr = M, Sc = N, T = K (each PE accumulates one
    output) and weight stationary (WS): Sr = K, Sc = N, T = M (each PE holds one
    weight; inputs stream through). Partial tiles occupy a whole fold.

    The paper and SCALE-Sim v2's code differ on the OS drain. The code
    (scalesim/compute/systolic_compute_os.py) builds each fold's output demand as
    T - 1 null rows plus R output rows, skewed by C - 1 columns: R + C + T - 2 cycles
    per fold. So it does not charge the R cycles the paper adds for shifting the
    stationary outputs out of the array. We follow the paper: an OS array without
    double-buffered accumulators cannot start the next fold until its R rows of
    finished sums have left. It is the conservative count, and the code's is R
    cycles shorter per fold.
    """
    if dataflow == "output-stationary":
        sr, sc, t = m, n, k
    elif dataflow == "weight-stationary":
        sr, sc, t = k, n, m
    else:
        raise InputError(f"unknown dataflow {dataflow!r}; known: output-stationary, weight-stationary")
    folds = math.ceil(sr / rows) * math.ceil(sc / cols)
    return folds * (2 * rows + cols + t - 2)


@register_matrix_model("systolic")
def systolic_time(
    device: Device, unit: MatrixUnit, fmt: str, gemm: tuple[int, int, int, int], speed: float = 1.0
) -> GemmTime:
    """Folds spread over `unit.count` arrays; a batch of GEMMs is that many independent GEMMs.
    A unit of depth d (a cube, e.g. DaVinci 16x16x16) consumes d steps of K per cycle."""
    m, n, k, batch = gemm
    flow = unit.dataflow or "weight-stationary"
    k_steps = math.ceil(k / unit.depth)
    pack = packed_gemms(k_steps, n, batch, unit) if flow == "weight-stationary" else 1
    batch = math.ceil(batch / pack)
    k_steps, n = k_steps * pack, n * pack
    if flow == "output-stationary":
        folds = math.ceil(m / unit.rows) * math.ceil(n / unit.cols)
    else:
        folds = math.ceil(k_steps / unit.rows) * math.ceil(n / unit.cols)
    per_fold = systolic_cycles(m, n, k_steps, unit.rows, unit.cols, flow) // folds
    total_folds = folds * batch
    cycles = math.ceil(total_folds / unit.count) * per_fold
    ratio = _rate_ratio(device, unit, fmt)
    seconds = cycles / unit.clock_hz / max(ratio, 1e-9) / device.compute.efficiency(fmt) / speed
    padded = float(math.ceil(total_folds / unit.count) * unit.count * per_fold * unit.rows * unit.cols * unit.depth * 2)
    return GemmTime(seconds, padded)


def packed_gemms(k: int, n: int, batch: int, unit: MatrixUnit) -> int:
    """How many of `batch` independent small GEMMs (a grouped or depthwise convolution's groups)
    a weight-stationary array holds at once, their K x N weight blocks on its diagonal: the inputs
    of the g GEMMs stream in side by side along K and their outputs leave in separate columns, so g
    of them share one fold. A 3x3 depthwise conv (K = 9, N = 1) on a 64 x 64 array packs 7 channels
    per fold instead of one (SCALE-Sim maps one group per fold)."""
    if batch <= 1 or k >= unit.rows or n >= unit.cols:
        return 1
    return max(1, min(batch, unit.rows // k, unit.cols // n))


TILE_CANDIDATES = (16, 32, 64, 128, 256)
SPLIT_K = (1, 2, 4, 8, 16)


def tiled_time(
    device: Device, unit: MatrixUnit, fmt: str, gemm: tuple[int, int, int, int], speed: float = 1.0
) -> GemmTime:
    """Tile and wave quantization for tile-parallel units (GPU tensor cores, CPU SIMD, FPGA DSPs).

    A kernel cuts the output into tm x tn tiles; partial tiles cost a whole tile (tile
    quantization). Tiles run in waves of `compute.units` (SMs, cores) at once; a partial
    last wave costs a whole wave (wave quantization). A tile takes 2 tm tn K / (peak / units)
    seconds, divided by the measured (or assumed) large-GEMM efficiency. The device's `wave_latency(fmt)`
    (a tile's pipeline fill before its first K step and its accumulators' drain after the last) is paid
    once at the start and once at the end; each further wave takes the longer of its work and that
    latency, since the next tile's loads are issued while this one computes (a long tile hides them, a
    short one waits): fill + work + (waves - 1) * max(work, fill).

    Like a BLAS library's kernel selection, the model takes the fastest of the candidate
    tilings: tm, tn from 16 up to the device's largest block (`kernel_tile_mnk`), and
    split-K by 1-16 for skinny GEMMs (M * N too small to fill the units). Without this, a
    batch-1 GEMV would be charged a full 128x256 tile per column block.
    """
    m, n, k, batch = gemm
    tm_max, tn_max, _tk = device.compute.kernel_tile_mnk
    units = device.compute.units
    rate = device.peak(fmt) / units * device.compute.efficiency(fmt) * speed  # one unit's achievable ops/s
    wave_s = device.compute.wave_latency(fmt)
    splits = [(s, math.ceil(k / s)) for s in SPLIT_K if s == 1 or k // s >= 256]
    best = (math.inf, 0.0)  # (seconds, flops spent) of the fastest tiling; split 1 is always a candidate
    for tm in [t for t in TILE_CANDIDATES if t <= tm_max] or [tm_max]:
        row_tiles = math.ceil(m / tm) * batch
        for tn in [t for t in TILE_CANDIDATES if t <= tn_max] or [tn_max]:
            tiles, area_ops = row_tiles * math.ceil(n / tn), 2.0 * tm * tn
            for split, k_part in splits:
                waves = -(-tiles * split // units)
                work_s = area_ops * k_part / rate
                cand = (wave_s + work_s + (waves - 1) * max(work_s, wave_s), waves * units * area_ops * k_part)
                if cand < best:
                    best = cand
    seconds, spent = best
    return GemmTime(seconds, spent)


def half_dims_time(
    device: Device, unit: MatrixUnit, fmt: str, gemm: tuple[int, int, int, int], speed: float = 1.0
) -> GemmTime:
    """Hockney's half-performance lengths, per GEMM dimension: a CPU library's efficiency falls
    as any of M, N, K shrinks (packing, threading, loop overheads), modelled as
    eff = 1 / (1 + m0/M + n0/N + k0/K) with (m0, n0, k0) fitted by `chipfit calibrate`.
    Where `chipfit calibrate` measured a grid of FP32 GEMMs (compute.gemm_table), an FP32 GEMM runs at the
    grid's interpolated rate instead (Compute.gemm_table_rate). Devices without fitted half dims use the
    tiled model."""
    m, n, k, batch = gemm
    if device.compute.gemm_table and fmt == "float32":
        flops = 2.0 * m * n * k * batch
        return GemmTime(flops / (device.compute.gemm_table_rate(m, n, k) * speed), flops)
    if device.compute.gemm_half_dims is None:
        return tiled_time(device, unit, fmt, gemm, speed)
    m0, n0, k0 = device.compute.gemm_half_dims
    eff = 1.0 / (1.0 + m0 / m + n0 / n + k0 / k) * device.compute.efficiency(fmt) * speed
    flops = 2.0 * m * n * k * batch
    return GemmTime(flops / (device.peak(fmt) * eff), flops)


@register_matrix_model("dataflow")
def dataflow_time(
    device: Device, unit: MatrixUnit, fmt: str, gemm: tuple[int, int, int, int], speed: float = 1.0
) -> GemmTime:
    """A compile-time scheduled spatial machine whose weights live in on-chip SRAM (Groq's TSP,
    Cerebras' wafer): the compiler streams each weight tile into the array while the previous one
    computes, so there is no per-fold fill or drain and no kernel launch. The array is `count` planes
    of rows x cols MACs (times depth); K and N are padded to the array's rows and cols (a partial
    tile occupies a whole one), M streams through unpadded. Reading the weights is the op's memory
    time (SRAM bandwidth), priced by the cost model beside this: a batch-1 GEMV is bound by it."""
    m, n, k, batch = gemm
    kp = math.ceil(k / (unit.rows * unit.depth)) * unit.rows * unit.depth
    np_ = math.ceil(n / unit.cols) * unit.cols
    macs = float(m) * kp * np_ * batch
    ratio = _rate_ratio(device, unit, fmt)
    seconds = macs / unit.peak_macs_per_s / max(ratio, 1e-9) / device.compute.efficiency(fmt) / speed
    return GemmTime(seconds, 2 * macs)


for _kind in ("tensor-core", "dsp"):
    register_matrix_model(_kind)(tiled_time)
register_matrix_model("simd")(half_dims_time)


def check_matrix_models() -> None:
    """Every matrix-unit kind a device file may name has a model (run at import, so a new kind
    without one fails when chipfit loads, not at estimate time)."""
    missing = [k for k in MATRIX_KINDS if k not in MATRIX_MODELS]
    if missing:
        raise ImportError(f"matrix-unit kinds without a cost model: {', '.join(missing)}; register one each")


check_matrix_models()
