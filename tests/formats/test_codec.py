"""encode / decode / pack: consistency with quantize and with the external oracles."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from chipfit.formats import FORMATS, PROFILES, BlockFormat, FloatFormat, get_format, quantize
from chipfit.formats.codec import decode, encode, pack, unpack

from .oracles import ML_DTYPES, TORCH_DTYPES, bits_of, edge_bits, f32, torch_vectorised

ELEMENTWISE = [f for f in FORMATS.values() if not isinstance(f, BlockFormat) and f.bits <= 24]


def _inputs(fmt: object) -> torch.Tensor:
    if isinstance(fmt, FloatFormat):
        return f32(edge_bits(fmt, limit=200))
    g = torch.Generator().manual_seed(0)
    return torch.cat([torch.randn(500, generator=g) * 40, torch.tensor([0.0, -0.0, float("nan"), float("inf"), -1e9])])


@pytest.mark.parametrize("profile", list(PROFILES))
@pytest.mark.parametrize("fmt", ELEMENTWISE, ids=lambda f: f.name)
def test_decode_of_encode_is_quantize(fmt: object, profile: str) -> None:
    """Bit for bit, NaN payloads included: the three functions tell one story."""
    x = _inputs(fmt)
    codes = encode(x, fmt, profile=profile)  # type: ignore[arg-type]
    assert codes.dtype == (torch.uint8 if fmt.bits <= 8 else torch.int32)  # type: ignore[attr-defined]
    np.testing.assert_array_equal(
        bits_of(decode(codes, fmt, profile=profile)),  # type: ignore[arg-type]
        bits_of(quantize(x, fmt, profile=profile)),  # type: ignore[arg-type]
    )


@pytest.mark.parametrize("name", list(TORCH_DTYPES))
def test_encode_matches_torch_codes(name: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    x = f32(edge_bits(fmt, limit=400))
    dt = TORCH_DTYPES[name]
    raw = torch_vectorised(lambda t: t.to(dt).view(torch.uint8 if dt.itemsize == 1 else torch.int16), x)
    expected = raw.to(torch.int64) & (fmt.num_codes - 1)
    assert torch.equal(encode(x, name, profile="torch").to(torch.int64), expected)


@pytest.mark.parametrize("name", [n for n in ML_DTYPES if isinstance(get_format(n), FloatFormat)])
def test_encode_matches_ml_dtypes_codes(name: str) -> None:
    fmt = get_format(name)
    assert isinstance(fmt, FloatFormat)
    x = f32(edge_bits(fmt, limit=400))
    with np.errstate(all="ignore"):
        raw = x.numpy().astype(ML_DTYPES[name])
    expected = raw.view(np.uint8 if raw.itemsize == 1 else np.uint16).astype(np.int64) & (fmt.num_codes - 1)
    np.testing.assert_array_equal(encode(x, name, profile="ml_dtypes").numpy().astype(np.int64), expected)


@pytest.mark.parametrize("bits", range(1, 9))
def test_pack_unpack_roundtrip(bits: int) -> None:
    g = torch.Generator().manual_seed(bits)
    codes = torch.randint(0, 2**bits, (1001,), generator=g).to(torch.uint8)
    packed = pack(codes, bits)
    assert packed.numel() == (1001 * bits + 7) // 8  # bits per code, nothing wasted
    assert torch.equal(unpack(packed, bits, 1001), codes)


def test_fp4_packs_two_codes_per_byte_low_nibble_first() -> None:
    codes = encode(torch.tensor([1.0, -6.0, 0.5, 3.0]), "float4_e2m1fn", packed=True)
    # 1.0 = 0b0010, -6.0 = 0b1111, 0.5 = 0b0001, 3.0 = 0b0101
    assert codes.tolist() == [0xF2, 0x51]
    assert decode(codes, "float4_e2m1fn", packed=True, count=4).tolist() == [1.0, -6.0, 0.5, 3.0]


def test_decode_errors() -> None:
    with pytest.raises(ValueError, match=r"valid codes are 0\.\.255"):
        decode(torch.tensor([256]), "float8_e4m3fn")
    with pytest.raises(TypeError, match=r"integer torch\.Tensor"):
        decode(torch.tensor([1.0]), "float8_e4m3fn")
    with pytest.raises(ValueError, match="needs count"):
        decode(torch.tensor([1], dtype=torch.uint8), "float4_e2m1fn", packed=True)
    with pytest.raises(TypeError, match="block format"):
        encode(torch.zeros(32), "mxfp4")


def test_float32_codes_are_the_bits() -> None:
    x = torch.tensor([1.0, -2.5, float("inf")])
    c = encode(x, "float32")
    assert c.dtype == torch.int32 and torch.equal(c, x.view(torch.int32))
    assert torch.equal(decode(c, "float32"), x)
