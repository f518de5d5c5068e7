"""Predicted vs measured kernel times on a GPU, from benchmarks/gpu_measure.py's JSON.

Run: .venv/bin/python benchmarks/gpu_compare.py [--data benchmarks/data/h200/measure.json] [--device h200-sxm]
Writes benchmarks/results/gpu_<device>.md. Predictions exclude dispatch overhead (CUDA events
time the kernel alone). Target: median |error| <= 10 % on GEMM-dominated work (GEMM, conv,
attention), aiming at 5 %.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, write_result
from chipfit.cost import estimate
from chipfit.trace import trace

PRECISION = {"float32": "fp32", "tfloat32": "tf32", "bfloat16": "bf16", "float16": "fp16", "float8_e4m3fn": "fp8"}


class _Fn(nn.Module):
    def __init__(self, fn: Any) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(*xs)  # type: ignore[no-any-return]


def _case(row: dict[str, Any]) -> tuple[nn.Module, tuple[torch.Tensor, ...], str, str]:
    """(module, inputs, precision, label) reproducing one measured kernel."""
    k = row["kind"]
    prec = PRECISION.get(row["dtype"], "bf16")
    if k == "gemm":
        m, n, kk = row["m"], row["n"], row["k"]
        return _Fn(torch.mm), (torch.randn(m, kk), torch.randn(kk, n)), prec, f"gemm {m}x{n}x{kk} {row['dtype']}"
    if k == "conv":
        x = torch.randn(row["batch"], row["cin"], row["hw"], row["hw"])
        w = torch.randn(row["cout"], row["cin"], row["k"], row["k"])
        fn = _Fn(lambda a, b, p=row["k"] // 2: nn.functional.conv2d(a, b, padding=p))
        return fn, (x, w), prec, f"conv {row['cin']}->{row['cout']} k{row['k']} {row['hw']}^2 b{row['batch']}"
    if k == "attention":
        q = torch.randn(row["batch"], row["heads"], row["seq"], row["head_dim"])
        fn = _Fn(lambda a: nn.functional.scaled_dot_product_attention(a, a, a))
        return fn, (q,), prec, f"attention b{row['batch']} h{row['heads']} s{row['seq']} d{row['head_dim']}"
    if k == "gelu":
        return _Fn(nn.functional.gelu), (torch.randn(row["n"]),), prec, f"gelu {row['n']:,}"
    raise ValueError(f"unknown measurement kind {k!r}; known: gemm, conv, attention, gelu")


def compare(data: dict[str, Any], device: str) -> list[dict[str, Any]]:
    out = []
    for row in data["rows"]:
        module, inputs, prec, label = _case(row)
        e = estimate(trace(module, inputs), device, prec)
        predicted = sum(max(r.compute_s, r.memory_s) + r.transfer_s for r in e.rows)
        measured = row["seconds"]
        out.append({"label": label, "kind": row["kind"], "measured_s": measured, "predicted_s": predicted,
                    "error": (predicted - measured) / measured})  # fmt: skip
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", default=str(Path(__file__).resolve().parent / "data" / "h200" / "measure.json"))
    ap.add_argument("--device", default="h200-sxm")
    ap.add_argument("--results-name", default=None, help="file name under benchmarks/results (default gpu_<device>.md)")
    args = ap.parse_args()
    data = json.loads(Path(args.data).read_text())
    rows = compare(data, args.device)
    gemmish = [abs(r["error"]) for r in rows if r["kind"] in ("gemm", "conv", "attention")]
    med = statistics.median(gemmish) if gemmish else float("nan")
    lines = [
        f"# Predicted vs measured on {data['meta']['device']} (chipfit device {args.device})",
        "",
        f"Command: `{command_line()}`; measurements: `{args.data}` "
        f"({data['meta']['date']}, torch {data['meta']['torch']}).",
        "",
        "| case | measured us | predicted us | error |",
        "|---|---:|---:|---:|",
        *[
            f"| {r['label']} | {r['measured_s'] * 1e6:,.1f} | {r['predicted_s'] * 1e6:,.1f} | {r['error']:+.0%} |"
            for r in rows
        ],
        "",
        f"- Median |error| on GEMM-dominated cases ({len(gemmish)}): **{med:.1%}** (target <= 10 %: "
        f"{'met' if med <= 0.10 else 'MISSED'}).",
        f"- Median |error| on all {len(rows)} cases: {statistics.median(abs(r['error']) for r in rows):.1%}.",
        "",
    ]
    path = write_result(args.results_name or f"gpu_{args.device}.md", "\n".join(lines))
    print("\n".join(lines[4:]))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
