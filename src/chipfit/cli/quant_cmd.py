"""`chipfit quantize MODEL [--device D --budget B]`: PTQ, sensitivity, mixed precision, export."""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from typing import Any

import torch
from rich.table import Table

from chipfit.cli.common import CliError, console, count_or_all, emit_json, positive
from chipfit.cli.model_args import add_device_file_arg, add_model_args, resolve_model
from chipfit.emulate.data import first_items
from chipfit.hardware import get_device
from chipfit.quant import CALIBRATORS, RECIPES
from chipfit.report.text import metric_unit

__all__ = ["add_parsers"]

# --method NAME: the INT8 recipe of each calibrator that has one (int8-NAME), plus dynamic and smoothquant
METHODS = {
    "dynamic": "int8",
    **{c: f"int8-{c}" for c in CALIBRATORS if f"int8-{c}" in RECIPES},
    "smoothquant": "int8-smoothquant",
}
CALIB_SPLIT_BATCHES = 2  # models without separate calibration data: the first batches calibrate


def _metric(name: str, data: list[Any], model: torch.nn.Module) -> Callable[[torch.nn.Module], float]:
    """metric(model) over the evaluation batches: top-1 against targets, or mean cosine to FP32."""
    with torch.no_grad():
        refs = [model(*inputs) for inputs, _ in data]

    def value(m: torch.nn.Module) -> float:
        total, n = 0.0, 0
        with torch.no_grad():
            for (inputs, target), ref in zip(data, refs, strict=True):
                out = m(*inputs)
                if name == "top1":
                    total += float((out.argmax(-1) == target).float().sum())
                else:
                    total += float(torch.nn.functional.cosine_similarity(out.double(), ref.double(), dim=1).sum())
                n += out.shape[0]
        return total / n

    return value


def _config(args: argparse.Namespace) -> Any:
    from chipfit.quant import QuantConfig, get_recipe

    chosen = [x for x in (args.method, args.recipe, args.config) if x]
    if len(chosen) > 1:
        raise CliError("give one of --method, --recipe, --config")
    if args.config:
        try:
            with open(args.config) as fh:
                return QuantConfig.from_json(fh.read())
        except OSError as e:
            raise CliError(f"cannot read --config: {e}") from None
    if args.recipe:
        return get_recipe(args.recipe)
    method = args.method or "entropy"
    if method not in METHODS:
        raise CliError(f"unknown --method {method!r}; known: {', '.join(METHODS)}")
    return get_recipe(METHODS[method])


