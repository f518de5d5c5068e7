"""Quantization-aware training in a dozen lines: W2A4 digits-cnn, PTQ first, then QAT with LSQ.

Run: .venv/bin/python examples/qat_digits.py [--epochs 3]
"""

from __future__ import annotations

import argparse
import copy

import torch
import torch.nn.functional as F

from chipfit.models.digits import digits_cnn_pretrained, load_digits_data
from chipfit.quant import QuantConfig, QuantSpec, prepare_qat


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)
    d = load_digits_data()
    config = QuantConfig(
        "w2a4-lsq",
        weights=QuantSpec("int2", "channel", learnable=True),
        activations=QuantSpec("int4", "tensor", calibrator="minmax", learnable=True),
    )
    model = prepare_qat(copy.deepcopy(digits_cnn_pretrained()), config, calibrate=[d.x_train[:512]])

    def top1() -> float:
        model.eval()
        with torch.no_grad():
            return float((model(d.x_test).argmax(-1) == d.y_test).float().mean())

    print(f"after PTQ: top-1 {100 * top1():.2f} %")
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)  # weights (FP32 masters) and LSQ scales
    for epoch in range(args.epochs):
        model.train()
        for i in range(0, len(d.x_train), 64):
            loss = F.cross_entropy(model(d.x_train[i : i + 64]), d.y_train[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"QAT epoch {epoch + 1}: top-1 {100 * top1():.2f} %")


if __name__ == "__main__":
    main()
