"""The slow reference against the external oracles (ml_dtypes, torch)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chipfit.formats import FloatFormat, Rounding, get_format
from chipfit.formats.codec import decode_table
from chipfit.formats.profiles import get_profile
from chipfit.formats.reference import decode_code, quantize_bits

from .oracles import ML_DTYPES, TORCH_DTYPES, bits_of, edge_bits, f32, ml_roundtrip, torch_roundtrip, torch_vectorised

DECODE_CASES = [(n, "ml_dtypes") for n in ML_DTYPES] + [(n, "torch") for n in TORCH_DTYPES]


def _oracle_decode(name: str, profile: str, codes: np.ndarray) -> np.ndarray:
    if profile == "torch":
        t = torch.from_numpy(codes.astype(np.int64))
        dt = TORCH_DTYPES[name]
        raw = t.to(torch.uint8) if dt.itemsize == 1 else t.to(torch.int32).to(torch.int16)
        return bits_of(torch_vectorised(lambda r: r.view(dt).float(), raw))
    dt = ML_DTYPES[name]
    width = np.dtype(dt).itemsize
    raw = codes.astype(np.uint8 if width == 1 else np.uint16)
    with np.errstate(all="ignore"):
        if get_format(name).kind == "int":
            fmt = get_format(name)
            signed = codes - fmt.num_codes * ((codes >> (fmt.bits - 1)) & 1) if fmt.signed else codes
            return signed.astype(np.float32).view(np.uint32)
        return raw.view(dt).astype(np.float32).view(np.uint32)


@pytest.mark.parametrize(("name", "profile"), DECODE_CASES)
def test_decode_every_code_matches_oracle(name: str, profile: str) -> None:
    fmt = get_format(name)
    codes = np.arange(fmt.num_codes, dtype=np.int64)
    expected = _oracle_decode(name, profile, codes)
    table = decode_table(fmt, get_profile(profile)).numpy().view(np.uint32)
    np.testing.assert_array_equal(table, expected)
    # the scalar reference agrees with the vectorised table on a spread of codes
    for c in codes[:: max(1, fmt.num_codes // 512)]:
        assert decode_code(int(c), fmt, profile) == table[c], f"code {c:#x}"


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_reference_encode_matches_torch_on_edges(name: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    bits = edge_bits(fmt, limit=300)
    expected = torch_roundtrip(f32(bits), name)
    got = np.array([quantize_bits(int(b), fmt, profile="torch") for b in bits], dtype=np.uint32)
    mism = np.flatnonzero(got != expected)
    assert mism.size == 0, [(hex(bits[i]), hex(got[i]), hex(expected[i])) for i in mism[:5]]


@pytest.mark.parametrize("name", [n for n in ML_DTYPES if isinstance(get_format(n), FloatFormat)])
def test_reference_encode_matches_ml_dtypes_on_edges(name: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    bits = edge_bits(fmt, limit=300)
    expected = ml_roundtrip(f32(bits), name)
    got = np.array([quantize_bits(int(b), fmt, profile="ml_dtypes") for b in bits], dtype=np.uint32)
    mism = np.flatnonzero(got != expected)
    assert mism.size == 0, [(hex(bits[i]), hex(got[i]), hex(expected[i])) for i in mism[:5]]


def test_named_edge_cases() -> None:
    """numerics.md section 4, spelled out."""
    e4 = get_format("float8_e4m3fn")
    e5 = get_format("float8_e5m2")
    bf = get_format("bfloat16")
    assert isinstance(e4, FloatFormat) and isinstance(e5, FloatFormat) and isinstance(bf, FloatFormat)

    def q(v: float, fmt: FloatFormat, profile: str = "torch", mode: Rounding = Rounding.NEAREST_EVEN) -> float:
        b = int(np.array([v], dtype=np.float32).view(np.uint32)[0])
        return float(
            np.array([quantize_bits(b, fmt, profile=profile, rounding=mode)], dtype=np.uint32).view(np.float32)[0]
        )

    ms = e4.min_subnormal  # 2^-9
    assert q(ms / 2, e4) == 0.0  # tie to even (zero)
    assert q(float(np.nextafter(np.float32(ms / 2), np.float32(1))), e4) == ms
    assert q(1.5 * ms, e4) == 2 * ms  # tie to even (2 * min_sub)
    assert q(1 + e4.eps / 2, e4) == 1.0
    assert q(1 + 1.5 * e4.eps, e4) == 1 + 2 * e4.eps
    assert q(464.0, e4) == 448.0  # max + half ulp: the other neighbour is NaN, so 448
    assert q(464.0, e4, "ml_dtypes") == 448.0
    assert np.isnan(q(465.0, e4, "ml_dtypes")) and q(465.0, e4, "torch") == 448.0
    assert q(61440.0, e5) == float("inf")  # e5m2 max + half ulp ties to inf
    assert q(-1e6, e4, "torch") == -448.0
    assert q(1e6, e4, "ocp-nonsat", Rounding.TOWARD_ZERO) == 448.0  # toward zero never overflows to NaN
    assert np.signbit(q(-0.0, bf)) and q(-0.0, bf) == 0
    assert not np.signbit(q(-0.0, get_format("float8_e4m3fnuz")))  # type: ignore[arg-type]
    assert q(float(np.array([0x00018000], dtype=np.uint32).view(np.float32)[0]), bf) == float(
        np.array([0x00020000], dtype=np.uint32).view(np.float32)[0]
    )  # float32 subnormal input into bf16