def cmd_quantize(args: argparse.Namespace) -> int:
    from chipfit.quant import layers, quantize_
    from chipfit.quant.search import search, sensitivity

    choice = resolve_model(args, fake=False, data=True,
                           own_model_hint="chipfit.quant.quantize_(model, config, calibrate=...)")  # fmt: skip
    spec = choice.spec
    if args.batch < 1:
        raise CliError(f"--batch must be >= 1, got {args.batch}")
    u = metric_unit(spec.metric)
    if args.budget is not None and args.max_accuracy_drop is not None:
        raise CliError("give --budget (the least acceptable accuracy) or --max-accuracy-drop, not both")
    searching = args.budget is not None or args.max_accuracy_drop is not None
    if searching and not args.device:
        raise CliError("--budget and --max-accuracy-drop need --device (the chip whose cost model the search lowers)")
    cfg = _config(args)
    device = get_device(args.device, args.device_file or ()) if args.device else None
    base = choice.build(pretrained=True).eval()
    data = spec.eval_data(args.batch)
    if spec.calib_data is not None:
        calib_batches = spec.calib_data(args.batch)
        split = "separate calibration split"
    else:
        calib_batches, data = data[:CALIB_SPLIT_BATCHES], data[CALIB_SPLIT_BATCHES:]
        split = f"first {CALIB_SPLIT_BATCHES} batches calibrate, the rest evaluate"
    if args.limit:
        data = first_items(data, args.limit)  # exactly --limit items
    calib = [inputs for inputs, _ in calib_batches]
    metric = _metric(spec.metric, data, base)
    fp32 = metric(base)
    model = quantize_(copy.deepcopy(base), cfg, calibrate=calib)
    value = metric(model)
    qls = layers(model)
    calib_rows = []
    for name, ql in qls.items():
        obs = ql.aq.observer if ql.aq is not None else None
        seen = max(abs(obs.lo), abs(obs.hi)) if obs is not None and obs.lo is not None and obs.hi is not None else None
        amax = float(ql.aq.amax) if ql.aq is not None and ql.aq.amax is not None else None
        calib_rows.append({
            "layer": name, "weights": ql.wq.spec.describe() if ql.wq else "float",
            "inputs": ql.aq.spec.describe() if ql.aq else "float", "observed_absmax": seen, "amax": amax,
        })  # fmt: skip
    sens = sensitivity(model, metric, sample=calib[0]) if not args.no_sensitivity else []
    result = None
    if searching and device is not None:
        levels = tuple(args.levels.split(",")) if args.levels else ("int4", "int8", "bf16")
        given = u.internal(args.budget) if args.budget is not None else None
        budget = given if given is not None else fp32 - (u.internal(args.max_accuracy_drop) or 0.0)
        result = search(base, metric, device=device, budget=budget, sample=calib[0], calibrate=calib,
                        levels=levels, objective=args.search_objective)  # fmt: skip
        if not result.met:
            top = levels[-1]
            asked = (f"--budget {args.budget:g}" if args.budget is not None
                     else f"--max-accuracy-drop {args.max_accuracy_drop:g}")  # fmt: skip
            raise CliError(
                f"{asked} cannot be met on {args.device}: the most accurate choice ({top} for every layer searched) "
                f"reaches {u.value_text(result.metric)} (FP32 {u.value_text(fp32)}); accept a lower accuracy or add "
                "a more precise --levels entry"
            )
    exported = None
    if args.export:
        from chipfit.quant.export import export_onnx, run_onnx

        path = export_onnx(model, calib[0], args.export)
        got = run_onnx(path, calib[0])
        with torch.no_grad():
            ours = model(*calib[0])
        exported = {"path": str(path), "max_abs_diff_vs_chipfit": float((got - ours).abs().max()),
                    "max_abs_output": float(ours.abs().max())}  # fmt: skip
    out: dict[str, Any] = {
        "model": args.model, "config": cfg.to_dict(), "metric": spec.metric, "calibration": split,
        "calibration_batches": len(calib), "eval_items": sum(int(i[0].shape[0]) for i, _ in data),
        u.key("fp32_accuracy"): u.shown(fp32), u.key("accuracy"): u.shown(value),
        u.key("drop", drop=True): u.shown(fp32 - value), "layers": calib_rows,
        "sensitivity": [r.as_dict(u) for r in sens], "search": result.as_dict(u) if result else None,
        "export": exported,
    }  # fmt: skip
    if args.json:
        emit_json(out)
        return 0
    _print(out, spec.metric)
    return 0


