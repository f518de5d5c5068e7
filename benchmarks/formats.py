"""Round-trip throughput (float32 -> format -> float32), chipfit vs ml_dtypes and torch.

Run: .venv/bin/python benchmarks/formats.py [--n 16777216] [--repeats 7]
Writes benchmarks/results/formats.md. Million elements per second, median of
`repeats` timed runs after warm-up, on N(0,1) float32 inputs. The bound is a
float32 copy into a preallocated tensor (`out.copy_(x)`): reading and writing
the same bytes a round trip must.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import ml_dtypes
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, median_seconds, write_result
from chipfit.formats import quantize

Fn = Callable[[], object]


def cases(x: torch.Tensor, out: torch.Tensor) -> list[tuple[str, dict[str, Fn | None], str]]:
    xn = x.numpy()
    g = torch.Generator().manual_seed(0)

    def ml(dt: object) -> Fn:
        return lambda: xn.astype(dt).astype(np.float32)

    def tt(dt: torch.dtype) -> Fn:
        return lambda: x.to(dt).float()

    def ours(name: str, **kw: object) -> Fn:
        return lambda: quantize(x, name, out=out, **kw)  # type: ignore[arg-type]

    def ours_alloc(name: str, **kw: object) -> Fn:
        return lambda: quantize(x, name, **kw)  # type: ignore[arg-type]

    return [
        (
            "bfloat16",
            {
                "ml": ml(ml_dtypes.bfloat16),
                "torch": tt(torch.bfloat16),
                "ours": ours("bfloat16"),
                "ours_alloc": ours_alloc("bfloat16"),
            },
            "",
        ),
        (
            "float16",
            {
                "ml": ml(np.float16),
                "torch": tt(torch.float16),
                "ours": ours("float16"),
                "ours_alloc": ours_alloc("float16"),
            },
            "",
        ),
        (
            "float8_e4m3fn",
            {
                "ml": ml(ml_dtypes.float8_e4m3fn),
                "torch": tt(torch.float8_e4m3fn),
                "ours": ours("float8_e4m3fn"),
                "ours_alloc": ours_alloc("float8_e4m3fn"),
            },
            "",
        ),
        (
            "float8_e5m2",
            {
                "ml": ml(ml_dtypes.float8_e5m2),
                "torch": tt(torch.float8_e5m2),
                "ours": ours("float8_e5m2"),
                "ours_alloc": ours_alloc("float8_e5m2"),
            },
            "",
        ),
        (
            "float4_e2m1fn",
            {
                "ml": ml(ml_dtypes.float4_e2m1fn),
                "torch": None,
                "ours": ours("float4_e2m1fn"),
                "ours_alloc": ours_alloc("float4_e2m1fn"),
            },
            "torch cannot cast to fp4",
        ),
        (
            "int8",
            {
                "ml": ml(np.int8),
                "torch": lambda: torch.fake_quantize_per_tensor_affine(x, 1.0, 0, -128, 127),
                "ours": ours("int8"),
                "ours_alloc": ours_alloc("int8"),
            },
            "numpy astype(int8) truncates and wraps; the torch column is fake_quantize_per_tensor_affine "
            "(round half even, clamp), the same semantics as chipfit",
        ),
        (
            "mxfp8_e4m3",
            {"ml": None, "torch": None, "ours": ours("mxfp8_e4m3"), "ours_alloc": ours_alloc("mxfp8_e4m3")},
            "neither reference has MX block formats",
        ),
        (
            "bfloat16 stochastic",
            {
                "ml": None,
                "torch": None,
                "ours": ours("bfloat16", rounding="stochastic", generator=g),
                "ours_alloc": ours_alloc("bfloat16", rounding="stochastic", generator=g),
            },
            "target >= 200 M/s; neither reference rounds stochastically",
        ),
    ]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=16 * 2**20)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    x = torch.randn(args.n, generator=torch.Generator().manual_seed(0))
    out = torch.empty_like(x)

    def rate(fn: Fn | None) -> float | None:
        return None if fn is None else args.n / median_seconds(fn, args.repeats) / 1e6

    copy = rate(lambda: out.copy_(x))
    assert copy is not None
    rows = []
    for name, fns, note in cases(x, out):
        r = {k: rate(f) for k, f in fns.items()}
        rows.append((name, r, note))
        print(f"{name:22s} " + "  ".join(f"{k}={v:8.1f}" if v else f"{k}=     -  " for k, v in r.items()), flush=True)

    def cell(v: float | None) -> str:
        return "-" if v is None else f"{v:,.0f}"

    lines = [
        "# Format round-trip throughput",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}",
        "",
        f"float32 -> format -> float32 on {args.n:,} N(0,1) values, million elements/s, median of {args.repeats} runs.",
        f"Bound: `out.copy_(x)` into a preallocated float32 tensor = **{copy:,.0f} M/s**.",
        "chipfit `out=` writes into a preallocated tensor (as hot loops do); `alloc` returns a new tensor.",
        "",
        "| format | ml_dtypes | torch | chipfit out= | chipfit alloc | out= / best reference "
        "| alloc / best reference | out= / copy bound | note |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    misses = []
    for name, r, note in rows:
        refs = [v for k, v in r.items() if k in ("ml", "torch") and v]
        best = max(refs) if refs else None
        ratios = []
        for key in ("ours", "ours_alloc"):
            v = r[key]
            ratios.append(f"{v / best:.2f}x" if best and v else "-")
            if best and v and v < best:
                misses.append(
                    f"{name} ({'out=' if key == 'ours' else 'alloc'}): {v:.0f} vs {best:.0f} M/s ({v / best:.2f}x)"
                )
        lines.append(
            f"| {name} | {cell(r['ml'])} | {cell(r['torch'])} | {cell(r['ours'])} | {cell(r['ours_alloc'])} "
            f"| {ratios[0]} | {ratios[1]} | {(r['ours'] or 0.0) / copy:.0%} | {note} |"
        )
    sr = next(r for n, r, _ in rows if n == "bfloat16 stochastic")["ours"] or 0.0
    lines += [
        "",
        "Targets: chipfit at least as fast as the faster reference for each format; stochastic bf16 >= 200 M/s.",
        f"- Formats below the faster reference: {'; '.join(misses) if misses else 'none'}.",
        f"- Stochastic bf16: {sr:,.0f} M/s ({'met' if sr >= 200 else 'MISSED'}).",
        "",
    ]
    path = write_result("formats.md", "\n".join(lines))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
