"""The sparse cost path: compute at the sparse rate, compressed weights, unchanged without sparse math."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch import nn

from chipfit.cost import estimate
from chipfit.cost.sparse import SparseLayers
from chipfit.errors import InputError
from chipfit.hardware import get_device, list_devices
from chipfit.hardware.loader import load_devices
from chipfit.hardware.sparsity import Pattern
from chipfit.sparsity import sparse_layers, sparsify_
from chipfit.trace import trace

TWO_FOUR = Pattern(2, 4)


def _linear_trace(m: int, k: int, n: int, layers: int = 1):
    model = nn.Sequential(*[nn.Linear(k, n, bias=False) for _ in range(layers)])
    return model, trace(model, [torch.randn(m, k)])


def _gemm(est):
    return next(r for r in est.rows if r.op_class == "matmul")


def _all(layers: int) -> SparseLayers:
    return SparseLayers(TWO_FOUR, frozenset(str(i) for i in range(layers)))


def test_pattern_compatibility_and_compressed_size() -> None:
    assert Pattern(1, 4).runs_on(TWO_FOUR) and Pattern(2, 8).runs_on(TWO_FOUR) and Pattern(1, 2).runs_on(TWO_FOUR)
    assert not Pattern(4, 8).runs_on(TWO_FOUR) and not Pattern(3, 4).runs_on(TWO_FOUR)
    assert not Pattern(share=0.5).runs_on(TWO_FOUR)
    # kept values plus a 2-bit index each, per dense byte: FP16 (2 x 16 + 2 x 2) / 64, INT8 (2 x 8 + 4) / 32
    assert TWO_FOUR.compressed_share(16) == pytest.approx(36 / 64)
    assert TWO_FOUR.compressed_share(8) == pytest.approx(20 / 32)
    assert Pattern(4, 8).index_bits == 3
    with pytest.raises(InputError, match="N:M with 0 < N <= M"):
        Pattern.parse("4:2")


def test_compute_bound_gemm_halves_at_the_sparse_peak(tmp_path: Path) -> None:
    """A chip whose sparse kernels reach its sparse peak (efficiency 1) halves a compute-bound GEMM's time;
    the catalog's H100, whose sparse kernels measure 1.20x over dense, takes 1 / 1.2 of it."""
    p = tmp_path / "chip.toml"
    p.write_text(SPARSE_CHIP.replace("{peak}", "1978e12"))
    ideal = load_devices([p], env=False)["sparsechip"]
    _, tr = _linear_trace(16384, 16384, 16384)
    for dev, ratio in ((ideal, 0.5), (get_device("h100-sxm"), 1 / 1.2)):
        dense = _gemm(estimate(tr, dev, "bf16"))
        sparse = _gemm(estimate(tr, dev, "bf16", sparsity=_all(1)))
        assert dense.bound == "compute" and sparse.sparse and not dense.sparse
        assert sparse.compute_s == pytest.approx(dense.compute_s * ratio, rel=0.01)
        assert sparse.utilization <= 1.0
    assert ideal.sparse_speedup("bfloat16", TWO_FOUR) == pytest.approx(2.0, rel=1e-3)
    assert get_device("h100-sxm").sparse_speedup("bfloat16", "2:4") == pytest.approx(1.2)


@pytest.mark.parametrize("name", ["v100-sxm", "tpu-v5e", "gaudi2", "xeon-8480"])
def test_unchanged_on_a_chip_without_sparse_math(name: str) -> None:
    _, tr = _linear_trace(4096, 4096, 4096)
    dev = get_device(name)
    prec = "fp16" if name == "v100-sxm" else "bf16"
    dense = estimate(tr, dev, prec)
    sparse = estimate(tr, dev, prec, sparsity=_all(1))
    assert sparse.latency_s == dense.latency_s and sparse.energy_j == dense.energy_j
    assert sparse.sparse_gemms == 0 and sparse.sparse_covered == 1
    assert "no 2:4 sparse math" in sparse.sparsity_note()


def test_memory_bound_gemv_reads_compressed_weights() -> None:
    """One token through an 8192 x 8192 BF16 weight: the weight read is (2 x 16 + 2 x 2) / 64 of dense."""
    _, tr = _linear_trace(1, 8192, 8192)
    dev = get_device("h100-sxm")
    dense = _gemm(estimate(tr, dev, "bf16", execution="eager"))
    sparse = _gemm(estimate(tr, dev, "bf16", execution="eager", sparsity=_all(1)))
    weight = 8192 * 8192 * 2  # BF16 bytes
    acts = (8192 + 8192) * 2
    assert dense.bytes == pytest.approx(weight + acts)
    assert sparse.bytes == pytest.approx(weight * 36 / 64 + acts)
    assert dense.bound == sparse.bound == "memory"
    assert sparse.memory_s / dense.memory_s == pytest.approx((weight * 36 / 64 + acts) / (weight + acts), rel=1e-3)


def test_int8_weights_compress_at_their_storage_width() -> None:
    _, tr = _linear_trace(1, 8192, 8192)
    dev = get_device("h100-sxm")
    dense = _gemm(estimate(tr, dev, "int8", execution="eager"))
    sparse = _gemm(estimate(tr, dev, "int8", execution="eager", sparsity=_all(1)))
    weight = 8192 * 8192
    assert dense.bytes - sparse.bytes == pytest.approx(weight * (1 - 20 / 32))


