"""Mixed-precision training on emulated chips: digits-cnn under six training numerics, and the
Linear(10 -> 1) regressor on every catalog device.

Run: .venv/bin/python benchmarks/amp.py [--epochs 20] [--quick]
Writes benchmarks/results/amp.md and benchmarks/results/amp_loss.svg.

digits-cnn: trained from the same seed (init and batch order) with the same schedule (Adam, lr
3e-3, batch 64) under FP32, BF16, FP16 with dynamic loss scaling (GradScaler defaults), FP16
without loss scaling, TF32 (a100-sxm) and FP8 with delayed scaling (h100-sxm). Targets: BF16 and
FP16-with-scaling end within 1 point of FP32; FP16 without scaling shows gradient underflow.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
from _common import RESULTS, command_line, machine, write_result
from chipfit.amp import MixedPrecision
from chipfit.amp.cost import training_cost
from chipfit.models.digits import load_digits_data
from chipfit.models.vision import DigitsCNN
from chipfit.paths import write_text_atomic
from chipfit.report.plot import line_panels

CASES = [
    ("fp32", "a100-sxm", "fp32", "auto"),
    ("bf16", "a100-sxm", "bf16", "auto"),
    ("fp16 + dynamic loss scaling", "a100-sxm", "fp16", "dynamic"),
    ("fp16, no loss scaling", "a100-sxm", "fp16", "none"),
    ("tf32", "a100-sxm", "tf32", "auto"),
    ("fp8 delayed scaling", "h100-sxm", "fp8", "auto"),
]


def digits(epochs: int) -> tuple[list[str], dict[str, list[float]]]:
    d = load_digits_data()
    rows, curves, results = [], {}, {}
    layer_rows: list[str] = []
    for label, dev, prec, scaling in CASES:
        torch.manual_seed(0)
        model = DigitsCNN()
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        g = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        with MixedPrecision(dev, prec, model=model, loss_scaling=scaling) as mp:
            for _ in range(epochs):
                perm = torch.randperm(len(d.x_train), generator=g)
                for i in range(0, len(perm), 64):
                    idx = perm[i : i + 64]
                    opt.zero_grad()
                    mp.backward(F.cross_entropy(model(d.x_train[idx]), d.y_train[idx]))
                    mp.step(opt)
        seconds = time.perf_counter() - t
        model.eval()
        with torch.no_grad():
            top1 = float((model(d.x_test).argmax(-1) == d.y_test).float().mean())
        s = mp.summary()
        results[label] = top1
        curves[label] = [r.loss for r in mp.history]
        cost = training_cost(model, (d.x_train[:64],), dev, prec,
                             loss_fn=lambda out: F.cross_entropy(out, d.y_train[:64]))  # fmt: skip
        rows.append(
            f"| {label} | {dev} | {mp.policy.name} | {100 * top1:.2f} % | {s['final_loss']:.4f} | {s['loss_scaling']} "
            f"| {s['final_scale']:g} | {s['skipped_steps']} | {s['underflow_fraction']:.3e} "
            f"| {s['overflow_fraction']:.3e} "
            f"| {cost.step_s * 1e6:.1f} | {cost.energy_j * 1e3:.3f} | {cost.total_bytes / 2**20:.2f} | {seconds:.0f} |"
        )
        if prec == "fp16":
            per: dict[str, list[float]] = {}
            for r in mp.history:
                for name, v in r.layers.items():
                    per.setdefault(name, []).append(v["underflow_fraction"])
            for name, v in per.items():
                layer_rows.append(f"| {label} | {name} | {sum(v) / len(v):.3e} | {max(v):.3e} |")
    fp32 = results["fp32"]
    verdict = [
        f"- {k}: {100 * (results[k] - fp32):+.2f} points vs FP32 "
        + ("(within 1 point)" if abs(results[k] - fp32) <= 0.01 else "(NOT within 1 point)")
        for k in ("bf16", "fp16 + dynamic loss scaling")
    ]
    lines = [
        f"## digits-cnn: {epochs} epochs, Adam lr 3e-3, batch 64, seed 0 (same init and batch order)",
        "",
        "Underflow/overflow: fraction of all values that storing backward results in the compute format "
        "flushed to zero / made infinite, over the whole run. Time, energy and memory per step: cost model, "
        "batch 64, Adam (FP32 master + grads + moments + working copy + activations).",
        "",
        "| run | device | policy | held-out top-1 | final loss | loss scaling | final scale | skipped steps "
        "| grad underflow | grad overflow | est. us/step | est. mJ/step | MiB | wall s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
        *verdict,
        "",
        "Per layer, FP16 runs: the fraction of the gradient values reaching each layer's parameters that "
        "storage rounding flushed to zero (mean over steps, and the worst step).",
        "",
        "| run | layer | mean underflow | worst step |",
        "|---|---|---|---|",
        *layer_rows,
        "",
        "The loss curves: `benchmarks/results/amp_loss.svg`.",
        "",
    ]
    return lines, curves


def regressor(epochs: int) -> list[str]:
    import regressor_every_device as ex

    from chipfit.hardware import list_devices

    x, y = ex.data()
    rows = []
    for dev in list_devices():
        precision = ex.training_precision(dev.name)
        torch.manual_seed(0)
        model = torch.nn.Linear(10, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        with MixedPrecision(dev.name, precision, model=model) as mp:
            final = ex.train(model, opt, x, y, mp, epochs)
        cost = training_cost(model, (x[:64],), dev.name, precision, optimizer="sgd", loss_fn=ex._mse(y[:64]))
        rows.append(f"| {dev.name} | {precision} | {cost.format} | {final:.3e} | {cost.step_s * 1e6:.2f} "
                    f"| {cost.energy_j * 1e6:.2f} | {mp.skipped_steps} |")  # fmt: skip
    return [
        f"## Linear(10 -> 1) regressor, MSE, SGD lr 0.01, {epochs} epochs (examples/regressor_every_device.py)",
        "",
        "One unchanged loop; each device at the first of bf16, fp16, tf32, fp32 it runs natively or by its "
        "compiler's cast. Time and energy per training step: cost model, batch 64.",
        "",
        "| device | precision | format | final MSE | est. us/step | est. uJ/step | skipped steps |",
        "|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--quick", action="store_true", help="1 digits epoch, 5 regressor epochs (for the tests)")
    ap.add_argument("--results-name", default="amp.md")
    args = ap.parse_args()
    epochs = 1 if args.quick else args.epochs
    lines = ["# Mixed-precision training on emulated chips", "", f"Command: `{command_line()}`", "",
             f"Machine: {machine()}", ""]  # fmt: skip
    dl, curves = digits(epochs)
    lines += dl
    lines += regressor(5 if args.quick else 100)
    svg = line_panels(f"digits-cnn training loss per step ({epochs} epochs)", [("loss", curves, True)])
    svg_path = Path(args.results_name).with_name("amp_loss.svg") if Path(args.results_name).is_absolute() \
        else RESULTS / "amp_loss.svg"  # fmt: skip
    write_text_atomic(svg_path, svg)
    path = write_result(args.results_name, "\n".join(lines))
    print(path.read_text())


if __name__ == "__main__":
    main()
