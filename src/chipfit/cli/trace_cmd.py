"""`chipfit models` and `chipfit trace MODEL`."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from chipfit.cli.common import CliError, console, emit_json, positive
from chipfit.cli.model_args import add_model_args, resolve_model

__all__ = ["add_parsers", "build_and_trace"]


def _human(n: float, unit: str = "") -> str:
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {suffix}{unit}"
    return f"{n:.3g} {unit}".strip()


def build_and_trace(args: argparse.Namespace) -> Any:
    """Resolve MODEL (built-in or user factory), build it on fake tensors and trace it;
    bad arguments and untraceable models become CliErrors."""
    from chipfit.trace import TraceError, trace

    choice = resolve_model(args)
    model = choice.build()
    inputs = choice.inputs(args.batch)
    mode = "training" if args.train else "inference"
    try:
        return trace(model, inputs, mode=mode, optimizer=args.optimizer, name=args.model)
    except TraceError as e:
        raise CliError(str(e)) from None


def cmd_trace(args: argparse.Namespace) -> int:
    tr = build_and_trace(args)
    if args.save:
        tr.save(args.save)
    if args.json:
        data = tr.summary()
        data["top_flops"] = [_rec(r) for r in tr.top(args.top, "flops")]
        data["top_bytes"] = [_rec(r) for r in tr.top(args.top, "bytes")]
        data["modules"] = tr.by_module(1)
        data["uncosted"] = sorted({r.op for r in tr.uncosted()})
        emit_json(data)
        return 0
    c = console()
    fp = tr.footprint
    c.print(
        f"[bold]{tr.model}[/bold] {tr.mode}" + (f" ({tr.optimizer})" if tr.optimizer else "")
        + f", batch {tr.batch}: {tr.param_count:,} parameters, {len(tr.records):,} ops, "
        + f"{_human(tr.flops, 'FLOP')}, {_human(tr.bytes, 'B')} moved (minimum traffic)"
    )  # fmt: skip
    if tr.mode == "training":
        c.print(
            "  FLOPs by phase: "
            + ", ".join(f"{p} {_human(tr.phase_flops(p))}" for p in ("forward", "backward", "optimizer"))
        )
    c.print(
        f"  footprint {_human(fp.total_bytes, 'B')}: params {_human(fp.params_bytes, 'B')}, "
        f"grads {_human(fp.grads_bytes, 'B')}, "
        f"optimizer {_human(fp.optimizer_bytes, 'B')}, peak activations {_human(fp.activations_peak_bytes, 'B')}, "
        f"KV cache {_human(fp.kv_cache_bytes, 'B')}, inputs {_human(fp.inputs_bytes, 'B')}"
    )
    unc = tr.uncosted()
    c.print(
        f"  uncosted ops (no FLOP formula): {len(unc)}"
        + (f" - {', '.join(sorted({r.op for r in unc}))}" if unc else "")
    )
    t = Table(title="by op class")
    for col in ("class", "ops", "FLOPs", "bytes"):
        t.add_column(col, justify="left" if col == "class" else "right")
    for k, v in tr.by_class().items():
        t.add_row(k, f"{v['ops']:,}", _human(v["flops"]), _human(v["bytes"], "B"))
    c.print(t)
    for key in ("flops", "bytes"):
        tt = Table(title=f"top {args.top} ops by {key}")
        for col in ("op", "module", "phase", "shapes in", "GEMM MxNxK/batch", key):
            tt.add_column(col, overflow="fold")
        for r in tr.top(args.top, key):
            gemm = "x".join(str(d) for d in r.gemm[:3]) + f"/{r.gemm[3]}" if r.gemm else ""
            tt.add_row(
                r.op.replace("aten.", ""), r.module or "-", r.phase, " ".join(str(list(s)) for s in r.input_shapes[:3]),
                gemm, _human(getattr(r, key)),
            )  # fmt: skip
        c.print(tt)
    return 0


def _rec(r: Any) -> dict[str, Any]:
    return {
        "op": r.op, "module": r.module, "module_type": r.module_type, "phase": r.phase, "op_class": r.op_class,
        "flops": r.flops, "bytes": r.bytes, "gemm": r.gemm, "input_shapes": r.input_shapes,
    }  # fmt: skip


def cmd_models(args: argparse.Namespace) -> int:
    from torch._subclasses.fake_tensor import FakeTensorMode

    from chipfit.models import MODELS

    rows = []
    for spec in MODELS.values():
        with FakeTensorMode(allow_non_fake_inputs=True):
            params = sum(p.numel() for p in spec.build().parameters())
        rows.append({"name": spec.name, "params": int(params), "task": spec.task, "description": spec.description,
                     "default_seq_len": spec.default_seq_len or None})  # fmt: skip
    if args.json:
        emit_json(rows)
        return 0
    t = Table(title="built-in models (weights absent; `chipfit trace NAME`)")
    for col in ("name", "parameters", "task", "description"):
        t.add_column(col, justify="right" if col == "parameters" else "left")
    for r in rows:
        t.add_row(str(r["name"]), f"{r['params']:,}", str(r["task"]), str(r["description"]))
    console().print(t)
    return 0


def add_common_model_args(p: argparse.ArgumentParser) -> None:
    from chipfit.trace.capture import OPTIMIZERS

    add_model_args(p)
    p.add_argument("--train", action="store_true", help="a training step: forward, backward, optimizer")
    p.add_argument("--optimizer", default="sgd", choices=OPTIMIZERS, help="training optimizer (default sgd)")


def add_parsers(sub: Any) -> None:
    mp = sub.add_parser("models", help="built-in model architectures with parameter counts")
    mp.add_argument("--json", action="store_true")
    mp.set_defaults(func=cmd_models)
    tp = sub.add_parser("trace", help="every op of a model's inference or training step, without running it")
    add_common_model_args(tp)
    tp.add_argument("--top", type=positive, default=10, help="how many top ops to list")
    tp.add_argument("--save", metavar="PATH", help="write the full trace (every record) as JSON")
    tp.add_argument("--json", action="store_true")
    tp.set_defaults(func=cmd_trace)
