"""`chipfit emulate MODEL --device D --precision P`: accuracy on real data under a chip's numerics."""

from __future__ import annotations

import argparse
from typing import Any

import torch
from rich.table import Table

from chipfit.cli.common import CliError, console, count_or_all, emit_json, positive
from chipfit.cli.model_args import add_device_file_arg, add_model_args, resolve_model
from chipfit.report.text import metric_unit

__all__ = ["add_parsers", "grid"]


def grid(device_names: list[str], precisions: list[str], files: list[str]) -> list[Any]:
    """The policies for devices x precisions; 'all' expands to the catalog or to the precisions a
    device runs (natively or by its compiler's cast), one per distinct format."""
    from chipfit.emulate import policy_for
    from chipfit.hardware import get_device, list_devices
    from chipfit.hardware.precision import PRECISION_ALIASES, resolve_precision

    if not device_names:
        raise CliError("give at least one --device (see `chipfit devices`), or --device all")
    if not precisions:
        raise CliError(f"give at least one --precision ({', '.join(PRECISION_ALIASES)}), or --precision all")
    names = [d.name for d in list_devices(device_files=files)] if "all" in device_names else device_names
    out: list[Any] = []
    for name in names:
        dev = get_device(name, files)
        if "all" in precisions:
            seen: set[str] = set()
            chosen = []
            for p in PRECISION_ALIASES:
                r = resolve_precision(dev, p)
                if r.how in ("native", "autocast") and r.format not in seen:
                    seen.add(r.format)
                    chosen.append(p)
        else:
            chosen = precisions
        out.extend(policy_for(dev, p) for p in chosen)
    return out


def cmd_emulate(args: argparse.Namespace) -> int:
    from chipfit.emulate import emulate, evaluate

    choice = resolve_model(args, fake=False, data=True,
                           own_model_hint="chipfit.evaluate(model, data, metric, devices, precisions)")  # fmt: skip
    spec = choice.spec
    policies = grid(args.device or [], args.precision or [], args.device_file or [])
    if args.accumulate:
        from chipfit.emulate.accumulate import get_accumulation

        acc = get_accumulation(args.accumulate)
        policies = [p if p.matrix_fallback else p.with_(accumulate=acc) for p in policies]
    model: torch.nn.Module
    if args.model == "digits-cnn" and args.retrain:
        from chipfit.models.digits import digits_cnn_pretrained

        model = digits_cnn_pretrained(retrain=True)
    else:
        model = choice.build(pretrained=True)
    data = spec.eval_data(args.batch)
    if args.limit:
        from chipfit.emulate.data import first_items

        data = first_items(data, args.limit)  # exactly --limit items
    ev = evaluate(model, data, spec.metric, policies=policies)
    report = None
    if args.report:
        inputs = data[0][0]
        with torch.no_grad(), emulate(policy=policies[0], shadow=True) as run:
            model(*inputs)
        report = run.report(sqnr=True)
    if args.json:
        out = {"model": args.model, **ev.as_dict()}
        if report is not None:
            out["report"] = report.as_dict()
        emit_json(out)
        return 0
    c = console()
    what = "top-1 accuracy on the held-out split" if spec.metric == "top1" else "cosine similarity to FP32"
    c.print(f"[bold]{args.model}[/bold]: {what}, {ev.items} items, FP32 {metric_unit(spec.metric).value_text(ev.fp32)}")
    u = metric_unit(spec.metric)
    t = Table(title=f"{spec.metric} per device x precision")
    drop = f"drop ({u.drop_unit})"  # FP32 minus the row, as in plan and the JSON
    for col in ("device", "precision", "matrix inputs", "accumulate", "out", spec.metric, drop, "fallback ops"):
        t.add_column(col, justify="right" if col in (spec.metric, drop, "fallback ops") else "left")
    for row, pol in zip(ev.rows, policies, strict=True):
        d = pol.describe()
        ins = "FP32 (" + pol.matrix_fallback + ")" if pol.matrix_fallback else str(d["a"])
        t.add_row(
            row.device, row.precision, ins, str(d["accumulate"]), pol.output, u.value_text(row.value),
            u.drop_text(-row.delta).removesuffix(" pt"), str(row.fallback_ops),
        )  # fmt: skip
    c.print(t)
    if report is not None:
        r = Table(title=f"{policies[0].name}: lowest SQNR ops vs the FP32 shadow (first batch)")
        for col in ("phase", "module", "op", "numerics", "SQNR dB"):
            r.add_column(col)
        for s in report.worst(args.top):
            r.add_row(s.phase, s.module or "-", s.op, s.numerics, f"{s.sqnr_db:.1f}" if s.sqnr_db is not None else "-")
        c.print(r)
        for f in report.fallbacks:
            c.print(f"fallback: {f.op} in {f.module or '-'} -> {f.fallback} ({f.calls} calls)")
    return 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "emulate",
        help="accuracy of a built-in model on real data under chips' numerics",
        description="Run digits-cnn (top-1 on scikit-learn's digits) or minilm (cosine to FP32 on 240 "
        "built-in sentences) with each device's arithmetic at each precision.",
    )
    add_model_args(p, batch=False, model_help="digits-cnn or minilm")
    p.add_argument("--device", action="append", help="catalog device (repeatable), or 'all'")
    p.add_argument(
        "--precision", action="append", help="fp32 tf32 bf16 fp16 fp8 e5m2 int8 int4 fp4 mxfp8 (repeatable), or 'all'"
    )
    p.add_argument("--accumulate", help="accumulation preset: fp32 (default), fp16, fp8-fast-accum, fp8-promote-128")
    p.add_argument("--batch", type=positive, default=32, help="evaluation batch size (default 32)")
    p.add_argument("--limit", type=count_or_all, default=0, help="evaluate the first N items only")
    p.add_argument("--report", action="store_true", help="per-op SQNR vs FP32 for the first device x precision")
    p.add_argument("--top", type=positive, default=10, help="ops shown by --report")
    p.add_argument("--retrain", action="store_true", help="digits-cnn: train again and rewrite the cached weights")
    add_device_file_arg(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_emulate)
