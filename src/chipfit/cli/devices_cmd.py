"""`chipfit devices` and `chipfit devices show NAME`."""

from __future__ import annotations

import argparse
from dataclasses import fields, is_dataclass
from typing import Any

from rich.table import Table

from chipfit.cli.common import console, emit_json
from chipfit.cli.price_args import add_price_args, resolve_pricing
from chipfit.hardware.pricing import PRICE_BASES

__all__ = ["add_parsers", "device_dict"]

TABLE_PRECISIONS = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4", "fp4")
CELL_MARKS = {"fnuz": "f", "vector": "v", "autocast": "c"}


def _cell(row: Any) -> str:
    """A table cell: the peak of the way the precision runs, marked when that is not the plain format
    (f: the fnuz variant; v: FP32 on the vector unit; c: the compiler casts it)."""
    from chipfit.hardware.precision import How

    if row.how in (How.NATIVE, How.AUTOCAST):
        mark = CELL_MARKS["autocast"] if row.how is How.AUTOCAST else ""
        mark += CELL_MARKS["fnuz"] if row.format.endswith("fnuz") else ""
        return _tflops(row.peak_ops_per_s) + mark
    if row.how is How.VECTOR and row.precision == "fp32":  # every chip runs FP32 somewhere: say where
        return _tflops(row.peak_ops_per_s) + CELL_MARKS["vector"]
    return "-"


def _variants(fmt: str) -> set[str]:
    """`fmt` and the formats that stand for it on other chips (float8_e4m3fn and its fnuz variant)."""
    from chipfit.hardware.precision import PRECISION_ALIASES

    out = {fmt}
    for names in PRECISION_ALIASES.values():
        if fmt in names:
            out |= set(names)
    return out


def _plain(v: Any) -> Any:
    from chipfit.hardware import Source

    if isinstance(v, Source):
        return str(v)
    if is_dataclass(v) and not isinstance(v, type):
        return {f.name: _plain(getattr(v, f.name)) for f in fields(v)}
    if isinstance(v, tuple):
        return [_plain(x) for x in v]
    if hasattr(v, "items"):
        return {k: _plain(x) for k, x in v.items()}
    return v


def device_dict(d: Any) -> dict[str, Any]:
    """Every field of a device (sources as 'kind: reference'), plus the derived per-format table."""
    out = _plain(d)
    out["formats"] = d.describe_formats()
    out["main_memory"] = d.main_memory.name
    # derived: a large 2:4-sparse GEMM's speed-up over dense per format (sparse peak ratio x kernel efficiency)
    out["sparse_speedup_2_4"] = {f: v for f in d.formats if (v := d.sparse_speedup(f, "2:4")) > 1}
    return out  # type: ignore[no-any-return]


def _tflops(v: float) -> str:
    if not v:
        return "-"
    return f"{v / 1e12:,.0f}" if v >= 1e13 else f"{v / 1e12:.2g}"


