"""External oracles (torch and ml_dtypes) and edge-case generators for format tests."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import torch

from chipfit.formats import FORMATS, FloatFormat, get_profile
from chipfit.formats.codec import decode_table

TORCH_DTYPES = {
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float8_e4m3fn": torch.float8_e4m3fn,
    "float8_e4m3fnuz": torch.float8_e4m3fnuz,
    "float8_e5m2": torch.float8_e5m2,
    "float8_e5m2fnuz": torch.float8_e5m2fnuz,
    "float8_e8m0fnu": torch.float8_e8m0fnu,
}
ML_DTYPES = {
    "bfloat16": ml_dtypes.bfloat16,
    "float16": np.float16,
    "float8_e4m3fn": ml_dtypes.float8_e4m3fn,
    "float8_e4m3fnuz": ml_dtypes.float8_e4m3fnuz,
    "float8_e5m2": ml_dtypes.float8_e5m2,
    "float8_e5m2fnuz": ml_dtypes.float8_e5m2fnuz,
    "float8_e8m0fnu": ml_dtypes.float8_e8m0fnu,
    "float6_e3m2fn": ml_dtypes.float6_e3m2fn,
    "float6_e2m3fn": ml_dtypes.float6_e2m3fn,
    "float4_e2m1fn": ml_dtypes.float4_e2m1fn,
    "int8": np.int8,
    "uint8": np.uint8,
    "int4": ml_dtypes.int4,
    "uint4": ml_dtypes.uint4,
    "int2": ml_dtypes.int2,
}
FLOAT_FORMATS = [f for f in FORMATS.values() if isinstance(f, FloatFormat)]
SMALL_FLOATS = [f for f in FLOAT_FORMATS if f.bits <= 8]


def bits_of(x: torch.Tensor) -> np.ndarray:
    return x.contiguous().view(torch.int32).numpy().view(np.uint32).copy()


def f32(bits: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.asarray(bits, dtype=np.uint32).view(np.float32).copy())


def torch_vectorised(fn, x: torch.Tensor) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """Apply `fn` with the input padded to a multiple of 64 elements: torch 2.13's
    float16 -> float32 cast decodes NaN to 0x7FFFFFFF in the scalar tail of its
    vectorised loop (the last n mod 8 elements). The `torch` profile follows the
    vectorised path, so the oracle always takes it."""
    n = x.numel()
    flat = x.reshape(-1)
    pad = (-n) % 64
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return fn(flat)[:n].reshape(x.shape)


def torch_roundtrip(x: torch.Tensor, name: str) -> np.ndarray:
    return bits_of(torch_vectorised(lambda t: t.to(TORCH_DTYPES[name]).float(), x))


def ml_roundtrip(x: torch.Tensor, name: str) -> np.ndarray:
    with np.errstate(all="ignore"):
        return x.numpy().astype(ML_DTYPES[name]).astype(np.float32).view(np.uint32).copy()


SPECIALS = np.array(
    [
        0x00000000,
        0x80000000,
        0x7F800000,
        0xFF800000,
        0x7FC00000,
        0xFFC00000,
        0x7F800001,
        0xFF800001,
        0x7FA00000,
        0xFFBFFFFF,
        0x7FC00001,
        0x7FFFFFFF,
        0x00000001,
        0x80000001,
        0x007FFFFF,
        0x00800000,
        0x00008000,
        0x00018000,
        0x7F7FFFFF,
        0xFF7FFFFF,
        0x3F800000,
        0xBF800000,
    ],
    dtype=np.uint32,
)


def edge_bits(fmt: FloatFormat, limit: int | None = None) -> np.ndarray:
    """float32 bit patterns around every representable value of `fmt`: the value,
    the midpoint to the next value (every tie), and one float32 ulp either side
    of both; plus specials. `limit` keeps the values nearest the subnormal range,
    1.0 and the top of the range."""
    with np.errstate(all="ignore"):
        return _edge_bits(fmt, limit)


def _edge_bits(fmt: FloatFormat, limit: int | None) -> np.ndarray:
    if fmt.bits > 24:  # float32 itself: too many codes to enumerate; a fixed structured sample
        rng = np.random.default_rng(0)
        sample = rng.integers(0, 2**32, 4096, dtype=np.uint64).astype(np.uint32)
        return np.unique(np.concatenate([sample, SPECIALS, SPECIALS + np.uint32(1)]))
    table = decode_table(fmt, get_profile("torch")).numpy().astype(np.float64)
    vals = np.unique(np.abs(table[np.isfinite(table)]))
    if limit is not None and vals.size > limit:
        k = limit // 3
        one = np.searchsorted(vals, 1.0)
        vals = np.concatenate([vals[:k], vals[max(one - k // 2, 0) : one + k // 2], vals[-k:]])
    nxt = np.append(vals[1:], vals[-1] * 2)  # above max: the overflow tie
    mids = (vals + nxt) / 2
    pts = np.concatenate([vals, mids]).astype(np.float32)
    pts = pts[np.isfinite(pts)]
    up = np.nextafter(pts, np.float32(np.inf))
    down = np.nextafter(pts, np.float32(0))
    allp = np.concatenate([pts, up, down]).view(np.uint32)
    allp = np.concatenate([allp, allp | np.uint32(0x80000000), SPECIALS])
    return np.unique(allp)
