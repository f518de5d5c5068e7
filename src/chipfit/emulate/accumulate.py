"""Accumulation precision: how a matrix unit sums the K products of a dot product.

The default (`Accumulation()`) is FP32 accumulation of the exact products, which
is what a plain FP32 matmul of the rounded inputs computes: products of two
inputs of at most 12 significand bits are exact in FP32. Every CPU reference
(torch's bf16 mm, `_scaled_mm`, ml_dtypes dot) is bit-identical to it
(shared/reference/numerics.md, section 4.9).

A narrower accumulator is modelled by chunking K. No reference tool emulates
this, so the model is written out here and a slow element-by-element
reference (`chunked_matmul_reference`) checks the fast path bit for bit:

    out = 0                                   (FP32)
    for each group of `promote_k` products (all of K when promote_k is None):
        acc = 0                               (the accumulator format)
        for each chunk of `chunk_k` products in the group:
            p   = fl32(exact sum of the chunk's products)      # one MMA instruction
            acc = Q_acc(fl32(acc + p))                         # FP32 adder, result narrowed
        out = fl32(out + acc)                 # promotion to the FP32 register

Q_acc rounds to the accumulator format with the preset's rounding (Hopper's FP8
accumulator is reported to truncate). The fast path computes each chunk's sum in
float64, which is exact whenever the chunk's products span at most 53 - log2(chunk_k)
binades (always for FP8 and FP16 inputs; for BF16 inputs of ordinary data);
outside that the chunk sum may differ from the exact one by one FP32 ulp.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import numpy as np
import torch

from chipfit.errors import InputError
from chipfit.formats import FloatFormat, NanEncoding, Rounding, get_format, quantize
from chipfit.formats._kernels import accumulate_kernel, narrow_kernel
from chipfit.formats.profiles import get_profile
from chipfit.formats.quantize import parse_rounding
from chipfit.formats.reference import f32_bits, f32_value, quantize_bits, round_fraction
from chipfit.formats.spec import Overflow

__all__ = [
    "ACCUMULATIONS",
    "ACCUMULATOR_FORMATS",
    "Accumulation",
    "chunked_matmul",
    "chunked_matmul_reference",
    "chunked_matmul_torch",
    "get_accumulation",
]

# A ~22-bit accumulator (8 exponent, 13 mantissa bits), as measured for Hopper FP8 tensor
# cores (DeepSeek-V3 report section 3.3.2: "around 14 bits" of precision retained).
FP22 = FloatFormat("float22_e8m13", 8, 13, 127, inf=True, nan=NanEncoding.IEEE)
ACCUMULATOR_FORMATS: dict[str, FloatFormat] = {FP22.name: FP22}


def accumulator_format(name: str) -> FloatFormat:
    f = ACCUMULATOR_FORMATS.get(name) or get_format(name)
    if not isinstance(f, FloatFormat):
        known = ", ".join([*ACCUMULATOR_FORMATS, "or a float format of chipfit.formats"])
        raise InputError(f"accumulator format {name!r} must be a float format; known: {known}")
    return f


@dataclass(frozen=True)
class Accumulation:
    """How the K products are summed (see the module docstring for the model).

    format: the accumulator's format (float32, float16, bfloat16, float22_e8m13, ...).
    chunk_k: products summed per step before touching the accumulator (None: all of K).
    promote_k: products after which the accumulator is added into FP32 and reset (None: never).
    rounding: how results are narrowed to the accumulator format.
    """

    format: str = "float32"
    chunk_k: int | None = None
    promote_k: int | None = None
    rounding: str = "nearest-even"
    name: str = "fp32"

    def __post_init__(self) -> None:
        accumulator_format(self.format)
        parse_rounding(self.rounding)
        if self.chunk_k is not None and self.chunk_k < 1:
            raise InputError(f"chunk_k must be >= 1 or None, got {self.chunk_k}")
        if self.promote_k is not None and (
            self.chunk_k is None or self.promote_k < self.chunk_k or self.promote_k % self.chunk_k
        ):
            raise InputError(f"promote_k ({self.promote_k}) must be a multiple of chunk_k ({self.chunk_k})")

    @property
    def default(self) -> bool:
        """FP32 accumulation of exact products: a plain FP32 matmul computes it."""
        return self.format == "float32" and self.chunk_k is None

    def chunking(self, k: int) -> tuple[int, int, int]:
        """(products per chunk, chunks, chunks per promotion group) for a K of k."""
        chunk = self.chunk_k or k
        chunks = -(-k // chunk)
        return chunk, chunks, self.promote_k // chunk if self.promote_k else chunks

    def describe(self) -> str:
        if self.default:
            return "float32"
        parts = [self.format, f"chunk {self.chunk_k or 'K'}"]
        if self.promote_k:
            parts.append(f"promote every {self.promote_k}")
        if self.rounding != "nearest-even":
            parts.append(self.rounding)
        return ", ".join(parts)


ACCUMULATIONS: dict[str, Accumulation] = {
    a.name: a
    for a in [
        Accumulation(),
        # assumed: FP16-accumulate HMMA (m16n8k16) sums 16 products per instruction into an FP16 register
        Accumulation("float16", chunk_k=16, name="fp16"),
        # Hopper FP8 WGMMA (k = 32 per instruction) into a ~22-bit truncating accumulator, never
        # promoted: TransformerEngine/CUTLASS "fast accumulation" (numerics.md 4.9)
        Accumulation("float22_e8m13", chunk_k=32, rounding="toward-zero", name="fp8-fast-accum"),
        # the same with promotion to FP32 every 128 products (DeepSeek-V3 N_C = 128; CUTLASS 2xAcc, 4 WGMMAs)
        Accumulation("float22_e8m13", chunk_k=32, promote_k=128, rounding="toward-zero", name="fp8-promote-128"),
    ]
}


def get_accumulation(acc: str | Accumulation) -> Accumulation:
    if isinstance(acc, Accumulation):
        return acc
    try:
        return ACCUMULATIONS[acc]
    except KeyError:
        raise InputError(f"unknown accumulation {acc!r}; known: {', '.join(ACCUMULATIONS)}") from None


_ROWS = 32  # output rows computed together, so each row of b is reused from cache
_TILE_ROWS = 64  # output rows per tile of the MKL path: its (chunks, 64, N) float64 sums stay in cache
_TILED_MIN_N = 128  # narrower outputs (convolutions' im2col GEMMs, small heads) take the fused kernel
_TILED_MIN_MACS = 1 << 22


@functools.lru_cache(maxsize=32)
def _kernel(acc: Accumulation) -> Any:
    fmt = accumulator_format(acc.format)
    mode = parse_rounding(acc.rounding)
    return accumulate_kernel(fmt, get_profile(None), mode, Overflow.NONSAT)


def truncation_mask(fmt: FloatFormat, rounding: Rounding) -> int | None:
    """The int32 AND mask on float32 bits that rounds every non-NaN float32 to `fmt` as `quantize`
    does (toward zero, overflow non-saturating), or None. It exists when the format keeps FP32's
    exponent field (8 bits, bias 127, subnormals, inf) and rounds toward zero: truncating the
    mantissa then clears its low 23 - man_bits bits, for subnormals too (their quantum is
    2^(23 - man_bits) FP32 subnormal quanta), and a finite value above the format's max truncates
    to its max, as clearing the bits does. tests/emulate/test_accumulate.py checks it on every
    exponent against `quantize`."""
    same_range = fmt.exp_bits == 8 and fmt.bias == 127 and fmt.inf and fmt.subnormals and fmt.signed
    if not same_range or rounding is not Rounding.TOWARD_ZERO or fmt.nan is not NanEncoding.IEEE:
        return None
    return ~((1 << (23 - fmt.man_bits)) - 1)


@functools.lru_cache(maxsize=32)
def _narrow(acc: Accumulation) -> Any:
    fmt = accumulator_format(acc.format)
    mode = parse_rounding(acc.rounding)
    return narrow_kernel(fmt, get_profile(None), mode, Overflow.NONSAT, truncation_mask(fmt, mode))


def chunked_matmul(a: torch.Tensor, b: torch.Tensor, acc: Accumulation) -> torch.Tensor:
    """a (..., M, K) @ b (..., K, N) under `acc`, float32 out.

    Two fast paths, equal bit for bit. Wide GEMMs (N >= 128): row tile by row tile, MKL's batched
    float64 GEMM takes every chunk's exact sum at once and a numba pass (`narrow_kernel`) runs
    the narrow accumulator over them while they are in cache. Others: one fused numba GEMM
    (`accumulate_kernel`) that sums each chunk in float64 and runs the accumulator as it goes.
    `chunked_matmul_torch` (one float64 GEMM and one `quantize` per chunk) and
    `chunked_matmul_reference` (exact rationals) are their oracles."""
    if acc.default:
        return torch.matmul(a.float(), b.float())
    k = a.shape[-1]
    chunk, chunks, per_group = acc.chunking(k)
    batch = torch.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    m, n = a.shape[-2], b.shape[-1]
    a3 = a.detach().double().expand(*batch, m, k).reshape(-1, m, k)
    b3 = b.detach().double().expand(*batch, k, n).reshape(-1, k, n)
    out = torch.empty(a3.shape[0], m, n, dtype=torch.float32)
    if n >= _TILED_MIN_N and m * k * n >= _TILED_MIN_MACS and chunks > 1:
        for i in range(a3.shape[0]):
            _tiled(a3[i], b3[i], out[i], chunk, chunks, per_group, _narrow(acc))
        if not out.isnan().any():  # NaN payloads: the fused kernel's body decides them
            return out.reshape(*batch, m, n)
    fused_chunked(a3, b3, out, acc)
    return out.reshape(*batch, m, n)


def fused_chunked(a3: torch.Tensor, b3: torch.Tensor, out: torch.Tensor, acc: Accumulation) -> None:
    """out = a3 @ b3 under `acc` by the fused numba kernel alone: a3 (B, M, K) and b3 (B, K, N)
    float64, out (B, M, N) float32 (contiguous)."""
    chunk, _, per_group = acc.chunking(a3.shape[-1])
    _kernel(acc)(a3.contiguous().numpy(), b3.contiguous().numpy(), out.numpy(), chunk, per_group, _ROWS)


def _tiled(
    a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, chunk: int, chunks: int, per_group: int, narrow: Any
) -> None:
    """out = a @ b under the chunked model, for 2-D float64 a (M, K), b (K, N): MKL's bmm over the
    K chunks (zero-padded to a whole chunk: the exact sum is unchanged, and a sum of exact zeros
    is +0 either way) gives each chunk's sum, exact in float64, for a tile of rows at a time."""
    m, k = a.shape
    n = b.shape[1]
    pad = chunks * chunk - k
    if pad:
        a = torch.nn.functional.pad(a, (0, pad))
        b = torch.nn.functional.pad(b, (0, 0, 0, pad))
    a_c = a.reshape(m, chunks, chunk).permute(1, 0, 2)  # (C, M, chunk)
    b_c = b.reshape(chunks, chunk, n).contiguous()  # (C, chunk, N)
    parts = torch.empty(chunks, _TILE_ROWS, n, dtype=torch.float64)
    parts_np, out_np = parts.numpy(), out.numpy()
    for r0 in range(0, m, _TILE_ROWS):
        rows = min(_TILE_ROWS, m - r0)
        torch.bmm(a_c[:, r0 : r0 + rows], b_c, out=parts[:, :rows])
        narrow(parts_np, rows, out_np, r0, per_group)


