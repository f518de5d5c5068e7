"""How often chipfit's default BF16 emulation differs from torch's own bf16 CPU linear on random data,
and how long digits-cnn takes to train.

Both sum the exact products in FP32, in different orders; near a bf16 rounding midpoint the order
decides the last bit. Run: .venv/bin/python benchmarks/bf16_order.py. Writes benchmarks/results/bf16_order.md.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import command_line, machine, write_result
from chipfit.emulate import emulate
from chipfit.formats import quantize
from chipfit.models.digits import train_digits_cnn

SHAPES = [(64, 256, 48), (32, 100, 10), (7, 1024, 3)]
TRIALS = 200


def main() -> None:
    torch.manual_seed(1)
    differ = total = beyond = 0
    for _ in range(TRIALS):
        for m, k, n in SHAPES:
            x, lin = torch.randn(m, k), nn.Linear(k, n)
            with torch.no_grad(), emulate(device="a100-sxm", precision="bf16"):
                ours = lin(x)
            with torch.no_grad():
                theirs = F.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()).float()
            d = ours != theirs
            differ += int(d.sum())
            total += d.numel()
            ulp = quantize(ours.abs(), "bfloat16", rounding="up") - quantize(ours.abs(), "bfloat16", rounding="down")
            beyond += int(((ours - theirs).abs() > torch.maximum(ulp, ours.abs() * 2**-7))[d].sum())
    t0 = time.perf_counter()
    train_digits_cnn()
    train_s = time.perf_counter() - t0
    text = "\n".join([
        "# BF16 emulation vs torch's bf16 CPU linear; digits-cnn training time", "",
        f"Command: `{command_line()}`", "", f"Machine: {machine()}", "",
        f"- {TRIALS} random linears of each shape {SHAPES}: {differ} of {total} outputs differ "
        f"({differ / total:.2e}); {beyond} differ by more than one bf16 ulp.",
        f"- digits-cnn training (40 epochs, one thread): {train_s:.1f} s.", "",
    ])  # fmt: skip
    print(write_result("bf16_order.md", text).read_text())


if __name__ == "__main__":
    main()