def _print(out: dict[str, Any], metric: str) -> None:
    u = metric_unit(metric)
    acc, drop = u.key("accuracy"), u.key("drop", drop=True)

    def fmt(shown: float | None) -> str:  # the JSON's shown values, back to chipfit's for the one formatter
        return u.value_text(u.internal(shown))

    c = console()
    cfg = out["config"]
    c.print(f"[bold]{out['model']}[/bold] with recipe [bold]{cfg['name']}[/bold]: {metric} "
            f"{fmt(out[acc])} vs FP32 {fmt(out[u.key('fp32_accuracy')])} over {out['eval_items']} items "
            f"({out['calibration']}; {out['calibration_batches']} calibration batches)")  # fmt: skip
    t = Table(title="calibration")
    for col in ("layer", "weights", "inputs", "observed max |x|", "amax (clip)"):
        t.add_column(col)
    for r in out["layers"]:
        seen = "-" if r["observed_absmax"] is None else f"{r['observed_absmax']:.4g}"
        amax = "-" if r["amax"] is None else f"{r['amax']:.4g}"
        t.add_row(r["layer"], r["weights"], r["inputs"], seen, amax)
    c.print(t)
    if out["sensitivity"]:
        s = Table(title="sensitivity: only this layer quantized (largest metric drop first)")
        for col in ("layer", "output SQNR dB", metric, f"drop ({u.drop_unit})"):
            s.add_column(col)
        for r in out["sensitivity"]:
            s.add_row(r["layer"], f"{r['sqnr_db']:.1f}", fmt(r[acc]), u.drop_text(u.internal(r[drop]), signed=True))
        c.print(s)
    res = out["search"]
    if res:
        m = Table(title=f"mixed precision on {res['device']}: {metric} >= {fmt(res[u.key('budget')])}")
        for col in ("layer", "level"):
            m.add_column(col)
        for layer, level in res["choice"].items():
            m.add_row(layer, level)
        c.print(m)
        refs = Table(title="result vs uniform precisions (cost model estimates)")
        for col in ("configuration", metric, "latency ms", "energy mJ", "mixed speed-up", "mixed energy saving"):
            refs.add_column(col)
        refs.add_row("mixed", fmt(res[acc]), f"{res['latency_s'] * 1e3:.4f}",
                     f"{res['energy_j'] * 1e3:.3f}", "-", "-")  # fmt: skip
        for name, r in res["reference"].items():
            speedup = f"{r['latency_s'] / res['latency_s']:.2f}x"
            saving = f"{1 - res['energy_j'] / r['energy_j']:+.1%}"
            lat, en = f"{r['latency_s'] * 1e3:.4f}", f"{r['energy_j'] * 1e3:.3f}"
            refs.add_row(name, fmt(r[acc]), lat, en, speedup, saving)
        c.print(refs)
    if out["export"]:
        e = out["export"]
        diff = e["max_abs_diff_vs_chipfit"]
        c.print(f"ONNX QDQ written to {e['path']}; onnxruntime vs chipfit max |diff| {diff:.3g} "
                f"(outputs up to {e['max_abs_output']:.3g})")  # fmt: skip


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "quantize",
        help="quantize a built-in model: calibration, sensitivity, mixed precision, ONNX export",
        description="Post-training quantization of digits-cnn or minilm with a calibrator or recipe, the "
        "per-layer sensitivity table, and with --device/--budget a per-layer precision search that "
        "minimises the cost model's latency on that chip.",
    )
    add_model_args(p, batch=False, model_help="digits-cnn or minilm")
    p.add_argument("--method", help=f"INT8 calibration method: {', '.join(METHODS)} (default entropy)")
    p.add_argument("--recipe", help="a named recipe (see chipfit.quant.RECIPES): int8, int8-entropy, w4a8, fp8, ...")
    p.add_argument("--config", help="a QuantConfig JSON file")
    p.add_argument("--device", help="catalog device for the precision search")
    add_device_file_arg(p)
    p.add_argument(
        "--budget", type=float,
        help="least acceptable accuracy, in the metric's unit: top-1 in percent (97.5) or mean cosine (0.999)",
    )  # fmt: skip
    p.add_argument(
        "--max-accuracy-drop", type=float,
        help="or: the most accuracy you accept to lose from FP32, top-1 points (as plan's) or cosine units",
    )  # fmt: skip
    p.add_argument("--levels", help="search levels, cheapest first (default int4,int8,bf16)")
    p.add_argument("--search-objective", default="latency", help="what the search minimises: latency or energy")
    p.add_argument("--batch", type=positive, default=32, help="batch size (default 32)")
    p.add_argument("--limit", type=count_or_all, default=0, help="evaluate the first N items only")
    p.add_argument("--no-sensitivity", action="store_true", help="skip the per-layer sensitivity table")
    p.add_argument("--export", help="write the quantized model as QDQ ONNX here (static int8 recipes)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_quantize)
