"""The fast kernels against the reference and the external oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from chipfit.formats import FORMATS, PROFILES, FloatFormat, IntFormat, Overflow, Rounding, get_format, quantize
from chipfit.formats.reference import quantize_binary, quantize_bits, quantize_int

from .oracles import FLOAT_FORMATS, ML_DTYPES, TORCH_DTYPES, bits_of, edge_bits, f32, ml_roundtrip, torch_roundtrip

DETERMINISTIC = [m for m in Rounding if m is not Rounding.STOCHASTIC]


def _check_against_reference(fmt: FloatFormat, bits: np.ndarray, **kw: object) -> None:
    got = bits_of(quantize(f32(bits), fmt, **kw))  # type: ignore[arg-type]
    ref_kw = {k: v for k, v in kw.items() if k != "subnormals"}
    if kw.get("subnormals") == "flush":
        ref_kw["flush_subnormals"] = True
    if "overflow" in ref_kw:
        ref_kw["overflow"] = Overflow(ref_kw["overflow"])
    if "rounding" in ref_kw:
        ref_kw["rounding"] = Rounding(ref_kw["rounding"])
    expected = np.array([quantize_bits(int(b), fmt, **ref_kw) for b in bits], dtype=np.uint32)  # type: ignore[arg-type]
    mism = np.flatnonzero(got != expected)
    assert mism.size == 0, [(hex(bits[i]), hex(got[i]), hex(expected[i])) for i in mism[:5]]


@pytest.mark.parametrize("mode", DETERMINISTIC, ids=lambda m: m.value)
@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=lambda f: f.name)
def test_kernel_matches_reference_every_mode(fmt: FloatFormat, mode: Rounding) -> None:
    _check_against_reference(fmt, edge_bits(fmt, limit=120), rounding=mode.value)


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=lambda f: f.name)
def test_kernel_matches_reference_every_profile(fmt: FloatFormat, profile: str) -> None:
    _check_against_reference(fmt, edge_bits(fmt, limit=120), profile=profile)


@pytest.mark.parametrize("overflow", ["saturate", "nonsat"])
@pytest.mark.parametrize("name", ["float8_e4m3fn", "float8_e5m2", "bfloat16", "float8_e4m3fnuz"])
def test_kernel_overflow_override(name: str, overflow: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    for mode in (Rounding.NEAREST_EVEN, Rounding.UP, Rounding.DOWN, Rounding.TOWARD_ZERO):
        _check_against_reference(fmt, edge_bits(fmt, limit=60), overflow=overflow, rounding=mode.value)


@pytest.mark.parametrize("name", ["float16", "float8_e4m3fn", "float8_e5m2"])
def test_kernel_flush_subnormals(name: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    _check_against_reference(fmt, edge_bits(fmt, limit=120), subnormals="flush")
    q = quantize(torch.tensor([fmt.min_subnormal, -fmt.min_normal / 2, fmt.min_normal]), fmt, subnormals="flush")
    assert q.tolist() == [0.0, 0.0, fmt.min_normal] and math.copysign(1, q[1].item()) == -1


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_kernel_matches_torch_on_every_edge(name: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    x = f32(edge_bits(fmt))
    np.testing.assert_array_equal(bits_of(quantize(x, fmt, profile="torch")), torch_roundtrip(x, name))


@pytest.mark.parametrize("name", [n for n in ML_DTYPES if isinstance(get_format(n), FloatFormat)])
def test_kernel_matches_ml_dtypes_on_every_edge(name: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    x = f32(edge_bits(fmt))
    np.testing.assert_array_equal(bits_of(quantize(x, fmt, profile="ml_dtypes")), ml_roundtrip(x, name))


BITS = st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=300)


@given(BITS)
def test_random_bit_patterns_match_torch(raw: list[int]) -> None:
    x = f32(np.array(raw, dtype=np.uint32))
    for name in TORCH_DTYPES:
        got = bits_of(quantize(x, name, profile="torch"))
        np.testing.assert_array_equal(got, torch_roundtrip(x, name), err_msg=name)


@given(BITS)
def test_random_bit_patterns_match_ml_dtypes(raw: list[int]) -> None:
    x = f32(np.array(raw, dtype=np.uint32))
    for name, _ in ML_DTYPES.items():
        if isinstance(get_format(name), FloatFormat):
            got = bits_of(quantize(x, name, profile="ml_dtypes"))
            np.testing.assert_array_equal(got, ml_roundtrip(x, name), err_msg=name)


@given(st.lists(st.integers(0, 2**32 - 1), min_size=1, max_size=40), st.sampled_from(DETERMINISTIC))
def test_random_bit_patterns_match_reference(raw: list[int], mode: Rounding) -> None:
    bits = np.array(raw, dtype=np.uint32)
    for fmt in FLOAT_FORMATS:
        _check_against_reference(fmt, bits, rounding=mode.value, profile="ocp-nonsat")


def test_large_tensor_uses_parallel_kernel_same_bits() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200_000, generator=g) * 100
    small = torch.cat([quantize(c, "float8_e4m3fn") for c in x.split(10_000)])
    assert torch.equal(quantize(x, "float8_e4m3fn").view(torch.int32), small.view(torch.int32))


# ------------------------------------------------------------ stochastic rounding
@pytest.mark.parametrize("name", ["bfloat16", "float16", "float8_e4m3fn", "float8_e5m2", "float4_e2m1fn"])
def test_stochastic_is_unbiased_and_between_neighbours(name: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    g = torch.Generator().manual_seed(0)
    n = 200_000
    # a value 1/4 of the way from 1 to the next representable value
    v = 1 + fmt.eps / 4
    q = quantize(torch.full((n,), v), fmt, rounding="stochastic", generator=g)
    assert set(q.unique().tolist()) <= {1.0, 1 + fmt.eps}
    p_up = float((q > 1).double().mean())
    # binomial standard error sqrt(p(1-p)/n) = 0.00097 at p = 1/4; allow 5 sigma
    assert abs(p_up - 0.25) < 5 * math.sqrt(0.25 * 0.75 / n)
    # the mean of many draws approaches the exact input
    x = torch.rand(n, generator=g) * fmt.max / 4
    qs = torch.stack([quantize(x, fmt, rounding="stochastic", generator=g) for _ in range(8)]).double().mean(0)
    down = quantize(x, fmt, rounding="toward-zero")
    up = quantize(x, fmt, rounding="up")
    spacing = (up - down).double()
    rel = ((qs - x.double()) / torch.where(spacing > 0, spacing, torch.ones_like(spacing))).mean()
    assert abs(float(rel)) < 0.01


def test_stochastic_reproducible_with_seed() -> None:
    x = torch.randn(50_000)
    a = quantize(x, "bfloat16", rounding="stochastic", generator=torch.Generator().manual_seed(7))
    b = quantize(x, "bfloat16", rounding="stochastic", generator=torch.Generator().manual_seed(7))
    c = quantize(x, "bfloat16", rounding="stochastic", generator=torch.Generator().manual_seed(8))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_stochastic_exact_values_never_move() -> None:
    x = quantize(torch.randn(10_000), "bfloat16")
    assert torch.equal(quantize(x, "bfloat16", rounding="stochastic"), x)


# ------------------------------------------------------------ integer and binary formats
INT_FORMATS = [f for f in FORMATS.values() if isinstance(f, IntFormat)]
INT_INPUTS = [
    0.0,
    -0.0,
    0.5,
    1.5,
    2.5,
    -0.5,
    -1.5,
    0.49999997,
    126.5,
    127.5,
    128.0,
    -128.5,
    -129.0,
    300.0,
    -3.2,
    0.7,
    -0.7,
    float("inf"),
    float("-inf"),
    float("nan"),
    1e-30,
    15.5,
    -8.5,
    7.5,
    2.0,
    -2.0,
]


@pytest.mark.parametrize("mode", DETERMINISTIC, ids=lambda m: m.value)
@pytest.mark.parametrize("fmt", INT_FORMATS, ids=lambda f: f.name)
def test_int_matches_reference(fmt: IntFormat, mode: Rounding) -> None:
    got = quantize(torch.tensor(INT_INPUTS), fmt, rounding=mode.value).tolist()
    expected = [quantize_int(v, fmt, mode) for v in INT_INPUTS]
    assert got == expected
    assert all(math.copysign(1, g) == 1 for g in got if g == 0)  # integers have no -0


def test_int8_rounds_half_even_and_saturates() -> None:
    q = quantize(torch.tensor([0.5, 1.5, 2.5, -2.5, 200.0, -200.0]), "int8")
    assert q.tolist() == [0.0, 2.0, 2.0, -2.0, 127.0, -128.0]


def test_binary() -> None:
    x = torch.tensor([-3.0, -0.0, 0.0, 0.2, float("nan"), -1e-30])
    assert quantize(x, "binary").tolist() == [quantize_binary(v) for v in x.tolist()] == [-1, 1, 1, 1, 1, -1]
    g = torch.Generator().manual_seed(0)
    q = quantize(torch.full((100_000,), 0.5), "binary", rounding="stochastic", generator=g)
    assert abs(float((q > 0).double().mean()) - 0.75) < 0.01  # P(+1) = (0.5 + 1) / 2
    with pytest.raises(ValueError, match="binary supports rounding nearest-even, nearest-away, stochastic"):
        quantize(x, "binary", rounding="up")


# ------------------------------------------------------------ API behaviour and errors
def test_shape_dtype_and_out() -> None:
    x = torch.randn(3, 5, 7).to(torch.bfloat16)
    q = quantize(x, "float8_e4m3fn")
    assert q.shape == x.shape and q.dtype == torch.float32
    out = torch.empty(3, 5, 7)
    res = quantize(x, "float8_e4m3fn", out=out)
    assert res is out and torch.equal(out, q)
    y = torch.randn(4, 6)
    quantize(y.t(), "bfloat16", out=y.t())  # non-contiguous out, in place on x itself
    assert torch.equal(y, y.to(torch.bfloat16).float())


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64, torch.bool, torch.complex64, torch.uint8])
def test_non_float_input_is_a_type_error(dtype: torch.dtype) -> None:
    with pytest.raises(TypeError, match="quantize accepts float32, float16, bfloat16, float64"):
        quantize(torch.zeros(3, dtype=dtype), "bfloat16")


def test_bad_arguments_name_valid_choices() -> None:
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="unknown rounding 'nearest'; known: nearest-even, nearest-away"):
        quantize(x, "bfloat16", rounding="nearest")
    with pytest.raises(ValueError, match="unknown overflow 'clip'; known: saturate, nonsat"):
        quantize(x, "bfloat16", overflow="clip")
    with pytest.raises(ValueError, match="unknown profile 'jax'; known: torch, ml_dtypes"):
        quantize(x, "bfloat16", profile="jax")
    with pytest.raises(ValueError, match="unknown subnormals 'ftz'; known: keep, flush"):
        quantize(x, "bfloat16", subnormals="ftz")
    with pytest.raises(ValueError, match="out has shape"):
        quantize(x, "bfloat16", out=torch.zeros(4))
    with pytest.raises(TypeError, match=r"must be a torch\.Tensor"):
        quantize([1.0, 2.0], "bfloat16")  # type: ignore[arg-type]


def test_empty_and_scalar() -> None:
    assert quantize(torch.zeros(0), "float8_e5m2").shape == (0,)
    assert quantize(torch.tensor(3.3), "float4_e2m1fn").item() == 3.0
