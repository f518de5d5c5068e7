"""`chipfit formats` and `chipfit demo`."""

from __future__ import annotations

import argparse
import math
from typing import Any

from rich.table import Table

from chipfit.cli.common import CliError, console, emit_json, num

__all__ = ["add_parsers"]


# ---------------------------------------------------------------- formats
def _format_row(f: Any) -> dict[str, Any]:
    from chipfit.formats import FloatFormat, IntFormat

    row: dict[str, Any] = {"name": f.name, "kind": f.kind, "bits": f.bits, "max": f.max, "describe": f.describe()}
    if isinstance(f, FloatFormat):
        row.update(
            min_normal=f.min_normal,
            min_subnormal=f.min_subnormal,
            eps=f.eps,
            inf=f.inf,
            nan=f.nan.value,
            signed_zero=f.signed_zero,
            exp_bits=f.exp_bits,
            man_bits=f.man_bits,
            bias=f.bias,
        )
    elif isinstance(f, IntFormat):
        row.update(min=f.min, eps=f.eps, signed=f.signed)
    return row


def _specials(f: Any) -> str:
    from chipfit.formats import BlockFormat, FloatFormat

    if isinstance(f, FloatFormat):
        return f.describe().split(", ", 1)[1]
    if isinstance(f, BlockFormat):
        return f"{f.block_size} x {f.element.name.replace('float', 'fp')} / {f.scale.name.replace('float8_', '')}"
    return str(f.describe())


def _overflow_note(f: Any) -> str:
    from chipfit.formats import FloatFormat, get_profile

    if not isinstance(f, FloatFormat):
        return "saturate" if f.kind == "int" else "-"
    torch_rule, ml_rule = (get_profile(p).overflow(f).value for p in ("torch", "ml_dtypes"))
    return torch_rule if torch_rule == ml_rule else f"torch:{torch_rule}, ml_dtypes:{ml_rule}"


def cmd_formats(args: argparse.Namespace) -> int:
    from chipfit.formats import list_formats

    if args.kind and args.kind not in ("float", "int", "binary", "block"):
        raise CliError(f"unknown kind {args.kind!r}; known: float, int, binary, block")
    fmts = list(list_formats(args.kind))
    if args.json:
        emit_json([_format_row(f) for f in fmts])
        return 0
    t = Table(title="chipfit number formats (overflow where profiles differ: torch, ml_dtypes)")
    t.add_column("name", no_wrap=True)
    for col in ("bits", "max", "min normal", "min subnormal", "eps"):
        t.add_column(col, justify="right", no_wrap=True)
    t.add_column("specials", no_wrap=True)
    t.add_column("overflow", no_wrap=True)
    for f in fmts:
        r = _format_row(f)
        t.add_row(
            f.name,
            f"{r['bits']:g}",
            num(r["max"]),
            num(r["min_normal"]) if "min_normal" in r else "-",
            num(r["min_subnormal"]) if "min_subnormal" in r else "-",
            num(r["eps"]) if "eps" in r else "-",
            _specials(f),
            _overflow_note(f),
        )
    console().print(t)
    return 0


def cmd_formats_show(args: argparse.Namespace) -> int:
    import torch

    from chipfit.formats import BlockFormat, FloatFormat, get_format, get_profile
    from chipfit.formats.codec import decode_table

    try:
        f = get_format(args.name)
        prof = get_profile(args.profile)
    except ValueError as e:
        raise CliError(str(e)) from None
    row = _format_row(f)
    codes: list[dict[str, Any]] = []
    if not isinstance(f, BlockFormat) and f.bits <= 8:
        table = decode_table(f, prof)
        bits_view = table.view(torch.int32).tolist()
        for c, (v, b) in enumerate(zip(table.tolist(), bits_view, strict=True)):
            codes.append(
                {
                    "code": c,
                    "hex": f"0x{c:02X}",
                    "binary": format(c, f"0{f.bits}b"),
                    "value": v,
                    "f32_bits": f"0x{b & 0xFFFFFFFF:08X}",
                }
            )
    if args.json:
        emit_json({**row, "profile": prof.name, "codes": codes})
        return 0
    con = console()
    con.print(f"[bold]{f.name}[/bold]: {f.describe()}")
    for k, v in row.items():
        if k not in ("name", "describe"):
            con.print(f"  {k:14s} {num(v) if isinstance(v, float) else v}")
    if isinstance(f, FloatFormat):
        con.print(f"  {'overflow':14s} {_overflow_note(f)}")
    if codes:
        t = Table(title=f"every code of {f.name} (profile {prof.name})")
        for col in ("code", "bits", "value", "float32 bits"):
            t.add_column(col, justify="right")
        for code in codes:
            t.add_row(
                code["hex"],
                code["binary"],
                repr(code["value"]) if math.isfinite(code["value"]) else str(code["value"]),
                code["f32_bits"],
            )
        con.print(t)
    return 0


