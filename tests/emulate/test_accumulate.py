"""Chunked accumulation: the fast path equals the element-by-element exact reference bit for bit."""

from __future__ import annotations

import pytest
import torch

from chipfit.emulate import ACCUMULATIONS, Accumulation, chunked_matmul, chunked_matmul_reference, emulate
from chipfit.emulate.policy import NumericsPolicy, Operand, Scaling
from chipfit.formats import quantize

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


@pytest.mark.parametrize("acc", CASES, ids=lambda a: a.name)
@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "bfloat16", "float16"])
def test_fast_equals_reference_bit_for_bit(acc: Accumulation, fmt: str) -> None:
    a, b = _inputs(fmt, 5, 200, 4, seed=hash((acc.name, fmt)) % 1000)  # K = 200: ragged last chunk
    fast = chunked_matmul(a, b, acc)
    ref = chunked_matmul_reference(a, b, acc)
    assert torch.equal(fast.view(torch.int32), ref.view(torch.int32))


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