def cmd_devices(args: argparse.Namespace) -> int:
    from chipfit.hardware import list_devices
    from chipfit.hardware.precision import support_matrix

    files = args.device_file or ()
    devs = list_devices(args.family, None, files)
    variant_of: dict[str, str] = {}  # device -> the sibling format it runs instead of --format
    if args.format:
        keep = []
        for d in devs:
            runs = [f for f in sorted(_variants(args.format)) if d.peak(f)]
            if args.format in runs or runs:
                keep.append(d)
                if args.format not in runs:
                    variant_of[d.name] = runs[0]
        devs = keep
    pricing = resolve_pricing(args, files)
    if args.json:
        rows = [device_dict(d) for d in devs]
        for r in rows:
            if r["name"] in variant_of:
                r["runs_instead"] = variant_of[r["name"]]
        emit_json(rows)
        return 0
    basis = " or ".join(pricing.bases)
    t = Table(title=f"chipfit device catalog: dense peak TFLOP/s or TOP/s per format; $ per accelerator-hour {basis}")
    t.add_column("name", no_wrap=True)
    t.add_column("family", no_wrap=True)
    for prec in TABLE_PRECISIONS:
        t.add_column(prec, justify="right", no_wrap=True)
    for col in ("memory GB", "GB/s", "TDP W", "$/h"):
        t.add_column(col, justify="right", no_wrap=True)
    for d in devs:
        m = d.main_memory
        q = pricing.quote(d)
        price = "-" if q is None else f"{q.usd_per_hour:.2f}" + ("" if len(pricing.bases) == 1 else f" {q.basis}")
        t.add_row(
            d.name,
            d.family,
            *[_cell(r) for r in support_matrix(d, TABLE_PRECISIONS)],
            f"{m.capacity_bytes / 1e9:,.0f}",
            f"{m.bandwidth_bytes_per_s / 1e9:,.0f}"
            if m.bandwidth_bytes_per_s >= 10e9
            else f"{m.bandwidth_bytes_per_s / 1e9:.1f}",
            f"{d.power.tdp_w:g}",
            price,
        )
    c = console()
    c.print(t)
    c.print("f: the fnuz FP8 variant (AMD gfx942); v: FP32 on the vector unit (no FP32 matrix math); "
            "c: the compiler casts it (TPU, Neuron: fp32 to bf16).")  # fmt: skip
    for name, fmt in variant_of.items():
        c.print(f"{name} runs {fmt}, not {args.format}: the same precision in its own encoding.")
    c.print(f"{len(devs)} devices. `chipfit devices show NAME` lists every field with its source.")
    return 0


