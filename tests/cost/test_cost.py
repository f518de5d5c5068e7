"""Cost model: hand-derived systolic cycles, tile/wave quantization, invariants, fallback, money."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from chipfit.cost import estimate, resolve_precision, systolic_cycles
from chipfit.cost.units import systolic_time, tiled_time
from chipfit.hardware import Device, get_device, load_catalog
from chipfit.hardware.device import FrozenMap
from chipfit.models import get_model
from chipfit.trace import Trace, trace


# ------------------------------------------------------------ systolic arrays (SCALE-Sim, paper form)
@pytest.mark.parametrize(
    ("mnk", "array", "flow", "cycles"),
    [
        # tau = (2R + C + T - 2) * ceil(Sr/R) * ceil(Sc/C); OS: Sr=M, Sc=N, T=K; WS: Sr=K, Sc=N, T=M
        ((8, 8, 8), 8, "output-stationary", 30),  # 1 fold: 16 + 8 + 8 - 2
        ((20, 10, 5), 8, "output-stationary", 162),  # 3 x 2 folds of 16 + 8 + 5 - 2 = 27
        ((20, 10, 5), 8, "weight-stationary", 84),  # 1 x 2 folds of 16 + 8 + 20 - 2 = 42
        ((64, 64, 128), 32, "output-stationary", 888),  # 2 x 2 folds of 64 + 32 + 128 - 2 = 222
        ((64, 64, 128), 32, "weight-stationary", 1264),  # 4 x 2 folds of 64 + 32 + 64 - 2 = 158
        ((1, 4096, 4096), 128, "weight-stationary", 392192),  # GEMV: 32 x 32 folds of 256 + 128 + 1 - 2 = 383
        ((512, 1000, 2048), 128, "output-stationary", 77760),  # 4 x 8 folds of 256 + 128 + 2048 - 2 = 2430
    ],
)
def test_systolic_cycles_by_hand(mnk: tuple[int, int, int], array: int, flow: str, cycles: int) -> None:
    m, n, k = mnk
    assert systolic_cycles(m, n, k, array, array, flow) == cycles


def test_systolic_time_on_a_device() -> None:
    dev = get_device("inferentia2")  # 2 arrays of 128x128, weight stationary, 2.8 GHz
    unit = dev.matrix_units[0]
    t = systolic_time(dev, unit, "bfloat16", (256, 256, 256, 1))
    # WS: Sr = K = 256 -> 2, Sc = N = 256 -> 2: 4 folds of 256 + 128 + 256 - 2 = 638 cycles, 2 folds per array
    cycles = 2 * 638
    ratio = dev.peak("bfloat16") / (2 * unit.peak_macs_per_s)  # 190 / 183.5 TFLOPS
    assert t.seconds == pytest.approx(cycles / 2.8e9 / ratio / dev.compute.matmul_efficiency)
    # int8 runs at twice the MAC rate of the same array
    assert systolic_time(dev, unit, "int8", (256, 256, 256, 1)).seconds == pytest.approx(t.seconds / 2, rel=0.01)
    with pytest.raises(ValueError, match="unknown dataflow"):
        systolic_cycles(8, 8, 8, 8, 8, "row-stationary")


def _no_wave_latency(dev: Device) -> Device:
    c = dataclasses.replace(dev.compute, wave_latency_s=0.0, wave_latency_format_s=FrozenMap({}))
    return dataclasses.replace(dev, compute=c)


def test_tile_and_wave_quantization() -> None:
    h100 = _no_wave_latency(get_device("h100-sxm"))  # 132 SMs; the work alone (each wave's latency: below)
    unit = h100.matrix_units[0]
    # tile quantization: 1 row costs a whole 16-row tile
    gemv = tiled_time(h100, unit, "bfloat16", (1, 4096, 4096, 1))
    assert gemv.seconds == tiled_time(h100, unit, "bfloat16", (16, 4096, 4096, 1)).seconds
    assert gemv.padded_flops >= 16 * 2 * 4096 * 4096
    # wave quantization: 132 tiles of 16x16 fill the 132 SMs once; 16 more rows need a second wave,
    # or tiles twice as tall: either way twice the time (K = 256 is too short to split)
    one_wave = tiled_time(h100, unit, "bfloat16", (16 * 132, 16, 256, 1))
    spilled = tiled_time(h100, unit, "bfloat16", (16 * 133, 16, 256, 1))
    assert spilled.seconds == pytest.approx(2 * one_wave.seconds)
    # a large square GEMM runs near the efficiency-derated peak
    big = tiled_time(h100, unit, "bfloat16", (8192, 8192, 8192, 1))
    achieved = 2 * 8192**3 / big.seconds
    assert 0.9 * h100.compute.matmul_efficiency < achieved / h100.peak("bfloat16") <= h100.compute.matmul_efficiency


@pytest.mark.parametrize("fmt", ["bfloat16", "tfloat32", "float8_e4m3fn"])
def test_the_wave_latency_is_hidden_behind_long_tiles_and_not_short_ones(fmt: str) -> None:
    h100 = get_device("h100-sxm")
    unit = h100.matrix_units[0]
    fill = h100.compute.wave_latency(fmt)
    assert fill > 0
    assert h100.compute.wave_latency("tfloat32") > h100.compute.wave_latency("bfloat16")  # XLA's sm_90 table
    per_sm = h100.peak(fmt) / 132 * h100.compute.efficiency(fmt)
    # 132 x 3 output tiles of 128 x 256: three waves. K = 4096: each tile's work outlasts the fill, so
    # only the first fill is exposed; K = 64: each wave waits for its fill
    for k in (4096, 64):
        gemm = (128 * 132, 256 * 3, k, 1)
        work = 2.0 * 128 * 256 * k / per_sm
        assert tiled_time(_no_wave_latency(h100), unit, fmt, gemm).seconds == pytest.approx(3 * work)
        expected = fill + work + 2 * max(work, fill)
        assert tiled_time(h100, unit, fmt, gemm).seconds == pytest.approx(expected)
    assert 2.0 * 128 * 256 * 4096 / per_sm > fill > 2.0 * 128 * 256 * 64 / per_sm


# ------------------------------------------------------------ whole-model estimates and invariants
def _trace(name: str, batch: int, **kw: object) -> Trace:
    spec = get_model(name)
    with FakeTensorMode(allow_non_fake_inputs=True):
        model, inputs = spec.build(), spec.example_inputs(batch, kw.pop("seq", None), bool(kw.pop("decode", False)))  # type: ignore[arg-type]
    return trace(model, inputs, **kw)  # type: ignore[arg-type]


def _with_bandwidth(dev: Device, factor: float) -> Device:
    mem = tuple(dataclasses.replace(m, bandwidth_bytes_per_s=m.bandwidth_bytes_per_s * factor) for m in dev.memory)
    return dataclasses.replace(dev, memory=mem)


@pytest.mark.parametrize("dev", list(load_catalog().values()), ids=lambda d: d.name)
def test_every_device_prices_resnet_sanely(dev: Device) -> None:
    tr = _trace("resnet50", 2)
    e = estimate(tr, dev, "int8" if dev.peak("int8") and not dev.peak("bfloat16") else "bf16")
    assert e.latency_s > 0 and math.isfinite(e.energy_j)
    assert e.energy_j >= dev.power.idle_w * e.latency_s  # static power over the elapsed time
    assert 0 <= e.matrix_utilization <= 1
    assert all(r.time_s >= 0 for r in e.rows)
    # doubling bandwidth never slows anything
    faster = estimate(tr, _with_bandwidth(dev, 2), e.precision.requested)
    assert faster.latency_s <= e.latency_s * (1 + 1e-9)
    assert all(a.time_s <= b.time_s * (1 + 1e-9) for a, b in zip(faster.rows, e.rows, strict=True))


def test_memory_bound_op_scales_with_bytes() -> None:
    dev = get_device("a100-sxm")
    small = estimate(trace(nn.ReLU(), (torch.randn(64, 1 << 20),)), dev, "fp32")
    large = estimate(trace(nn.ReLU(), (torch.randn(128, 1 << 20),)), dev, "fp32")
    (s,), (lg,) = ([r for r in e.rows if r.op_class == "elementwise"] for e in (small, large))
    assert s.bound == lg.bound == "memory"
    assert lg.memory_s == pytest.approx(2 * s.memory_s)


def test_utilization_rises_with_batch_on_big_chips_and_saturates_on_small() -> None:
    """The "bus vs sports car" behaviour: it comes out of tile/wave quantization and memory traffic."""
    util = {
        dev: [estimate(_trace("bert-base", b, seq=128), dev, "bf16").matrix_utilization for b in (1, 4, 16, 64)]
        for dev in ("h100-sxm", "l4")
    }
    assert util["h100-sxm"] == sorted(util["h100-sxm"])  # monotone in batch
    assert util["h100-sxm"][-1] > 3 * util["h100-sxm"][0]
    # the small chip is near its plateau already at batch 4, the big one is not
    gain = {d: u[-1] / u[1] for d, u in util.items()}
    assert gain["h100-sxm"] > gain["l4"]
    # energy per item falls as the big chip fills (idle power over a step that barely uses the array)
    energy = [estimate(_trace("bert-base", b, seq=128), "h100-sxm", "bf16").energy_per_item_j for b in (1, 64)]
    assert energy[1] < energy[0] / 2


def test_fallback_adds_host_link_time() -> None:
    tr = _trace("bert-base", 1, seq=64)
    edge = get_device("edge-tpu")  # layer norms run on the host CPU over PCIe 2.0 x1
    e = estimate(tr, edge, "int8")
    fb = e.fallbacks()
    assert fb and all(r.unit == "host" and r.transfer_s > 0 for r in fb)
    assert {r.op_class for r in fb} == {"normalization"}
    no_fallback = dataclasses.replace(edge, support=dataclasses.replace(edge.support, host_op_classes=()))
    assert estimate(tr, no_fallback, "int8").latency_s < e.latency_s


def test_precision_resolution() -> None:
    assert resolve_precision(get_device("mi300x"), "fp8").format == "float8_e4m3fnuz"
    # Inferentia2 has FP32 units, but the Neuron compiler casts FP32 matmuls to BF16 by default; TPUs likewise
    inf2 = resolve_precision(get_device("inferentia2"), "float32")
    assert (inf2.format, inf2.how) == ("bfloat16", "autocast")
    tpu = resolve_precision(get_device("tpu-v5e"), "fp32")
    assert (tpu.format, tpu.how) == ("bfloat16", "autocast")
    assert resolve_precision(get_device("t4"), "bf16").how == "vector"  # no BF16 tensor cores on Turing
    assert resolve_precision(get_device("alveo-u250"), "bf16").how == "host"
    with pytest.raises(ValueError, match="unknown precision 'fp7'; known: fp32, tf32, bf16"):
        resolve_precision(get_device("t4"), "fp7")


def test_money_and_totals() -> None:
    tr = _trace("mlp", 32)
    e = estimate(tr, "a100-sxm", "bf16")
    assert e.price is not None and e.price.basis == "on-demand"
    assert e.usd_per_million == pytest.approx(e.price.usd_per_hour * e.latency_s / 3600 / 32 * 1e6)
    assert e.throughput == pytest.approx(32 / e.latency_s)
    assert estimate(tr, "ascend-910b", "bf16").usd_per_million is None  # no sourced price
    t = e.totals()
    assert t["share_compute_bound"] + t["share_memory_bound"] + t["share_overhead"] + t[
        "share_transfer"
    ] == pytest.approx(1)
    assert sum(v["time_s"] for v in e.by("op_class").values()) == pytest.approx(e.latency_s)


def test_footprint_decides_fit() -> None:
    tr = _trace("decoder-70b", 1, seq=128)
    assert not estimate(tr, "h100-sxm", "bf16").fits  # 69e9 params x 2 bytes > 80 GB
    assert estimate(tr, "b200", "fp8").fits  # 69e9 x 1 byte < 180 GB


@pytest.mark.parametrize("execution", ["eager", "inductor", "xla"])
def test_repeated_ops_priced_once_equal_pricing_each_op(execution: str) -> None:
    """estimate() prices each distinct op (or kernel) once (repeated layers); every row equals pricing
    its record of the trace as the stack runs it."""
    from chipfit.cost.estimate import Pricer, _cost, compiled, resolve_precision
    from chipfit.hardware import get_device
    from chipfit.hardware.stacks import get_stack
    from chipfit.models import get_model
    from chipfit.trace import trace

    spec = get_model("decoder-125m")
    tr = trace(spec.build(), list(spec.example_inputs(2, seq_len=16)), mode="training", optimizer="adam")
    dev = get_device("h100-sxm")
    stack = get_stack(execution)
    est = estimate(tr, dev, "bf16", execution=execution)
    prec = resolve_precision(dev, "bf16")
    scale = 16 / 32
    host = get_device(dev.support.host) if dev.support.host else None
    launch = None if execution == "eager" else stack.kernel_launch_on(dev)
    ctr = compiled(tr, stack)
    recs = ctr.records
    hits = Pricer.of(dev, prec, stack, tr.footprint.params_bytes * scale).resident(ctr)
    assert len(recs) < len(tr.records) or execution == "eager"
    assert any(hits) == (execution != "eager"), "compiled: some kernel reads a tensor an earlier one left in L2"
    for rec, row, hit in zip(recs, est.rows, hits, strict=False):
        defer = execution != "eager"
        assert row == _cost(
            dev, prec, rec, scale, host, tr.footprint.params_bytes * scale, launch, resident=hit, defer=defer
        )


def test_mobilenet_v2_int8_on_the_edge_tpu_is_within_2x_of_corals_published_latency() -> None:
    """coral.ai 'Edge TPU performance benchmarks', table 1: MobileNet v2 (224x224), 2.6 ms per inference
    on the USB Accelerator and on the Dev Board. BatchNorm is folded into the convolutions by the TFLite
    converter (the edgetpu stack's fold_batchnorm), so none of it crosses to the host."""
    e = estimate(_trace("mobilenet-v2", 1), "edge-tpu", "int8")
    assert e.execution == "edgetpu"  # the device's own stack, by default
    assert 2.6e-3 / 2 <= e.latency_s <= 2.6e-3 * 2, e.latency_s
    assert not any(r.op_class == "normalization" for r in e.rows)  # every BatchNorm folded into a conv kernel
    assert sum("batch_norm" in r.op for r in e.rows) == 52  # MobileNetV2's 52 conv + BatchNorm pairs
    assert not e.fallbacks()


def test_batchnorm_is_folded_only_where_the_stack_folds_it_and_only_for_inference() -> None:

    from chipfit.cost.fusion import kernels
    from chipfit.hardware import get_device
    from chipfit.hardware.stacks import get_stack

    tpu = get_device("edge-tpu")
    tr = _trace("mobilenet-v2", 1)
    folded_s = estimate(tr, tpu, "int8").latency_s
    unfolded_e = estimate(tr, tpu, "int8", execution="eager")  # one kernel per op: nothing folds
    assert unfolded_e.latency_s > 5 * folded_s  # every BatchNorm over PCIe to the host and back
    assert any(r.fallback and "batch_norm" in r.op for r in unfolded_e.rows)
    # a stack that folds does not fold a training step's BatchNorm (batch statistics, and its backward)
    training = _trace("mobilenet-v2", 2, mode="training")
    assert not any(k.folded for k in kernels(training, get_stack("xla")))
    assert any(k.folded for k in kernels(_trace("mobilenet-v2", 2), get_stack("xla")))


def test_a_weight_stationary_array_packs_depthwise_groups_on_its_diagonal() -> None:
    from chipfit.cost.units import packed_gemms, systolic_time
    from chipfit.hardware import get_device

    tpu = get_device("edge-tpu")  # one 64 x 64 weight-stationary array
    unit = tpu.matrix_units[0]
    assert packed_gemms(9, 1, 144, unit) == 7  # 64 // 9 = 7 channels of 9 taps per fold
    assert packed_gemms(9, 1, 1, unit) == 1 and packed_gemms(128, 1, 144, unit) == 1  # nothing to pack
    one = systolic_time(tpu, unit, "int8", (3136, 1, 9, 1)).seconds
    dw = systolic_time(tpu, unit, "int8", (3136, 1, 9, 144)).seconds
    assert dw == pytest.approx(one * math.ceil(144 / 7))  # 21 folds, not 144


def test_a_depthwise_conv_runs_on_a_cpus_vector_unit_and_a_dense_one_on_its_matrix_unit() -> None:
    from chipfit.cost.estimate import Unit

    xeon, h100 = get_device("xeon-8480"), get_device("h100-sxm")
    assert xeon.matrix_units[0].kind == "simd" and xeon.matrix_units[0].cols > 1
    x = torch.randn(2, 64, 14, 14)
    depthwise, dense = nn.Conv2d(64, 64, 3, padding=1, groups=64), nn.Conv2d(64, 64, 3, padding=1)
    for conv, on_cpu in ((depthwise, Unit.VECTOR), (dense, Unit.MATRIX)):
        (row,) = [r for r in estimate(trace(conv, [x]), xeon, "fp32", execution="eager").rows if r.op_class == "conv"]
        assert row.unit is on_cpu
        if on_cpu is Unit.VECTOR:  # 2 * N*H*W * C * 9 FLOPs at the vector rate
            assert row.compute_s == pytest.approx(2 * 2 * 14 * 14 * 64 * 9 / xeon.compute.vector_ops_per_s)
        (gpu_row,) = [r for r in estimate(trace(conv, [x]), h100, "fp32").rows if r.op_class == "conv"]
        assert gpu_row.unit is Unit.MATRIX  # a GPU's tiles pay for the narrow groups instead (tile quantization)
