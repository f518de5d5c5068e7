"""The op-level measurements behind what benchmarks/fidelity_cpu.py still misses, side by side in one run.

Run: .venv/bin/python benchmarks/cpu_probes.py
Each figure is the calibration's statistic (`chipfit.cost.calibrate._time`: the best of 5 samples, each long
enough to time), measured three times in a row; the table shows all three.
- gelu writing a fresh 32 MiB output against the same gelu into a preallocated one (`out=`): what the
  fresh-page charge for outputs of 32 MiB or more models;
- small-M GEMMs reading a 64 MiB weight from DRAM (a GEMV at M=1, M=2): bytes of B per second, next
  to a 128 MiB copy's bandwidth (read + written);
- an 8x256x256 linear on one thread and on two: the small-GEMM regime the half-performance fit
  (from 8x1024x1024 up) does not cover;
- an nn.Linear call, the same F.linear on its parameters, and on plain tensors: the module call and
  the parameter fetches.
Writes benchmarks/results/cpu_probes.md.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.cost.calibrate import _time

REPEATS = 3


def _probes() -> list[tuple[str, str, Callable[[], Any], Callable[[float], str]]]:
    f = torch.nn.functional
    x32 = torch.randn(1 << 23)  # 32 MiB of float32
    out32 = torch.empty_like(x32)
    a1, b1 = torch.randn(1, 4096), torch.randn(4096, 4096)
    a2, b2 = torch.randn(2, 2048), torch.randn(2048, 8192)
    big = torch.randn(1 << 25)
    big_out = torch.empty_like(big)
    x8, w8, bias8 = torch.randn(8, 256), torch.randn(256, 256), torch.randn(256)
    lin = torch.nn.Linear(256, 256)
    lw, lb = lin.weight, lin.bias
    x1 = torch.randn(1, 256)

    def ms(s: float) -> str:
        return f"{s * 1e3:.2f} ms"

    def us(s: float) -> str:
        return f"{s * 1e6:.2f} us"

    def gbs(nbytes: float) -> Callable[[float], str]:
        return lambda s: f"{nbytes / s / 1e9:.1f} GB/s"

    def gflops(flops: float) -> Callable[[float], str]:
        return lambda s: f"{flops / s / 1e9:.1f} GFLOP/s"

    def one_thread(fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            try:
                return fn()
            finally:
                torch.set_num_threads(threads)

        return run

    return [
        ("fresh pages", "gelu, 32 MiB fresh output", lambda: f.gelu(x32), ms),
        ("fresh pages", "gelu, 32 MiB into out=", lambda: torch._C._nn.gelu(x32, out=out32), ms),
        ("DRAM stream", "copy 128 MiB (read + written)", lambda: big_out.copy_(big), gbs(2 * big.numel() * 4)),
        ("DRAM stream", "GEMM 1x4096x4096, B read", lambda: a1 @ b1, gbs(b1.numel() * 4)),
        ("DRAM stream", "GEMM 2x8192x2048, B read", lambda: a2 @ b2, gbs(b2.numel() * 4)),
        ("small GEMM", "linear 8x256x256, 2 threads", lambda: f.linear(x8, w8, bias8), gflops(2 * 8 * 256 * 256)),
        ("small GEMM", "linear 8x256x256, 1 thread", one_thread(lambda: f.linear(x8, w8, bias8)),
         gflops(2 * 8 * 256 * 256)),
        ("module call", "nn.Linear(256, 256) at batch 1", lambda: lin(x1), us),
        ("module call", "F.linear on lin.weight, lin.bias (fetched)", lambda: f.linear(x1, lin.weight, lin.bias), us),
        ("module call", "F.linear on the same tensors held", lambda: f.linear(x1, lw, lb), us),
    ]  # fmt: skip


def main() -> None:
    torch.manual_seed(0)
    probes = _probes()
    with torch.inference_mode():
        runs = [[_time(fn) for _g, _n, fn, _fmt in probes] for _ in range(REPEATS)]
    lines = [
        "# CPU op-level probes (what fidelity_cpu still misses)",
        "",
        f"Command: `{command_line()}`",
        "",
        f"Machine: {machine()}",
        "",
        "Each figure: `chipfit.cost.calibrate._time` (best of 5 timed samples), measured "
        f"{REPEATS} times in a row (a, b, c).",
        "",
        "| group | probe | a | b | c |",
        "|---|---|---:|---:|---:|",
    ]
    for i, (group, name, _fn, fmt) in enumerate(probes):
        lines.append(f"| {group} | {name} | " + " | ".join(fmt(r[i]) for r in runs) + " |")
    lines.append("")
    print(f"wrote {write_result('cpu_probes.md', chr(10).join(lines))}")


if __name__ == "__main__":
    main()