def chunked_matmul_torch(a: torch.Tensor, b: torch.Tensor, acc: Accumulation) -> torch.Tensor:
    """The same model one chunk at a time in torch (a float64 GEMM and a `quantize` per chunk):
    the previous fast path, kept as a second oracle and for timing (benchmarks/emulate.py)."""
    if acc.default:
        return torch.matmul(a.float(), b.float())
    k = a.shape[-1]
    chunk = acc.chunk_k or k
    group = acc.promote_k or k
    fmt = accumulator_format(acc.format)
    mode = parse_rounding(acc.rounding)
    a64, b64 = a.double(), b.double()
    shape = (*torch.broadcast_shapes(a.shape[:-2], b.shape[:-2]), a.shape[-2], b.shape[-1])
    out = torch.zeros(shape, dtype=torch.float32)
    for g0 in range(0, k, group):
        run = torch.zeros(shape, dtype=torch.float32)
        for c0 in range(g0, min(g0 + group, k), chunk):
            c1 = min(c0 + chunk, g0 + group, k)
            part = torch.matmul(a64[..., c0:c1], b64[..., c0:c1, :]).float()
            run = quantize(run + part, fmt, rounding=mode, overflow="nonsat")
        out = out + run
    return out


def chunked_matmul_reference(a: torch.Tensor, b: torch.Tensor, acc: Accumulation) -> torch.Tensor:
    """The same model, one output element at a time with exact rational arithmetic (slow; 2-D only)."""
    fmt = accumulator_format(acc.format)
    mode = Rounding(acc.rounding)
    an = a.float().numpy()
    bn = b.float().numpy()
    m, k = an.shape
    n = bn.shape[1]
    chunk = acc.chunk_k or k
    group = acc.promote_k or k
    out = np.zeros((m, n), dtype=np.float32)
    for i in range(m):
        for j in range(n):
            total = np.float32(0)
            for g0 in range(0, k, group):
                run = np.float32(0)
                for c0 in range(g0, min(g0 + group, k), chunk):
                    c1 = min(c0 + chunk, g0 + group, k)
                    exact = sum(
                        (Fraction(float(an[i, t])) * Fraction(float(bn[t, j])) for t in range(c0, c1)), Fraction(0)
                    )
                    s = np.float32(run + np.float32(round_fraction(exact)))
                    bits = quantize_bits(f32_bits(float(s)), fmt, rounding=mode, overflow=None)
                    run = np.float32(float(f32_value(bits)))
                total = np.float32(total + run)
            out[i, j] = total
    return torch.from_numpy(out)
