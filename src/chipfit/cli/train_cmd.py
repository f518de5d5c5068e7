"""`chipfit train MODEL --device D --precision P --epochs N`: mixed-precision training on an
emulated chip, with a progress bar, the diagnostics summary and the cost of a step."""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F
from rich.table import Table

from chipfit.cli.common import CliError, console, emit_json, positive, progress_bar
from chipfit.cli.model_args import add_device_file_arg, add_model_args, resolve_model
from chipfit.hardware import get_device

__all__ = ["add_parsers"]

TRAINABLE = ("digits-cnn",)


def cmd_train(args: argparse.Namespace) -> int:
    from chipfit.amp import LOSS_SCALING, MixedPrecision
    from chipfit.amp.cost import training_cost
    from chipfit.models.digits import load_digits_data

    if args.model not in TRAINABLE:
        raise CliError(f"chipfit train runs {', '.join(TRAINABLE)} (its data is built in); got {args.model!r}")
    choice = resolve_model(args, fake=False, data=True, own_model_hint="chipfit.amp.MixedPrecision")
    device = get_device(args.device, args.device_file or ())
    if args.loss_scaling not in LOSS_SCALING:
        raise CliError(f"unknown --loss-scaling {args.loss_scaling!r}; known: {', '.join(LOSS_SCALING)}")
    if args.epochs < 1 or args.batch < 1:
        raise CliError("--epochs and --batch must be >= 1")
    d = load_digits_data()
    torch.manual_seed(args.seed)
    model = choice.build()  # from scratch: train does not start from the shipped weights
    opt = torch.optim.Adam(model.parameters(), lr=args.lr)
    g = torch.Generator().manual_seed(args.seed)
    steps = args.epochs * -(-len(d.x_train) // args.batch)
    quiet = args.json or args.no_progress
    with MixedPrecision(device, args.precision, model=model, loss_scaling=args.loss_scaling) as mp, \
            progress_bar(quiet) as bar:  # fmt: skip
        task = bar.add_task(f"{args.device} {args.precision}", total=steps)
        sizes: list[int] = []  # items per step, to weight the last epoch's mean loss
        for _ in range(args.epochs):
            perm = torch.randperm(len(d.x_train), generator=g)
            for i in range(0, len(perm), args.batch):
                idx = perm[i : i + args.batch]
                sizes.append(len(idx))
                opt.zero_grad()
                mp.backward(F.cross_entropy(model(d.x_train[idx]), d.y_train[idx]))
                mp.step(opt)
                bar.update(task, advance=1, description=f"loss {mp.history[-1].loss:.4f}")
    model.eval()
    with torch.no_grad():
        top1 = float((model(d.x_test).argmax(-1) == d.y_test).float().mean())
    cost = training_cost(model, (d.x_train[: args.batch],), device, args.precision,
                         loss_fn=lambda out: F.cross_entropy(out, d.y_train[: args.batch]))  # fmt: skip
    if args.save_json:
        mp.save_json(args.save_json)
    if args.plot:
        mp.save_plot(args.plot)
    per_epoch = -(-len(d.x_train) // args.batch)
    last = list(zip(mp.history[-per_epoch:], sizes[-per_epoch:], strict=True))
    epoch_loss = sum(r.loss * n for r, n in last) / sum(n for _, n in last)  # over the last epoch's items
    out: dict[str, Any] = {"model": args.model, "epochs": args.epochs, "top1_percent": 100 * top1, **mp.summary(),
                           "last_epoch_mean_loss": epoch_loss, "cost": cost.as_dict()}  # fmt: skip
    trains = device.training.formats if device.training is not None else ()
    if cost.format not in trains:  # emulation can run what no deployed stack does; say so (plan never offers it)
        known = ", ".join(trains) if trains else "none: no training stack in the catalog"
        out["note"] = (f"{device.name}'s stack does not train in {cost.format} (catalog training formats: {known}); "
                       "this emulates it anyway")  # fmt: skip
    if args.json:
        emit_json(out)
        return 0
    _print(out)
    if "note" in out:
        console().print(f"note: {out['note']}")
    return 0


def _print(o: dict[str, Any]) -> None:
    c = console()
    t = Table(title=f"{o['model']} trained {o['epochs']} epochs on {o['device']} at {o['precision']} ({o['policy']})")
    t.add_column("")
    t.add_column("value", justify="right")
    cost = o["cost"]
    rows = [
        ("held-out top-1", f"{o['top1_percent']:.2f} %"),
        ("mean loss, last epoch", f"{o['last_epoch_mean_loss']:.4f}"),
        ("loss scaling", o["loss_scaling"]),
        ("final scale", f"{o['final_scale']:g}"),
        ("steps (skipped)", f"{o['steps']} ({o['skipped_steps']})"),
        ("gradient underflow (fraction of backward values)", f"{o['underflow_fraction']:.3e}"),
        ("gradient overflow (fraction of backward values)", f"{o['overflow_fraction']:.3e}"),
        ("estimated time per step", f"{cost['step_s'] * 1e6:.2f} us"),
        ("estimated energy per step", f"{cost['energy_j'] * 1e3:.4f} mJ"),
        ("memory (FP32 master + grads + Adam + copy + activations)", f"{cost['total_bytes'] / 2**20:.2f} MiB"),
    ]
    for k, v in rows:
        t.add_row(k, v)
    c.print(t)


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "train",
        help="train a built-in model with a chip's mixed-precision numerics",
        description="Train digits-cnn (scikit-learn's digits) from scratch with the device's training numerics: "
        "FP32 master weights, loss scaling, per-step gradient underflow/overflow diagnostics.",
    )
    add_model_args(p, batch=False, model_help="digits-cnn")
    p.add_argument("--device", required=True, help="catalog device (see `chipfit devices`)")
    add_device_file_arg(p)
    p.add_argument("--precision", required=True, help="fp32, tf32, bf16, fp16, fp8, ...")
    p.add_argument("--epochs", type=positive, default=10)
    p.add_argument("--batch", type=positive, default=64)
    p.add_argument("--lr", type=float, default=3e-3, help="Adam learning rate (default 3e-3)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--loss-scaling", default="auto", help="auto (default), dynamic, static, none")
    p.add_argument("--save-json", help="write the per-step diagnostics as JSON here")
    p.add_argument("--plot", help="write an SVG of loss, loss scale and underflow per step here")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_train)
