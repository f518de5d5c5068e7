"""The format registry: one line per built-in format, ml_dtypes' canonical names."""

from __future__ import annotations

from collections.abc import Iterator

from chipfit.errors import InputError
from chipfit.formats.spec import (
    BinaryFormat,
    BlockFormat,
    FloatFormat,
    Format,
    IntFormat,
    NanEncoding,
    ScaleRule,
)

__all__ = ["FORMATS", "get_format", "list_formats", "register_format", "storage_bytes"]

IEEE, FN, FNUZ, NONE = NanEncoding.IEEE, NanEncoding.FN, NanEncoding.FNUZ, NanEncoding.NONE

FORMATS: dict[str, Format] = {}


def register_format(fmt: Format, *, replace: bool = False) -> Format:
    """Add a format to the registry; every registry-parametrized test picks it up."""
    if fmt.name in FORMATS and not replace:
        raise InputError(f"format {fmt.name!r} is already registered (pass replace=True to override)")
    FORMATS[fmt.name] = fmt
    return fmt


def get_format(fmt: str | Format) -> Format:
    """Resolve a name (or pass a format through); unknown names list the known ones."""
    if isinstance(fmt, (FloatFormat, IntFormat, BinaryFormat, BlockFormat)):
        return fmt
    if not isinstance(fmt, str):
        raise TypeError(f"format must be a name or a format object, got {type(fmt).__name__}")
    try:
        return FORMATS[fmt]
    except KeyError:
        raise InputError(f"unknown format {fmt!r}; known: {', '.join(FORMATS)}") from None


def storage_bytes(fmt: str | Format, elements: float = 1) -> float:
    """Bytes `elements` values of `fmt` occupy in memory (block scales included): every byte
    count in chipfit derives from a format's `storage_bits` through this function."""
    return get_format(fmt).storage_bits * elements / 8


def list_formats(kind: str | None = None) -> Iterator[Format]:
    for f in FORMATS.values():
        if kind is None or f.kind == kind:
            yield f


_F = FloatFormat
_BUILTIN: list[Format] = [
    _F("float32", 8, 23, 127, inf=True, nan=IEEE),
    _F("tfloat32", 8, 10, 127, inf=True, nan=IEEE),
    _F("bfloat16", 8, 7, 127, inf=True, nan=IEEE),
    _F("float16", 5, 10, 15, inf=True, nan=IEEE),
    _F("float8_e4m3fn", 4, 3, 7, inf=False, nan=FN),
    _F("float8_e4m3fnuz", 4, 3, 8, inf=False, nan=FNUZ),
    _F("float8_e5m2", 5, 2, 15, inf=True, nan=IEEE),
    _F("float8_e5m2fnuz", 5, 2, 16, inf=False, nan=FNUZ),
    _F("float8_e8m0fnu", 8, 0, 127, inf=False, nan=FN, subnormals=False, signed=False),
    _F("float6_e3m2fn", 3, 2, 3, inf=False, nan=NONE),
    _F("float6_e2m3fn", 2, 3, 1, inf=False, nan=NONE),
    _F("float4_e2m1fn", 2, 1, 1, inf=False, nan=NONE),
    IntFormat("int8", 8, signed=True),
    IntFormat("uint8", 8, signed=False),
    IntFormat("int4", 4, signed=True),
    IntFormat("uint4", 4, signed=False),
    IntFormat("int2", 2, signed=True),
    IntFormat("int32", 32, signed=True),  # the accumulator of integer matrix units
    BinaryFormat("binary"),
]
for _fmt in _BUILTIN:
    register_format(_fmt)


def _float(name: str) -> FloatFormat:
    fmt = FORMATS[name]
    if not isinstance(fmt, FloatFormat):
        raise TypeError(f"{name} is not a float format")
    return fmt


def _mx(name: str, element: FloatFormat | IntFormat) -> BlockFormat:
    return BlockFormat(name, element, 32, _float("float8_e8m0fnu"), ScaleRule.FLOOR)


for _blk in [
    _mx("mxfp8_e4m3", _float("float8_e4m3fn")),
    _mx("mxfp8_e5m2", _float("float8_e5m2")),
    _mx("mxfp6_e3m2", _float("float6_e3m2fn")),
    _mx("mxfp6_e2m3", _float("float6_e2m3fn")),
    _mx("mxfp4", _float("float4_e2m1fn")),
    # OCP MX v1.0 MXINT8: 8-bit two's complement with an implicit 2^-6; the
    # symmetric range (-127..127) follows microxcaling's reference code.
    _mx("mxint8", IntFormat("mxint8_element", 8, signed=True, frac_bits=6, narrow=True)),
    BlockFormat(
        "nvfp4",
        _float("float4_e2m1fn"),
        16,
        _float("float8_e4m3fn"),
        ScaleRule.FLOOR,
        tensor_scale=True,
    ),
]:
    register_format(_blk)
