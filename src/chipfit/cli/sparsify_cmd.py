"""`chipfit sparsify MODEL --pattern 2:4 --method magnitude|wanda [--finetune-epochs N] [--device D
--precision P] [--json]`: prune, fine-tune with the masks kept, score and price the result."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from chipfit.cli.common import CliError, add_execution_arg, console, emit_json, positive
from chipfit.cli.model_args import add_device_file_arg, add_model_args, resolve_model
from chipfit.report.text import metric_unit

__all__ = ["add_parsers"]


def _data(args: argparse.Namespace) -> tuple[Any, ...]:
    """(model, eval data, metric, calibration inputs, task or None, what the scores are on)."""
    from chipfit.models import MODELS
    from chipfit.models.tasks import TASKS, fine_tune_task

    if args.eval_data:
        from chipfit.emulate.data import load_batches
        from chipfit.emulate.evaluate import METRICS

        if args.finetune_epochs:
            raise CliError(f"--finetune-epochs needs a training task: the built-in {', '.join(TASKS)}; for your own "
                           "model use chipfit.sparsity.finetune_(model, batches, loss_fn)")  # fmt: skip
        choice = resolve_model(args, fake=False, shapes_from_data=True)
        try:
            data = load_batches(args.eval_data, args.batch)
        except ValueError as e:
            raise CliError(str(e)) from None
        metric = args.metric or ("top1" if data[0][1] is not None else "cosine")
        if metric not in METRICS:
            raise CliError(f"unknown --metric {metric!r}; known: {', '.join(METRICS)}")
        if metric == "top1" and data[0][1] is None:
            raise CliError("--metric top1 needs 'targets' in --eval-data; use cosine or agreement")
        model = choice.build(pretrained=True).eval()
        return model, data, metric, [i for i, _ in data[:4]], None, f"--eval-data {args.eval_data}"
    if args.metric:
        raise CliError("--metric goes with --eval-data; a built-in task has its own metric")
    if args.model not in TASKS:
        known = ", ".join(TASKS)
        hint = " (it has no weights or data here)" if args.model in MODELS else ""
        raise CliError(f"chipfit sparsify scores the built-in tasks {known}{hint}, or your model on --eval-data")
    resolve_model(args, fake=False, data=True, own_model_hint="--eval-data FILE, or chipfit.sparsity.sparsify_")
    task = fine_tune_task(args.model, args.batch, args.seed)
    return task.model, task.eval_data, task.metric, task.calibrate, task, task.describe


def cmd_sparsify(args: argparse.Namespace) -> int:
    from chipfit.hardware import get_device
    from chipfit.hardware.sparsity import Pattern
    from chipfit.sparsity.prune import Method
    from chipfit.sparsity.study import study

    pattern = Pattern.parse(args.pattern)
    if args.method not in tuple(Method):
        raise CliError(f"unknown --method {args.method!r}; known: {', '.join(Method)}")
    if bool(args.device) != bool(args.precision):
        raise CliError("--device and --precision go together: the chip's numerics and the speed-up on it")
    if args.finetune_epochs < 0:
        raise CliError(f"--finetune-epochs must be >= 0, got {args.finetune_epochs}")
    if args.lr <= 0:
        raise CliError(f"--lr must be positive, got {args.lr}")
    device = get_device(args.device, args.device_file or ()).name if args.device else None
    if device is not None:
        from chipfit.hardware.precision import resolve_precision

        resolve_precision(get_device(device), args.precision)  # an unknown precision names the known ones
    model, data, metric, calib, task, scored_on = _data(args)
    dense = [n.strip() for n in args.dense.split(",") if n.strip()] if args.dense else None
    st = study(
        model, data, metric, pattern, args.method, calibrate=calib, dense=dense,
        keep_ends_dense=not args.prune_ends, min_params=args.min_params,
        train=task.train if task is not None else None, loss=task.loss if task is not None else None,
        epochs=args.finetune_epochs, lr=args.lr, device=device, precision=args.precision,
        speed_inputs=data[0][0] if device is not None else None, execution=args.execution, seed=args.seed,
    )  # fmt: skip
    exported = None
    if args.export:
        from chipfit.sparsity.export import export_pruned_onnx

        exported = export_pruned_onnx(st.final, data[0][0], args.export)
    u = metric_unit(metric)
    out: dict[str, Any] = {
        "model": args.model, "scored_on": scored_on, **st.as_dict(),
        "accuracy": [{"stage": r.stage, "numerics": r.numerics, u.key("accuracy"): u.shown(r.value),
                      u.key("drop", drop=True): u.shown(r.drop)} for r in st.rows],
        "export": exported,
    }  # fmt: skip
    if args.json:
        emit_json(out)
        return 0
    _print(st, out, metric)
    return 0


def _print(st: Any, out: dict[str, Any], metric: str) -> None:
    c = console()
    u = metric_unit(metric)
    rep = st.report
    t = Table(title=f"{out['model']} pruned {rep.pattern.describe()} by {rep.method} ({out['scored_on']})")
    for col in ("stage", "numerics", metric, "drop"):
        t.add_column(col, justify="right" if col in (metric, "drop") else "left")
    for r in st.rows:
        t.add_row(r.stage, r.numerics, u.value_text(r.value), u.drop_text(r.drop, signed=True))
    c.print(t)
    layers = Table(title=f"layers ({rep.sparsity:.1%} of the prunable weights are zero)")
    for col in ("layer", "weights", "zero share", "dense because"):
        layers.add_column(col, justify="right" if col in ("weights", "zero share") else "left")
    for x in rep.layers:
        layers.add_row(x.name, f"{x.params:,}", f"{x.sparsity:.1%}", x.why_dense or "-")
    c.print(layers)
    if st.finetune is not None:
        ft = st.finetune
        where = f"under {ft.device} {ft.precision}" if ft.device else "in FP32"
        losses = ", ".join(f"{v:.4f}" for v in ft.epoch_loss)
        c.print(f"fine-tuned {ft.epochs} epochs ({ft.steps} steps, {ft.skipped_steps} skipped) {where}; "
                f"loss per epoch: {losses}")  # fmt: skip
    if st.speed is not None:
        s = st.speed
        c.print(f"{s.device} {s.precision}, batch {s.batch} ({s.execution}): dense {s.dense_s * 1e6:.2f} us, "
                f"sparse {s.sparse_s * 1e6:.2f} us, speed-up {s.ratio:.3f}x; {s.note}")  # fmt: skip
    if out.get("export"):
        e = out["export"]
        c.print(f"wrote {e['path']} (pruned weights; max |onnxruntime - chipfit| {e['max_abs_diff_vs_chipfit']:.3g})")


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "sparsify",
        help="prune a model to N:M sparsity, fine-tune it, and measure accuracy and speed-up",
        description="Prune Linear and convolution weights to an N:M pattern along the reduction dimension (or "
        "unstructured), by magnitude or Wanda; optionally fine-tune with the masks kept, under a chip's training "
        "numerics; score dense, pruned and fine-tuned on the built-in task (digits-cnn, minilm: held-out data) or "
        "--eval-data, in FP32 and under --device/--precision; and price dense against sparse on that chip.",
    )
    add_model_args(p, batch=False, model_help="digits-cnn, minilm, or a user model with --eval-data")
    p.add_argument("--pattern", default="2:4", help="N:M (2:4, 1:4, 4:8) or unstructured:SHARE (default 2:4)")
    p.add_argument("--method", default="magnitude", help="magnitude (default) or wanda (|W| x input norm)")
    p.add_argument("--finetune-epochs", type=int, default=0, help="epochs of mask-preserving fine-tuning (default 0)")
    p.add_argument("--lr", type=float, default=1e-4, help="fine-tuning Adam learning rate (default 1e-4)")
    p.add_argument("--device", help="catalog device: its numerics for scoring and fine-tuning, and the speed-up")
    add_device_file_arg(p)
    p.add_argument("--precision", help="with --device: fp32, bf16, fp16, fp8, int8, ...")
    add_execution_arg(p)
    p.add_argument("--dense", help="comma-separated layer names to keep dense, beside the defaults")
    p.add_argument("--prune-ends", action="store_true", help="prune the first and last layer too (dense by default)")
    p.add_argument("--min-params", type=int, default=256, help="layers with fewer weights stay dense (default 256)")
    p.add_argument("--batch", type=positive, default=32, help="evaluation batch, and the batch priced (default 32)")
    p.add_argument("--eval-data", help="a .pt/.npz file of inputs (and targets) for your own MODEL")
    p.add_argument("--metric", help="with --eval-data: top1 (needs targets), agreement or cosine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--export", help="write the pruned (or fine-tuned) model as ONNX here, its zeros in the weights")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_sparsify)