# ---------------------------------------------------------------- demo
DEMO_VALUES = [3.14159265, 1 / 3, -0.1, 1e-3, 300.0, 70000.0, 1e-8, -2.5]
DEMO_FORMATS = [
    "bfloat16",
    "float16",
    "tfloat32",
    "float8_e4m3fn",
    "float8_e5m2",
    "float6_e2m3fn",
    "float4_e2m1fn",
    "int8",
]


def cmd_demo(args: argparse.Namespace) -> int:
    """Round a handful of values and a random tensor to several formats."""
    import torch

    from chipfit.formats import get_format, quantize

    x = torch.tensor(DEMO_VALUES, dtype=torch.float32)
    rows = {name: quantize(x, name).tolist() for name in DEMO_FORMATS}
    g = torch.Generator().manual_seed(0)
    r = torch.randn(4096, generator=g)
    sqnr: dict[str, float] = {}
    for name in [*DEMO_FORMATS[:-1], "mxfp8_e4m3", "mxfp4", "nvfp4", "binary"]:
        q = quantize(r, name)
        err = float(((q - r) ** 2).mean())
        sqnr[name] = 10 * math.log10(float((r**2).mean()) / err) if err > 0 else float("inf")
    sr = quantize(torch.full((100000,), 1 + 2**-9), "bfloat16", rounding="stochastic", generator=g)
    sr_up = float((sr > 1).double().mean())
    if args.json:
        emit_json(
            {"values": DEMO_VALUES, "rounded": rows, "sqnr_db_normal_4096": sqnr, "stochastic_bf16_up_fraction": sr_up}
        )
        return 0
    con = console()
    cmd_formats(argparse.Namespace(kind=None, json=False))
    t = Table(title="rounding (nearest-even, profile torch) of a few float32 values")
    t.add_column("format")
    for v in DEMO_VALUES:
        t.add_column(f"{v:.6g}", justify="right")
    for name, vals in rows.items():
        t.add_row(name, *[f"{v:.6g}" for v in vals])
    con.print(t)
    t2 = Table(title="signal-to-quantization-noise ratio on 4096 N(0,1) values")
    t2.add_column("format")
    t2.add_column("bits/value", justify="right")
    t2.add_column("SQNR dB", justify="right")
    for name, db in sqnr.items():
        t2.add_row(name, f"{get_format(name).bits:g}", f"{db:.1f}")
    con.print(t2)
    con.print(f"stochastic rounding of 1 + 2^-9 to bfloat16: {sr_up:.4f} of 100000 round up (expected 0.25)")
    return 0


def add_parsers(sub: Any) -> None:
    from chipfit.formats.profiles import profile_names

    fp = sub.add_parser("formats", help="list number formats, or show one")
    fp.add_argument("--kind", help="filter: float, int, binary, block")
    fp.add_argument("--json", action="store_true", help="machine-readable output")
    fp.set_defaults(func=cmd_formats)
    fsub = fp.add_subparsers(dest="formats_command", metavar="show")
    fs = fsub.add_parser("show", help="every code of a format (up to 8 bits) or its limits")
    fs.add_argument("name")
    fs.add_argument(
        "--profile",
        default=None,
        choices=profile_names(),
        help="NaN/overflow rules (default torch; ml_dtypes: the installed release's)",
    )
    fs.add_argument("--json", action="store_true")
    fs.set_defaults(func=cmd_formats_show)

    dp = sub.add_parser("demo", help="the formats table and rounding demonstrations")
    dp.add_argument("--json", action="store_true")
    dp.set_defaults(func=cmd_demo)
