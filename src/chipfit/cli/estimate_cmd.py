"""`chipfit estimate MODEL --device D [--device D2 ...] --precision P --batch N [--train]`."""

from __future__ import annotations

import argparse
from typing import Any

from rich.table import Table

from chipfit.cli.common import add_execution_arg, console, emit_json, positive
from chipfit.cli.model_args import add_device_file_arg
from chipfit.cli.price_args import add_price_args, resolve_pricing
from chipfit.cli.trace_cmd import _human, add_common_model_args, build_and_trace

__all__ = ["add_parsers"]


def _money(v: float | None) -> str:
    return "-" if v is None else (f"{v:,.2f}" if v >= 0.01 else f"{v:.2e}")


def cmd_estimate(args: argparse.Namespace) -> int:
    from chipfit.cost import estimate
    from chipfit.hardware import get_device, list_devices
    from chipfit.hardware.precision import resolve_precision

    files = args.device_file or ()
    names = args.device or ["h100-sxm"]
    if "all" in names:
        names = [d.name for d in list_devices(device_files=files)]
    devices = [get_device(d, files) for d in dict.fromkeys(names)]  # fail fast, listing the known devices
    precisions = list(dict.fromkeys(args.precision or ["bf16"]))  # a repeated --precision adds
    for dev in devices:
        for p in precisions:
            resolve_precision(dev, p)  # fail fast, naming the precisions
    pricing = resolve_pricing(args, files)
    prices = pricing.summary(devices)
    tr = build_and_trace(args)
    ests = [estimate(tr, dev, p, pricing=pricing, execution=args.execution) for dev in devices for p in precisions]
    if args.json:
        out = []
        for e in ests:
            row = e.totals()
            row["by_class"] = e.by("op_class")
            row["by_module"] = e.by("module")
            row["top_ops"] = [vars(r) for r in sorted(e.rows, key=lambda r: -r.time_s)[: args.top]]
            row["fallback"] = [vars(r) for r in e.fallbacks()]
            row["price_bases"] = list(pricing.bases)  # "price" is null when the device has none on them
            out.append(row)
        emit_json(out[0] if len(out) == 1 else out)
        return 0
    c = console()
    c.print(
        f"[bold]{tr.model}[/bold] {tr.mode}, batch {tr.batch}, precision {', '.join(precisions)}: "
        f"{_human(tr.flops, 'FLOP')} per step"
    )
    t = Table(title="estimate per device")
    cols = (
        "device",
        "format",
        "execution",
        "latency ms",
        "items/s",
        "MU util",
        "J/item",
        "$/M items",
        "compute-bound",
        "memory-bound",
        "fallback ops",
        "footprint GB",
        "fits",
    )
    for col in cols:
        t.add_column(col, justify="left" if col in ("device", "format", "execution") else "right", no_wrap=True)
    for e in ests:
        p = e.precision
        fmt = f"{p.weight_format} weights, {p.format}" if p.weight_format else p.format
        fmt += "" if p.how in ("native", "weight-only") else f" ({p.how})"
        t.add_row(
            e.device,
            fmt,
            e.execution,
            f"{e.latency_s * 1e3:,.3f}",
            f"{e.throughput:,.1f}",
            f"{e.matrix_utilization:.1%}",
            f"{e.energy_per_item_j:.3g}" + ("*" if e.energy_assumed else ""),
            _money(e.usd_per_million),
            f"{e.share('compute'):.0%}",
            f"{e.share('memory'):.0%}",
            str(len(e.fallbacks())),
            f"{e.footprint_bytes / 1e9:,.2f}",
            "yes" if e.fits else "NO",
        )
    c.print(t)
    if any(d.energy_calibration.assumed for d in devices):
        c.print("* energy rests on an assumed power figure (no published TDP or full-load power for the device)")
    for line in prices.lines(ranked_on_cost=False):
        c.print(line)
    for e in ests:
        if e.share("power"):
            c.print(
                f"{e.device}: its TDP caps the clock ({e.share('power'):.0%} of the step): the energy per op comes "
                "from a measured power-capped GEMM (`chipfit devices show` names it)"
            )
    if len(ests) == 1:
        e = ests[0]
        what = "ops" if e.execution == "eager" else "kernels"
        tt = Table(title=f"top {args.top} of {len(e.rows)} {what} ({e.execution}) by time on {e.device}")
        for col in ("op", "module", "unit", "bound", "time us", "util", "energy mJ"):
            tt.add_column(col, overflow="fold")
        for r in sorted(e.rows, key=lambda r: -r.time_s)[: args.top]:
            tt.add_row(
                r.op.replace("aten.", ""),
                r.module or "-",
                r.unit + (" (fallback)" if r.fallback else ""),
                r.bound,
                f"{r.time_s * 1e6:,.1f}",
                f"{r.utilization:.0%}",
                f"{r.energy_j * 1e3:.3g}",
            )
        c.print(tt)
        fb = e.fallbacks()
        if fb:
            c.print(
                f"{len(fb)} ops fall back ({sum(r.time_s for r in fb) * 1e3:.3f} ms): "
                + ", ".join(sorted({r.op.replace("aten.", "") for r in fb}))
            )
    return 0


def add_parsers(sub: Any) -> None:
    ep = sub.add_parser("estimate", help="time, energy and money of a model step on one or more devices")
    add_common_model_args(ep)
    ep.add_argument(
        "--device", action="append", metavar="NAME",
        help="catalog device (repeat to compare; 'all' for the whole catalog; default h100-sxm)",
    )  # fmt: skip
    add_device_file_arg(ep)
    add_price_args(ep)
    ep.add_argument(
        "--precision", action="append",
        help="fp32, tf32, bf16, fp16, fp8, int8, int4, fp4 or a format name (repeat to compare; default bf16)",
    )  # fmt: skip
    add_execution_arg(ep)
    ep.add_argument("--top", type=positive, default=10)
    ep.add_argument("--json", action="store_true")
    ep.set_defaults(func=cmd_estimate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    from chipfit.cost.calibrate import calibrate_checked, write_device_file

    c = console()
    say = None if args.json else (lambda s: c.print(f"  {s}"))
    m, text = calibrate_checked(quick=args.quick, name=args.name, progress=say)  # validated before writing
    path = write_device_file(text, args.output)
    if args.json:
        emit_json({**m, "device_file": str(path)})
    else:
        c.print(f"wrote {path}: use it with --device {args.name} --device-file {path}")
    return 0


def add_calibrate_parser(sub: Any) -> None:
    cp = sub.add_parser("calibrate", help="measure this machine's CPU and write a device file for it")
    cp.add_argument("--output", default="chipfit-this-cpu.toml", help="device file to write (atomically)")
    cp.add_argument("--name", default="this-cpu", help="device name in the file")
    cp.add_argument("--quick", action="store_true", help="fewer shapes, shorter timings")
    cp.add_argument("--json", action="store_true")
    cp.set_defaults(func=cmd_calibrate)
