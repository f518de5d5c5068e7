"""`chipfit plan MODEL`: which chip, precision, batch size and chip count, with reasons."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from chipfit.cli.common import (
    CliError,
    add_execution_arg,
    console,
    count_or_all,
    emit_json,
    ints_arg,
    positive,
    progress_bar,
)  # fmt: skip
from chipfit.cli.model_args import add_device_file_arg, add_model_args, resolve_model
from chipfit.cli.price_args import add_price_args, resolve_pricing
from chipfit.cli.serve_cmd import add_workload_args
from chipfit.emulate.data import first_items
from chipfit.plan.html import drop_text
from chipfit.report.text import metric_unit, seconds_text

__all__ = ["add_parsers"]


def _quant(args: argparse.Namespace) -> Any:
    """--quant: a recipe name or a QuantConfig JSON file (as `chipfit quantize --config` reads)."""
    from chipfit.quant import RECIPES, QuantConfig, get_recipe

    if not args.quant:
        return None
    if args.quant in RECIPES:
        return get_recipe(args.quant)
    try:
        with open(args.quant) as fh:
            return QuantConfig.from_json(fh.read())
    except OSError:
        raise CliError(
            f"--quant {args.quant!r} is neither a recipe ({', '.join(RECIPES)}) nor a readable file"
        ) from None
    except ValueError as e:
        raise CliError(f"--quant {args.quant}: {e}") from None


def _calibration(args: argparse.Namespace, data: list[Any]) -> Any:
    """Calibration batches for --quant: a built-in's own calibration split, else the first
    evaluation batches (which then also evaluate: stated in docs/plan.md)."""
    from chipfit.cli.quant_cmd import CALIB_SPLIT_BATCHES
    from chipfit.models import MODELS, get_model

    spec = get_model(args.model) if args.model in MODELS and not args.eval_data else None
    batches = spec.calib_data(args.eval_batch) if spec is not None and spec.calib_data is not None else None
    return [inputs for inputs, _ in (batches or data[:CALIB_SPLIT_BATCHES])]


def _model(args: argparse.Namespace) -> tuple[Any, Any, str, list[Any] | None, str]:
    """(model, inputs(batch), name, eval data or None, metric)."""
    import torch

    from chipfit.emulate.evaluate import METRICS
    from chipfit.models import MODELS

    if args.metric and args.metric not in METRICS:
        raise CliError(f"unknown --metric {args.metric!r}; known: {', '.join(METRICS)}")
    if args.eval_data:  # the model with its own data: built for real, traced on its data's shapes
        from chipfit.emulate.data import load_batches

        for flag, given in (("--input-shape", args.input_shape), ("--dtype", args.dtype),
                            ("--seq-len", args.seq_len), ("--decode", args.decode)):  # fmt: skip
            if given:
                raise CliError(f"{flag} does not go with --eval-data: the model is traced on the data's item shapes")
        choice = resolve_model(args, fake=False, shapes_from_data=True)
        try:
            data = load_batches(args.eval_data, args.eval_batch)
        except ValueError as e:
            raise CliError(str(e)) from None
        if args.eval_limit:
            data = first_items(data, args.eval_limit)
        metric = args.metric or ("top1" if data[0][1] is not None else "cosine")
        if metric == "top1" and data[0][1] is None:
            raise CliError("--metric top1 needs 'targets' in --eval-data; use cosine or agreement")
        model = choice.build(pretrained=True)
        first = data[0][0]

        def data_inputs(b: int) -> Any:
            reps = [-(-b // t.shape[0]) for t in first]
            return tuple(torch.cat([t] * r)[:b] for t, r in zip(first, reps, strict=True))

        return model, data_inputs, args.model, data, metric
    spec = MODELS.get(args.model)
    if spec is not None and spec.pretrained is not None and spec.eval_data is not None and not args.no_accuracy:
        if args.seq_len is not None or args.decode:
            raise CliError(
                f"accuracy on {args.model}'s built-in data fixes its inputs; add --no-accuracy to price "
                + ("another --seq-len" if args.seq_len is not None else "--decode")
            )
        choice = resolve_model(args, fake=False)
        data = spec.eval_data(args.eval_batch)
        if args.eval_limit:
            data = first_items(data, args.eval_limit)
        return choice.build(pretrained=True), choice.inputs, args.model, data, spec.metric
    choice = resolve_model(args)  # shapes only: a 70B model costs no memory
    return choice.build(), choice.inputs, args.model, None, ""


def cmd_plan(args: argparse.Namespace) -> int:
    from chipfit.cli.serve_cmd import SERVE_ONLY, cmd_plan_serve

    if args.serve:
        if args.sparsity:
            raise CliError("--sparsity prices a model's step (plan MODEL --sparsity 2:4); sparse serving is not "
                           "modelled: plan --serve prices dense weights")  # fmt: skip
        return cmd_plan_serve(args)
    for name in SERVE_ONLY:
        if getattr(args, name, None) not in (None, False):
            raise CliError(f"--{name.replace('_', '-')} goes with --serve (plan a language model's serving)")
    if not args.model:
        raise CliError("name a MODEL to plan (see `chipfit models`), or plan a language model's serving with --serve")
    return _cmd_plan(args)


def _cmd_plan(args: argparse.Namespace) -> int:
    from chipfit.hardware import get_device, list_devices
    from chipfit.plan import BACKENDS, DEFAULT_BATCHES, OBJECTIVES, Constraints, PlanError, plan
    from chipfit.plan.html import render_html

    if args.objective not in OBJECTIVES:
        raise CliError(f"unknown --objective {args.objective!r}; known: {', '.join(OBJECTIVES)}")
    if args.backend not in BACKENDS:
        raise CliError(f"unknown --backend {args.backend!r}; known: {', '.join(BACKENDS)}")
    if args.ray_address and args.backend != "ray":
        raise CliError("--ray-address goes with --backend ray")
    if args.workers is not None and args.workers < 1:
        raise CliError(f"--workers must be a positive integer, got {args.workers}")
    files = args.device_file or ()
    names = args.devices.split(",") if args.devices else [d.name for d in list_devices(device_files=files)]
    devices = [get_device(n.strip(), files) for n in dict.fromkeys(names)]
    precisions = args.precisions.split(",") if args.precisions else None  # None: the defaults a device runs
    batches = ints_arg(args.batch_sizes, "--batch-sizes") if args.batch_sizes else list(DEFAULT_BATCHES)
    chips = ints_arg(args.chips, "--chips") if args.chips else [1]
    pricing = resolve_pricing(args, files)
    drop = args.max_accuracy_drop
    model, inputs, name, data, metric = _model(args)
    if drop is not None and data is None:
        raise CliError(
            "--max-accuracy-drop needs accuracy: --eval-data, or a built-in model with data (digits-cnn, minilm)"
        )
    quant = _quant(args)
    if quant is not None and data is None:
        raise CliError(
            "--quant needs accuracy: --eval-data, or a built-in model with data (digits-cnn, minilm) without "
            "--no-accuracy"
        )
    drop = metric_unit(metric).internal(drop)  # given in the metric's shown unit (top-1: points)
    cons = Constraints(args.max_latency_ms, drop, args.max_usd_per_hour)
    quiet = args.json or args.csv_only
    with progress_bar(quiet) as bar:
        task = bar.add_task("sweeping", total=None)

        def progress(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        try:
            p = plan(
                model,
                inputs,
                name=name,
                objective=args.objective,
                devices=devices,
                precisions=precisions,
                batches=batches,
                chips=chips,
                training=args.train,
                optimizer=args.optimizer,
                allow_fallback=args.allow_fallback,
                constraints=cons,
                eval_data=data,
                metric=metric,
                quant=quant,
                calibrate=_calibration(args, data) if quant is not None and data else None,
                progress=progress,
                backend=args.backend,
                workers=args.workers,
                ray_address=args.ray_address,
                pricing=pricing,
                execution=args.execution,
                sparsity=args.sparsity,
                sparsity_method=args.sparsity_method,
            )
        except PlanError as e:
            raise CliError(str(e)) from None
    if args.csv:
        from chipfit.paths import write_text_atomic

        write_text_atomic(args.csv, p.to_csv())
    if args.html:
        from chipfit.paths import write_text_atomic

        write_text_atomic(args.html, render_html(p))
    if args.json:
        emit_json(p.as_dict())
        return 0
    if args.csv_only:
        return 0
    _print(p, args)
    return 0


def _print(p: Any, args: argparse.Namespace) -> None:
    c = console()
    best = p.best
    c.print(
        f"[bold]Recommendation[/bold] for {p.model} ({'training' if p.training else 'inference'}, "
        f"objective {p.objective}): [bold green]{best.label()}[/bold green]"
    )
    for r in p.reasons:
        c.print(f"  - {r}")
    t = Table(title=f"Pareto front: {len(p.front)} of {len(p.rows)} configurations (first {args.top})")
    cols = ["configuration", "time/step", "items/s", "$/M items", "mJ/item", "GiB/chip"]
    if p.fp32_metric is not None:
        cols.append(f"{p.metric} drop ({metric_unit(p.metric).drop_unit})")
    for col in cols:
        t.add_column(col, justify="left" if col == "configuration" else "right")
    for r in p.front[: args.top]:
        cells = [
            r.label(),
            seconds_text(r.step_s),
            f"{r.throughput:.4g}",
            "-" if r.usd_per_million is None else f"{r.usd_per_million:.3g}",
            f"{r.energy_per_item_j * 1e3:.3g}",
            f"{r.memory_per_chip_bytes / 2**30:.3g}",
        ]
        if p.fp32_metric is not None:
            cells.append(drop_text(r.accuracy_drop, p.metric))
        t.add_row(*cells)
    c.print(t)
    unfit = sum(not r.fits for r in p.rows)
    if unfit:
        c.print(f"{unfit} configurations do not fit in memory (marked fits=false in --json/--csv).")
    if args.html:
        c.print(f"HTML report: {args.html}")


def add_parsers(sub: Any) -> None:
    from chipfit.trace.capture import OPTIMIZERS

    p = sub.add_parser(
        "plan",
        help="which chip, precision, batch size and chip count for a model",
        description="Sweep devices x precisions x batch sizes x chip counts with the cost model (accuracy by "
        "emulation where the model has data), and recommend one configuration with its reasons.",
    )
    add_model_args(p, batch=False, optional=True)
    add_device_file_arg(p)
    add_price_args(p)
    p.add_argument("--objective", default="cost", help="latency, throughput, cost (default) or energy")
    p.add_argument("--max-latency-ms", type=float, help="longest acceptable step")
    p.add_argument("--max-accuracy-drop", type=float, help="top-1 points (or cosine units) you accept to lose")
    p.add_argument("--max-usd-per-hour", type=float, help="the most you pay per hour for all chips")
    p.add_argument("--devices", help="comma-separated catalog devices (default: all)")
    p.add_argument(
        "--precisions", help="comma-separated (default fp32,bf16,fp16,fp8,int8,w8a16,w4a16: those a chosen device runs)"
    )
    p.add_argument("--batch-sizes", help="comma-separated (default 1,8,32,128)")
    p.add_argument("--chips", help="comma-separated chip counts (default 1), e.g. 1,2,4,8")
    p.add_argument("--train", action="store_true", help="plan a training step (forward, backward, optimizer)")
    p.add_argument(
        "--allow-fallback",
        action="store_true",
        help="also sweep formats a device runs only on its vector unit or host CPU (labelled as such)",
    )
    p.add_argument("--optimizer", choices=OPTIMIZERS, default="adam", help="--train: the optimizer (default adam)")
    p.add_argument(
        "--eval-data",
        help="your model's evaluation data, .pt or .npz with 'inputs' (and 'targets'): accuracy by emulation "
        "per device x precision (see docs/plan.md); a built-in model's own data otherwise",
    )
    p.add_argument("--metric", help="with --eval-data: top1 (needs targets), agreement or cosine (default: "
                   "top1 with targets, else cosine)")  # fmt: skip
    p.add_argument("--eval-batch", type=positive, default=64, help="batch size of the accuracy measurement")
    p.add_argument("--eval-limit", type=count_or_all, default=0, help="measure accuracy on the first N items only")
    p.add_argument("--no-accuracy", action="store_true", help="skip the accuracy measurement")
    p.add_argument(
        "--quant",
        help="a quantization recipe (see `chipfit quantize --help`) or QuantConfig JSON file: where a device runs "
        "its formats, the accuracy is the quantized model's instead of emulation's generic scaling",
    )
    p.add_argument("--top", type=positive, default=15, help="Pareto rows shown")
    p.add_argument(
        "--backend",
        default="local",
        help="where the sweep runs: local (a process pool, default), ray (a Ray cluster) or serial",
    )
    p.add_argument("--workers", type=positive, help="local: worker processes (default one per core); ray: CPUs")
    p.add_argument("--ray-address", help="ray: the cluster to join (default: start a local instance; 'auto')")
    add_execution_arg(p)
    p.add_argument(
        "--sparsity", metavar="N:M",
        help="also sweep the model pruned to N:M (2:4) on the devices with sparse math for it (docs/sparsity.md)",
    )  # fmt: skip
    p.add_argument("--sparsity-method", default="magnitude", help="with --sparsity: magnitude (default) or wanda")
    p.add_argument("--html", help="write a self-contained HTML report here")
    p.add_argument("--csv", help="write every configuration as CSV here")
    p.add_argument("--csv-only", action="store_true", help="print nothing (with --csv or --html)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--serve", action="store_true", help="plan a language model's serving (MODEL: a built-in "
                   "language model, or --config FILE): devices x chip counts x splits x precisions, the cheapest "
                   "that meets --ttft-ms/--tpot-ms")  # fmt: skip
    add_workload_args(p)
    p.set_defaults(func=cmd_plan)
