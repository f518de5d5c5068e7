"""Format identities, parametrized over the registry; limits against ml_dtypes' finfo."""

from __future__ import annotations

import math

import ml_dtypes
import numpy as np
import pytest

from chipfit.formats import (
    FORMATS,
    BlockFormat,
    FloatFormat,
    IntFormat,
    NanEncoding,
    get_format,
    register_format,
)
from chipfit.formats.registry import FORMATS as REGISTRY

from .oracles import FLOAT_FORMATS, ML_DTYPES


@pytest.mark.parametrize("fmt", FLOAT_FORMATS, ids=lambda f: f.name)
def test_float_identities(fmt: FloatFormat) -> None:
    assert fmt.eps == 2.0**-fmt.man_bits
    assert fmt.bits == int(fmt.signed) + fmt.exp_bits + fmt.man_bits
    assert fmt.num_codes == 2**fmt.bits
    assert fmt.min_normal == 2.0**fmt.min_exponent
    if fmt.subnormals and fmt.man_bits:
        assert fmt.min_subnormal == fmt.min_normal * fmt.eps
    # max = (2 - k * eps) * 2^emax with k the number of top mantissa codes spent on NaN
    top_mantissa = fmt.max_magnitude_code & ((1 << fmt.man_bits) - 1)
    assert fmt.max == (1 + top_mantissa * fmt.eps) * 2.0**fmt.max_exponent


@pytest.mark.parametrize("fmt", [f for f in FLOAT_FORMATS if f.name in ML_DTYPES], ids=lambda f: f.name)
def test_limits_match_ml_dtypes_finfo(fmt: FloatFormat) -> None:
    fi = ml_dtypes.finfo(ML_DTYPES[fmt.name])
    assert fmt.max == float(fi.max)
    assert fmt.min_normal == float(fi.smallest_normal)
    assert fmt.min_subnormal == float(fi.smallest_subnormal)
    assert fmt.eps == float(fi.eps)
    assert fmt.bits == fi.bits


def test_known_maxima() -> None:
    # spelled out once, from the OCP and IEEE specs, as a cross-check of the derivation
    assert get_format("float8_e4m3fn").max == 448  # 1.75 * 2^8
    assert get_format("float8_e4m3fnuz").max == 240  # 1.875 * 2^7
    assert get_format("float8_e5m2").max == 57344  # 1.75 * 2^15
    assert get_format("float4_e2m1fn").max == 6  # 1.5 * 2^2
    assert get_format("float6_e2m3fn").max == 7.5  # 1.875 * 2^2
    assert get_format("float6_e3m2fn").max == 28  # 1.75 * 2^4
    assert get_format("tfloat32").max == get_format("float32").max * (1 - 2**-11) / (1 - 2**-24)
    assert get_format("float8_e8m0fnu").max == 2.0**127


@pytest.mark.parametrize("fmt", [f for f in FORMATS.values() if isinstance(f, IntFormat)], ids=lambda f: f.name)
def test_int_ranges(fmt: IntFormat) -> None:
    assert fmt.max_int - fmt.min_int + 1 == fmt.num_codes - int(fmt.narrow)
    if fmt.name in ML_DTYPES:
        ii = ml_dtypes.iinfo(ML_DTYPES[fmt.name]) if fmt.bits < 8 else np.iinfo(ML_DTYPES[fmt.name])
        assert (fmt.min_int, fmt.max_int) == (int(ii.min), int(ii.max))


@pytest.mark.parametrize("fmt", [f for f in FORMATS.values() if isinstance(f, BlockFormat)], ids=lambda f: f.name)
def test_block_formats(fmt: BlockFormat) -> None:
    assert 2.0**fmt.element_emax <= fmt.element.max < 2.0 ** (fmt.element_emax + 1)
    assert fmt.bits == fmt.element.bits + fmt.scale.bits / fmt.block_size
    if fmt.name.startswith("mx"):
        assert fmt.block_size == 32 and fmt.scale.name == "float8_e8m0fnu"
    if fmt.name == "nvfp4":
        assert fmt.block_size == 16 and fmt.scale.name == "float8_e4m3fn" and fmt.tensor_scale


def test_unknown_format_lists_known() -> None:
    with pytest.raises(ValueError, match=r"unknown format 'fp9'; known: float32, tfloat32, bfloat16"):
        get_format("fp9")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"exp_bits": 0}, "exp_bits must be in 1..8"),
        ({"man_bits": 24}, "man_bits must be in 0..23"),
        ({"inf": True, "nan": NanEncoding.FN}, "infinities need the IEEE NaN encoding"),
        ({"exp_bits": 8, "bias": 100}, "does not fit in float32"),
        ({"name": "bad name"}, "must be non-empty letters"),
    ],
)
def test_invalid_float_format(kwargs: dict[str, object], message: str) -> None:
    base: dict[str, object] = {
        "name": "x",
        "exp_bits": 4,
        "man_bits": 3,
        "bias": 7,
        "inf": False,
        "nan": NanEncoding.FN,
    }
    base.update(kwargs)
    with pytest.raises(ValueError, match=message):
        FloatFormat(**base)  # type: ignore[arg-type]


def test_user_format_registers_and_is_found() -> None:
    fmt = FloatFormat("test_e3m4", 3, 4, 3, inf=False, nan=NanEncoding.NONE)
    try:
        register_format(fmt)
        assert get_format("test_e3m4") is fmt
        assert fmt.max == (1 + 15 / 16) * 2.0 ** (7 - 3)
        with pytest.raises(ValueError, match="already registered"):
            register_format(fmt)
    finally:
        REGISTRY.pop("test_e3m4", None)


def test_describe_mentions_layout() -> None:
    assert get_format("float8_e4m3fn").describe().startswith("E4M3 bias 7")
    assert math.isclose(get_format("mxfp4").bits, 4.25)
