"""Why chunked accumulation cannot meet the 3x target here: the arithmetic it needs, timed alone.

Run: .venv/bin/python benchmarks/gemm_floor.py
Writes benchmarks/results/gemm_floor.md.

The narrow-accumulator model needs each chunk's sum of products exact before it is rounded
to FP32 (emulate/accumulate.py). FP32 sums round, so the exact sums take float64, whose
GEMM runs at half the FP32 rate on AVX2 (4 lanes instead of 8). This times, on the shapes of
benchmarks/emulate.py's GEMM table and with FP8 operands: the FP32 GEMM (what the FP32 model
pays), the float64 GEMM over all of K (the least any exact-sum path pays), MKL's batched
float64 GEMM over 32-product chunks (the chunk sums alone, into a preallocated buffer; whole,
and in the 64-row tiles chipfit's MKL path takes), chipfit's `chunked_matmul` (the MKL path for
N >= 128, else the fused kernel) and the fused numba kernel alone.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, median_seconds, write_result
from chipfit.formats import quantize

SHAPES = ((640, 384, 1536), (640, 1536, 384), (2048, 160, 32))
CHUNK = 32
TILE = importlib.import_module("chipfit.emulate.accumulate")._TILE_ROWS


def main() -> None:
    am = importlib.import_module("chipfit.emulate.accumulate")
    acc = am.ACCUMULATIONS["fp8-promote-128"]
    g = torch.Generator().manual_seed(0)
    rows = []
    for m, k, n in SHAPES:
        a = quantize(torch.randn(m, k, generator=g), "float8_e4m3fn")
        b = quantize(torch.randn(k, n, generator=g), "float8_e4m3fn")
        a64, b64 = a.double(), b.double()
        ac = a64.reshape(m, k // CHUNK, CHUNK).permute(1, 0, 2).contiguous()
        bc = b64.reshape(k // CHUNK, CHUNK, n).contiguous()
        buf = torch.empty(k // CHUNK, m, n, dtype=torch.float64)
        t32 = median_seconds(lambda a=a, b=b: a @ b, repeats=21)
        t64 = median_seconds(lambda a=a64, b=b64: a @ b, repeats=21)
        tch = median_seconds(lambda a=ac, b=bc, o=buf: torch.bmm(a, b, out=o), repeats=21)
        tbuf = torch.empty(k // CHUNK, TILE, n, dtype=torch.float64)

        def tiles(a: torch.Tensor = ac, b: torch.Tensor = bc, o: torch.Tensor = tbuf, m: int = m) -> None:
            for r0 in range(0, m, TILE):
                rows_ = min(TILE, m - r0)
                torch.bmm(a[:, r0 : r0 + rows_], b, out=o[:, :rows_])

        ttl = median_seconds(tiles, repeats=21)
        tcm = median_seconds(lambda a=a, b=b: am.chunked_matmul(a, b, acc), repeats=21)
        args = (a64[None].contiguous(), b64[None].contiguous(), torch.empty(1, m, n), acc)
        tfu = median_seconds(lambda args=args: am.fused_chunked(*args), repeats=21)
        path = "MKL" if n >= am._TILED_MIN_N and m * k * n >= am._TILED_MIN_MACS else "fused"
        rows.append(
            f"| {m}x{k}x{n} | {t32 * 1e3:.2f} | {t64 * 1e3:.2f} ({t64 / t32:.2f}x) "
            f"| {tch * 1e3:.2f} ({tch / t32:.2f}x) | {ttl * 1e3:.2f} ({ttl / t32:.2f}x) "
            f"| {tcm * 1e3:.2f} ({tcm / t32:.2f}x, {path}) | {tfu * 1e3:.2f} ({tfu / t32:.2f}x) |"
        )
    lines = [
        "# The arithmetic floor of chunked accumulation",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}",
        "",
        "Median ms of 21 calls, FP8 (e4m3) operands; in brackets the ratio to the FP32 GEMM. "
        "fp8-promote-128: 32-product chunks, e8m13 truncating accumulator, promoted every 128.",
        "",
        "| M x K x N | FP32 GEMM | float64 GEMM | float64 chunk sums (bmm) | the same in 64-row tiles "
        "| chipfit chunked_matmul | fused kernel alone |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]
    path = write_result("gemm_floor.md", "\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
