"""The smallest mixed-precision example: one unchanged PyTorch training loop, every catalog chip.

A Linear(10 -> 1) regressor, MSE loss, SGD (lr 0.01), 100 epochs of 4 batches of 64 on fixed
synthetic data (y = x . w + b + noise). Each device trains at its own training precision (the
first of bf16, fp16, tf32, fp32 its matrix unit runs natively or by its compiler's cast, else fp32
emulated on the host path) and prints the final loss, the estimated time and energy per
training step (cost model) and the skipped steps.

Run: .venv/bin/python examples/regressor_every_device.py [--epochs 100] [--json]
"""

from __future__ import annotations

import argparse
import json

import torch
from torch import nn

from chipfit.amp import MixedPrecision
from chipfit.amp.cost import training_cost
from chipfit.cost import resolve_precision
from chipfit.hardware import list_devices


def data(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(256, 10, generator=g)
    w = torch.linspace(-1, 1, 10)
    y = x @ w + 0.5 + 0.01 * torch.randn(256, generator=g)
    return x, y.unsqueeze(1)


def training_precision(device: str) -> str:
    from chipfit.hardware import get_device

    dev = get_device(device)
    for p in ("bf16", "fp16", "tf32", "fp32"):
        if resolve_precision(dev, p).how in ("native", "autocast"):
            return p
    return "fp32"


def train(model: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor, y: torch.Tensor, mp: MixedPrecision,
          epochs: int) -> float:  # fmt: skip
    """The plain PyTorch loop; `mp` is the only chipfit line in it."""
    loss_fn = nn.MSELoss()
    loss = torch.tensor(float("nan"))
    for _ in range(epochs):
        for i in range(0, len(x), 64):
            opt.zero_grad()
            loss = loss_fn(model(x[i : i + 64]), y[i : i + 64])
            mp.backward(loss)
            mp.step(opt)
    with torch.no_grad():
        return float(loss_fn(model(x), y))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    x, y = data()
    rows = []
    for dev in list_devices():
        precision = training_precision(dev.name)
        torch.manual_seed(0)
        model = nn.Linear(10, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with MixedPrecision(dev.name, precision, model=model) as mp:
            final = train(model, opt, x, y, mp, args.epochs)
        cost = training_cost(model, (x[:64],), dev.name, precision, optimizer="sgd", loss_fn=_mse(y[:64]))
        rows.append({"device": dev.name, "precision": precision, "format": cost.format, "final_loss": final,
                     "step_us": cost.step_s * 1e6, "step_energy_uj": cost.energy_j * 1e6,
                     "skipped_steps": mp.skipped_steps, "loss_scaling": mp.loss_scaling})  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'device':<16}{'precision':<10}{'format':<16}{'final MSE':>12}{'us/step':>10}{'uJ/step':>10}{'skipped':>9}")
    for r in rows:
        print(f"{r['device']:<16}{r['precision']:<10}{r['format']:<16}{r['final_loss']:>12.3e}{r['step_us']:>10.2f}"
              f"{r['step_energy_uj']:>10.2f}{r['skipped_steps']:>9}")  # fmt: skip


def _mse(target: torch.Tensor):  # type: ignore[no-untyped-def]
    return lambda out: nn.functional.mse_loss(out, target)


if __name__ == "__main__":
    main()
