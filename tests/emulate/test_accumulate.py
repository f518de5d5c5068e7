"""Chunked accumulation: the fast path equals the element-by-element exact reference bit for bit."""

from __future__ import annotations

import importlib
from typing import Any

import pytest
import torch

from chipfit.emulate import ACCUMULATIONS, Accumulation, chunked_matmul, chunked_matmul_reference, emulate
from chipfit.emulate.policy import NumericsPolicy, Operand, Scaling
from chipfit.formats import Rounding, quantize

CASES = [
    *(a for a in ACCUMULATIONS.values() if not a.default),
    Accumulation("bfloat16", chunk_k=4, name="bf16-chunk4"),
    Accumulation("float16", chunk_k=8, promote_k=32, rounding="toward-zero", name="fp16-rz-promote"),
    Accumulation("float32", chunk_k=1, name="fp32-sequential"),
]


def _inputs(fmt: str, m: int, k: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(m, k, generator=g) * 4
    b = torch.randn(k, n, generator=g)
    return quantize(a, fmt), quantize(b, fmt)


def _accmod() -> Any:
    return importlib.import_module("chipfit.emulate.accumulate")  # chipfit.emulate is also the function


@pytest.fixture(params=["fused", "tiled"])
def path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run a test through each fast path of chunked_matmul: the fused numba GEMM, or the MKL
    chunk sums + narrow pass (thresholds lowered so small shapes take it; 3-row tiles)."""
    mod = _accmod()
    if request.param == "tiled":
        monkeypatch.setattr(mod, "_TILED_MIN_N", 1)
        monkeypatch.setattr(mod, "_TILED_MIN_MACS", 0)
        monkeypatch.setattr(mod, "_TILE_ROWS", 3)
    else:
        monkeypatch.setattr(mod, "_TILED_MIN_N", 1 << 30)
    return str(request.param)


@pytest.mark.parametrize("acc", CASES, ids=lambda a: a.name)
@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "bfloat16", "float16"])
def test_fast_equals_reference_bit_for_bit(acc: Accumulation, fmt: str, path: str) -> None:
    a, b = _inputs(fmt, 5, 200, 4, seed=hash((acc.name, fmt)) % 1000)  # K = 200: ragged last chunk; 5 rows: ragged tile
    fast = chunked_matmul(a, b, acc)
    ref = chunked_matmul_reference(a, b, acc)
    assert torch.equal(fast.view(torch.int32), ref.view(torch.int32))


@pytest.mark.parametrize("name", ["float22_e8m13", "float32", "tfloat32", "bfloat16", "float16"])
def test_truncation_mask_equals_quantize_toward_zero(name: str) -> None:
    """Where truncation_mask exists it equals quantize (toward zero, non-saturating) on every
    non-NaN float32 exponent, subnormals, the overflow range and infinities; elsewhere it is None."""
    mod = _accmod()
    fmt = mod.accumulator_format(name)
    mask = mod.truncation_mask(fmt, Rounding.TOWARD_ZERO)
    assert mod.truncation_mask(fmt, Rounding.NEAREST_EVEN) is None
    if fmt.exp_bits != 8:
        assert mask is None
        return
    assert mask is not None
    g = torch.Generator().manual_seed(11)
    exps = torch.arange(256, dtype=torch.int32).repeat_interleave(64)[:-64]  # every exponent field but NaN's
    mant = torch.randint(0, 1 << 23, exps.shape, generator=g, dtype=torch.int32)
    mant[::64] = 0  # powers of two and zero
    mant[1::64] = (1 << 23) - 1  # all mantissa ones (overflow range at the top exponent)
    bits = (exps << 23) | torch.where(exps == 255, 0, mant)  # exponent 255: inf only
    x = torch.cat([bits, bits | torch.tensor(-(1 << 31), dtype=torch.int32)]).view(torch.float32)
    want = quantize(x, fmt, rounding="toward-zero", overflow="nonsat")
    assert torch.equal((x.view(torch.int32) & mask), want.view(torch.int32))


@pytest.mark.parametrize("acc", CASES, ids=lambda a: a.name)
def test_tiled_path_equals_the_fused_kernel_at_its_own_thresholds(acc: Accumulation) -> None:
    """At sizes that take the MKL path by default (N >= 128, >= 2^22 MACs), with a ragged last
    tile and chunk, it equals the fused kernel bit for bit; NaN input falls back to the fused
    kernel (which decides NaN payloads)."""
    mod = _accmod()
    a, b = _inputs("float8_e4m3fn", 70, 300, 200, seed=5)
    assert b.shape[1] >= mod._TILED_MIN_N and a.numel() * b.shape[1] >= mod._TILED_MIN_MACS
    got = chunked_matmul(a, b, acc)
    if not acc.default:
        want = torch.empty(1, 70, 200)
        mod.fused_chunked(a.double()[None], b.double()[None], want, acc)
        assert torch.equal(got.view(torch.int32), want[0].view(torch.int32))
    a[3, 7] = float("nan")
    b[:, 5] = float("inf")
    got = chunked_matmul(a, b, acc)
    slow = mod.chunked_matmul_torch(a, b, acc)
    assert torch.equal(got.isnan(), slow.isnan()) and got.isnan().any()
    keep = ~got.isnan()
    assert torch.equal(got[keep].view(torch.int32), slow[keep].view(torch.int32))


def test_default_is_the_fp32_gemm_of_the_rounded_inputs() -> None:
    a, b = _inputs("bfloat16", 8, 300, 6, seed=3)
    out = chunked_matmul(a, b, ACCUMULATIONS["fp32"])
    assert torch.equal(out, a @ b)
    exact = (a.double() @ b.double()).float()
    assert torch.allclose(out, exact, rtol=1e-5, atol=1e-4)


def test_narrow_accumulators_lose_precision_and_promotion_recovers_it() -> None:
    a, b = _inputs("float8_e4m3fn", 16, 4096, 16, seed=1)
    exact = (a.double() @ b.double()).float()

    def err(name: str) -> float:
        return float((chunked_matmul(a, b, ACCUMULATIONS[name]) - exact).abs().mean())

    assert err("fp32") < err("fp8-promote-128") < err("fp8-fast-accum")
    assert err("fp16") > 10 * err("fp32")
    # the truncating FP22 accumulator is biased toward zero
    fast = chunked_matmul(a, b, ACCUMULATIONS["fp8-fast-accum"])
    assert float((fast.abs() - exact.abs()).mean()) < 0


def test_batched_and_policy_accumulation() -> None:
    acc = ACCUMULATIONS["fp16"]
    a = quantize(torch.randn(3, 4, 40), "float16")
    b = quantize(torch.randn(3, 40, 5), "float16")
    fast = chunked_matmul(a, b, acc)
    for i in range(3):
        assert torch.equal(fast[i], chunked_matmul_reference(a[i], b[i], acc))
    pol = NumericsPolicy("fp16-acc", a=Operand("float16"), b=Operand("float16"), accumulate=acc)
    with emulate(policy=pol):
        out = torch.bmm(a, b)
    assert torch.equal(out, fast)


def test_conv_with_a_narrow_accumulator_equals_im2col_reference() -> None:
    acc = ACCUMULATIONS["fp16"]
    x = quantize(torch.randn(2, 3, 6, 6), "float16")
    w = quantize(torch.randn(4, 3, 3, 3), "float16")
    pol = NumericsPolicy("fp16-acc", a=Operand("float16"), b=Operand("float16"), accumulate=acc)
    with emulate(policy=pol):
        out = torch.nn.functional.conv2d(x, w, padding=1)
    cols = torch.nn.functional.unfold(x, 3, padding=1)  # (2, 27, 36)
    for n in range(2):
        ref = chunked_matmul_reference(w.reshape(4, 27), cols[n], acc).reshape(4, 6, 6)
        assert torch.equal(out[n], ref)
    with pytest.raises(NotImplementedError, match="2-D, non-transposed"), emulate(policy=pol):
        torch.nn.functional.conv1d(x[:, :, 0], w[:, :, 0], padding=1)


def test_int8_policy_scales_do_not_need_a_narrow_accumulator() -> None:
    op = Operand("int8", Scaling("dynamic"))
    assert NumericsPolicy("i8", a=op, b=op).accumulate.default


@pytest.mark.parametrize("acc", CASES, ids=lambda a: a.name)
def test_fused_scan_equals_the_chunk_by_chunk_torch_path(acc: Accumulation, monkeypatch: pytest.MonkeyPatch) -> None:
    """Larger, broadcast-batched, with overflow to inf, NaN and a ragged row block: the fused numba
    GEMM equals the previous one-quantize-per-chunk torch path bit for bit."""
    import importlib

    accmod = importlib.import_module("chipfit.emulate.accumulate")  # chipfit.emulate is also the function

    g = torch.Generator().manual_seed(7)
    a = quantize(torch.randn(2, 1, 33, 300, generator=g) * 30, "float16")
    b = quantize(torch.randn(1, 3, 300, 17, generator=g) * 30, "float16")
    a[0, 0, 0, :40] = 60000.0  # the FP16 accumulator overflows to inf on this row
    a[1, 0, 5, 7] = float("nan")
    monkeypatch.setattr(accmod, "_ROWS", 5)  # 33 rows: a ragged last block
    fast = chunked_matmul(a, b, acc)
    slow = accmod.chunked_matmul_torch(a, b, acc)
    assert fast.shape == slow.shape == (2, 3, 33, 17)
    assert torch.equal(fast.isnan(), slow.isnan())
    keep = ~fast.isnan()
    assert torch.equal(fast[keep].view(torch.int32), slow[keep].view(torch.int32))
    if acc.format == "float16" and acc.rounding == "nearest-even":  # toward-zero saturates instead
        assert fast.isinf().any()