def cmd_devices_show(args: argparse.Namespace) -> int:
    from chipfit.hardware import get_device

    files = args.device_file or ()
    d = get_device(args.name, files)
    pricing = resolve_pricing(args, files)
    if args.json:
        out = device_dict(d)
        from chipfit.hardware.stacks import get_stack

        st = get_stack(d.support.stack)
        out["stack"] = {"name": st.name, "display_name": st.display_name, "default_execution": d.support.execution,
                        "fuses": list(st.fuses), "kernel_launch_s": st.kernel_launch_on(d),
                        "step_launch_s": st.step_launch_s, "sources": dict(st.sources)}  # fmt: skip
        out["price_quotes"] = {b: q.as_dict() for b in PRICE_BASES if (q := pricing.quote_on(d, b)) is not None}
        from chipfit.hardware.precision import support_matrix

        out["precision_support"] = [
            {"precision": r.precision, "format": r.format, "how": r.how.value, "peak_ops_per_s": r.peak_ops_per_s,
             "trains": r.trains, "weights": r.weights, "note": r.note} for r in support_matrix(d)
        ]  # fmt: skip
        emit_json(out)
        return 0
    c = console()
    c.print(f"[bold]{d.display_name}[/bold] ({d.name}, {d.family}, {d.vendor}, {d.year}, {d.process_nm:g} nm)")
    if d.description:
        c.print(f"  {d.description}")
    c.print(f"  file: {d.file}" + (f" (extends {d.extends})" if d.extends else ""))
    c.print(f"  identity source: {d.source}")

    t = Table(title="per format: peak, ridge point (ops per byte of main memory), energy per op")
    for col in ("format", "peak TOP/s", "accumulate", "ridge ops/B", "arith pJ/op", "TDP/peak pJ/op"):
        t.add_column(col, justify="right" if col != "format" else "left")
    for f, row in d.describe_formats().items():
        t.add_row(
            f, f"{float(row['peak_ops_per_s']) / 1e12:,.1f}", str(row["accumulate"]),
            f"{float(row['ridge_ops_per_byte']):,.0f}", f"{float(row['energy_pj_per_op']):.3f}",
            f"{float(row['tdp_pj_per_op']):.3f}",
        )  # fmt: skip
    c.print(t)
    from chipfit.hardware.precision import support_matrix

    sm = Table(title="precision support: how each precision runs (the planner offers the matrix-unit rows)")
    for col in ("precision", "format", "runs", "peak TOP/s", "trains", "weights"):
        sm.add_column(col, justify="right" if col == "peak TOP/s" else "left")
    for r in support_matrix(d):
        sm.add_row(r.precision, r.format, r.note, _tflops(r.peak_ops_per_s), "yes" if r.trains else "-", r.weights)
    c.print(sm)
    s = Table(title="fields and sources")
    s.add_column("group")
    s.add_column("values")
    s.add_column("source")
    cp = d.compute
    s.add_row("compute", f"{cp.units} units, tile {cp.kernel_tile_mnk}", str(cp.source))
    s.add_row("vector", f"{cp.vector_ops_per_s / 1e12:g} TFLOP/s", str(cp.vector_source))
    s.add_row("dispatch", f"{cp.dispatch_overhead_s * 1e6:g} us/op", str(cp.overhead_source))
    if cp.kernel_latency_source is not None:
        s.add_row("GEMM kernel latency", f"{cp.kernel_latency_s * 1e6:g} us (compiled)", str(cp.kernel_latency_source))
    if cp.wave_latency_source is not None:
        per = "".join(f", {f} {v * 1e6:g} us" for f, v in cp.wave_latency_format_s.items())
        s.add_row("GEMM wave latency", f"{cp.wave_latency_s * 1e6:g} us{per}", str(cp.wave_latency_source))
    for u in d.matrix_units:
        shape = f"{u.count} x {u.rows}x{u.cols}" + (f"x{u.depth}" if u.depth > 1 else "")
        extra = f", {u.dataflow}" if u.dataflow else ""
        s.add_row(f"matrix {u.name}", f"{u.kind} {shape} @ {u.clock_hz / 1e9:g} GHz{extra}", str(u.source))
    for m in d.memory:
        s.add_row(
            f"memory {m.name}",
            f"{m.kind} {m.capacity_bytes / 1e9:g} GB, {m.bandwidth_bytes_per_s / 1e9:,.0f} GB/s",
            str(m.source),
        )
        s.add_row("", f"{m.energy_pj_per_byte:.3g} pJ/B", str(m.energy_source))
    s.add_row("power", f"TDP {d.power.tdp_w:g} W", str(d.power.source))
    s.add_row("", f"idle {d.power.idle_w:g} W", str(d.power.idle_source))
    if d.power.sustained_ops_per_s:
        rates = ", ".join(f"{f} {v / 1e12:g} TOP/s" for f, v in d.power.sustained_ops_per_s.items())
        where = f"on {d.power.sustained_part} (same die) at its TDP" if d.power.sustained_part else "at the TDP"
        s.add_row("", f"sustained {where}: {rates}", str(d.power.sustained_source))
    for label, link in (("host link", d.host_link), ("interconnect", d.interconnect), ("scale-out", d.scale_out)):
        if link is not None:
            domain = f", {link.domain_chips} chips per domain" if link.domain_chips else ""
            s.add_row(
                label,
                f"{link.kind} {link.generation} {link.bandwidth_bytes_per_s / 1e9:g} GB/s/dir, {link.topology}{domain}",
                str(link.source),
            )
            hop = f" + {link.hop_latency_s * 1e6:g} us per extra hop" if link.hop_latency_s else ""
            base = f", {link.collective_latency_s * 1e6:g} us per collective" if link.collective_latency_s else ""
            s.add_row("", f"latency {link.latency_s * 1e6:g} us per message{hop}{base}", str(link.latency_source))
    sp = d.sparsity
    if sp is not None and sp.peak_ops_per_s:
        for i, (pat, table) in enumerate(sp.peak_ops_per_s.items()):
            peaks = ", ".join(f"{f} {_tflops(v)}" for f, v in table.items())
            s.add_row(f"sparsity {pat}", f"{peaks} T(FL)OP/s sparse peak", "" if i else str(sp.source))
        if sp.efficiency_source is not None:
            ups = ", ".join(f"{f} {v:.2f}x" for f in d.formats if (v := d.sparse_speedup(f, "2:4")) > 1) or "none"
            s.add_row("", f"kernels reach {sp.efficiency:.0%} of the peak ratio: 2:4 GEMM speed-up {ups}",
                      str(sp.efficiency_source))  # fmt: skip
    elif sp is not None:
        s.add_row("sparsity", "none (a pruned model runs at its dense cost)", str(sp.source))
    else:
        s.add_row("sparsity", "not stated in the catalog entry (priced dense)", "")
    if d.training is not None:
        s.add_row("training", ", ".join(d.training.formats), str(d.training.source))
    else:
        s.add_row("training", "none (no training stack in the catalog)", "")
    sup = d.support
    auto = ", ".join(f"{k}->{v}" for k, v in sup.autocast.items()) or "none"
    host_ops = ", ".join(sup.host_op_classes) or "none"
    s.add_row(
        "support",
        f"autocast {auto}; other formats -> {sup.unsupported_format}; host ops: {host_ops}; host {sup.host}",
        str(sup.source),
    )
    from chipfit.hardware.stacks import get_stack

    st = get_stack(sup.stack)
    launch = f"{st.kernel_launch_on(d) * 1e6:g} us/kernel" + (
        f" + {st.step_launch_s * 1e6:g} us/step" if st.step_launch_s else ""
    )
    fuses = ", ".join(st.fuses) or "nothing"
    s.add_row(
        "stack",
        f"{st.display_name} ({st.name}; priced {sup.execution} by default): fuses {fuses}; {launch}",
        "; ".join([st.source, *(f"{k}: {v}" for k, v in st.sources.items()), st.launch_source]).strip("; "),
    )
    for pr in d.prices:
        s.add_row(f"price {pr.basis}", pr.describe(), str(pr.source))
    if not d.prices:
        s.add_row("price", "none sourced (plan leaves it unranked on cost; give yours with --prices)", "")
    tco = pricing.quote_on(d, "tco")
    if tco is not None:
        s.add_row("ownership", tco.describe().split("; ")[0], pricing.tco.describe())
    cal = d.energy_calibration
    s.add_row(
        "energy",
        f"{cal.full_load_w:g} W at the {cal.limiting_format} peak with memory at full bandwidth; operand delivery "
        f"{cal.delivery_pj_per_bit:.3g} pJ/bit" + (" (rests on an assumed power figure)" if cal.assumed else ""),
        cal.basis,
    )
    if d.published_ops_per_j is not None:
        s.add_row(
            "efficiency", f"{d.published_ops_per_j / 1e12:g} TOPS/W published", str(d.published_efficiency_source)
        )
    c.print(s)
    return 0


def add_parsers(sub: Any) -> None:
    from chipfit.formats import FORMATS
    from chipfit.hardware import FAMILIES

    dp = sub.add_parser("devices", help="the device catalog, or one device")
    dp.add_argument("--family", choices=FAMILIES, help="only this family")
    dp.add_argument("--format", choices=list(FORMATS), metavar="FORMAT", help="only devices whose matrix unit runs it")
    dp.add_argument("--device-file", action="append", metavar="PATH", help="extra catalog file (repeatable)")
    add_price_args(dp)
    dp.add_argument("--json", action="store_true")
    dp.set_defaults(func=cmd_devices)
    dsub = dp.add_subparsers(dest="devices_command", metavar="show")
    ds = dsub.add_parser("show", help="every field of a device with its source")
    ds.add_argument("name")
    ds.add_argument("--device-file", action="append", metavar="PATH", help="extra catalog file (repeatable)")
    add_price_args(ds)
    ds.add_argument("--json", action="store_true")
    ds.set_defaults(func=cmd_devices_show)