def test_only_the_pruned_layers_run_sparse_even_where_twins_repeat() -> None:
    """Identical layers are priced once (trace twins); a dense twin of a pruned layer stays dense."""
    model, tr = _linear_trace(8192, 8192, 8192, layers=4)
    dev = get_device("h100-sxm")
    picked = sparse_layers(model, TWO_FOUR)  # the first and last stay dense by default
    assert picked.layers == {"1", "2"}
    est = estimate(tr, dev, "bf16", sparsity=picked)
    flags = {r.module: r.sparse for r in est.rows if r.op_class == "matmul"}
    assert flags == {"0": False, "1": True, "2": True, "3": False}
    assert est.sparse_gemms == est.sparse_covered == 2
    dense = estimate(tr, dev, "bf16")
    assert est.latency_s < dense.latency_s


def test_backward_gemms_stay_dense() -> None:
    model = nn.Sequential(nn.Linear(4096, 4096, bias=False))
    tr = trace(model, [torch.randn(4096, 4096)], mode="training", optimizer="sgd")
    est = estimate(tr, "h100-sxm", "bf16", sparsity=_all(1))
    assert est.sparse_gemms == 1
    assert all(r.phase == "forward" for r in est.rows if r.sparse)


def test_a_pruned_model_reports_its_layers_to_the_cost_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    rep = sparsify_(model, "2:4")
    assert rep.pruned.layers == {"2"} and rep.pruned.pattern == TWO_FOUR


def test_every_builtin_device_states_its_sparse_math() -> None:
    """A catalog entry says what sparse math the chip has, or that it has none, with a source."""
    for dev in list_devices():
        assert dev.sparsity is not None, dev.name
        assert dev.sparsity.source.ref, dev.name
        for pat in dev.sparsity.patterns:
            for fmt in dev.sparsity.formats:
                best = dev.sparsity.best(pat, fmt)
                if best is not None:
                    assert dev.peak(fmt) < best[1] <= dev.peak(fmt) * pat.m / pat.n * 1.01


def test_nvidia_ampere_and_later_run_2_4_and_volta_turing_do_not() -> None:
    for name in ("a100-sxm", "h100-sxm", "h200-sxm", "l4", "b200"):
        dev = get_device(name)
        assert dev.sparsity is not None and dev.sparsity.best(TWO_FOUR, "int8") == (TWO_FOUR, 2 * dev.peak("int8"))
        assert 1.0 < dev.sparse_speedup("int8", TWO_FOUR) < 2.0, name  # what sparse kernels measure
    for name in ("v100-sxm", "t4"):
        assert get_device(name).sparsity is not None
        assert not get_device(name).sparsity.peak_ops_per_s, name


SPARSE_CHIP = """
[sparsechip]
extends = "h100-sxm"
display_name = "test"
[sparsechip.sparsity]
peak_ops_per_s = { "2:4" = { bfloat16 = {peak} } }
source = "assumed: a test"
efficiency = 1.0
efficiency_source = "assumed: sparse kernels at the sparse peak"
"""


@pytest.mark.parametrize(
    ("peak", "message"),
    [("989e12", "must lie above the dense peak"), ("2100e12", "at most 4/2 times it")],
)
def test_a_sparse_peak_outside_dense_to_m_over_n_is_refused(tmp_path: Path, peak: str, message: str) -> None:
    p = tmp_path / "chip.toml"
    p.write_text(SPARSE_CHIP.replace("{peak}", peak))
    with pytest.raises(InputError, match=message):
        load_devices([p], env=False)


def test_sparse_peaks_need_a_kernel_efficiency(tmp_path: Path) -> None:
    p = tmp_path / "chip.toml"
    text = SPARSE_CHIP.replace('extends = "h100-sxm"', 'extends = "v100-sxm"').replace(
        "bfloat16 = {peak}", "float16 = 250e12"
    )
    p.write_text(text.replace("efficiency = 1.0\n", ""))
    with pytest.raises(InputError, match=r"field 'sparsity\.efficiency': missing required field"):
        load_devices([p], env=False)


def test_a_sparse_format_needs_a_dense_peak(tmp_path: Path) -> None:
    p = tmp_path / "chip.toml"
    p.write_text(SPARSE_CHIP.replace("bfloat16 = {peak}", "int4 = 2e15"))
    with pytest.raises(InputError, match="no dense int4 peak"):
        load_devices([p], env=False)


def test_trainium2_patterns_and_a_sparse_mode_that_gains_nothing() -> None:
    """Trainium2 runs 4:16 and 1:4 at up to 4x its dense BF16 rate and 2:4 at 2x; its sparse FP8 gives up the
    double-rate FP8 mode, so sparse FP8 kernels gain nothing and the pruned GEMM runs dense."""
    dev = get_device("trainium2")
    assert dev.sparse_speedup("bfloat16", "4:16") == pytest.approx(2563 / 667 * 0.6)
    assert dev.sparse_speedup("bfloat16", "1:4") == dev.sparse_speedup("bfloat16", "4:16")
    assert dev.sparse_speedup("bfloat16", "2:4") == pytest.approx(1.2)
    assert dev.sparse_speedup("float8_e4m3fn", "2:4") == 1.0
    _, tr = _linear_trace(4096, 4096, 4096)
    dense = estimate(tr, dev, "fp8")
    sparse = estimate(tr, dev, "fp8", sparsity=_all(1))
    assert sparse.latency_s == dense.latency_s and sparse.sparse_gemms == 0
