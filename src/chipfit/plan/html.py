"""The planner's self-contained HTML report: inline SVG charts, no scripts, no network.

Charts: cost vs latency (every configuration that fits, coloured by device; the Pareto front
and the recommendation marked), a roofline with the recommended configuration's ops placed on
it, the per-layer time breakdown (innermost modules), accuracy per precision (when measured) and scaling with chip
count. Every text that comes from the model or the catalog is HTML-escaped.
"""

from __future__ import annotations

from html import escape

from chipfit.plan.plan import Plan
from chipfit.report.plot import bar_chart, xy_chart
from chipfit.report.text import seconds_text

__all__ = ["CHARTS", "drop_text", "render_html"]

# data-chart names of the figures, in page order (tests find the plots by them)
CHARTS = ("cost-latency", "roofline", "layers", "scaling", "accuracy")

CSS = """body{font-family:sans-serif;max-width:900px;margin:2em auto;color:#222}
table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}.reason{margin:.3em 0}
figure{margin:1.5em 0}figcaption{font-size:12px;color:#555}"""


def drop_text(d: float | None, metric: str) -> str:
    """A drop in the metric's shown unit, without the unit (a table column names it)."""
    from chipfit.report.text import metric_unit

    return metric_unit(metric).drop_text(d).removesuffix(" pt")


def _scaling_series(p: Plan) -> dict[str, list[tuple[float, float]]]:
    """Throughput against chip count for the recommendation's device and precision, one series per
    strategy at one per-chip load: data parallel keeps the per-chip batch (the global batch grows
    with the chips), tensor and pipeline keep the global batch. Each starts at one chip with that
    batch. Empty when no multi-chip row exists."""
    best = p.best
    if best is None:
        return {}
    per_chip = best.batch // best.chips if best.strategy == "data" else best.batch
    rows = [r for r in p.rows if (r.device, r.precision) == (best.device, best.precision) and r.fits]
    single = {r.batch: r.throughput for r in rows if r.chips == 1}
    out: dict[str, list[tuple[float, float]]] = {}
    for strategy, want in (("data", lambda n: per_chip * n), ("tensor", lambda _n: per_chip),
                           ("pipeline", lambda _n: per_chip)):  # fmt: skip
        pts = sorted((float(r.chips), r.throughput) for r in rows
                     if r.strategy == strategy and r.chips > 1 and r.batch == want(r.chips))  # fmt: skip
        if pts and per_chip in single:
            what = f"{per_chip} items per chip" if strategy == "data" else f"batch {per_chip}"
            out[f"{strategy} parallel, {what}"] = [(1.0, single[per_chip]), *pts]
    return out


def _money(v: float | None) -> str:
    return "-" if v is None else f"${v:.3g}"


def render_html(p: Plan) -> str:
    """The plan as one self-contained page; it renders what the plan holds (the recommendation's
    per-op estimate included) and never traces or prices again."""
    from chipfit.hardware import get_device

    best = p.best
    charts: list[tuple[str, str]] = []  # (data-chart name, svg)
    fits = [r for r in p.rows if r.fits and r.usd_per_million is not None]
    by_dev: dict[str, list[tuple[float, float]]] = {}
    for r in fits:
        by_dev.setdefault(r.device, []).append((float(r.usd_per_million or 0), r.latency_ms))
    marks: list[tuple[float, float, str]] = []
    if best is not None and best.usd_per_million is not None:
        marks.append((best.usd_per_million, best.latency_ms, f"recommended: {best.label()}"))
    front = [(float(r.usd_per_million), r.latency_ms) for r in p.front if r.fits and r.usd_per_million is not None]
    charts.append(
        (
            "cost-latency",
            xy_chart(
                "Cost vs latency (each dot a configuration that fits; the Pareto front ringed)",
                "USD per million items",
                "latency per step (ms)",
                by_dev,
                logx=True,
                logy=True,
                highlight=marks,
                marked=front,
                marked_label="Pareto front",
            ),
        )
    )
    unpriced = sorted({r.device for r in p.rows if r.usd_per_hour is None})
    unfit = sorted({r.device for r in p.rows if r.usd_per_hour is not None and not any(
        q.fits for q in p.rows if q.device == r.device)})  # fmt: skip
    basis = " or ".join(p.pricing.pricing.bases) if p.pricing is not None else "on-demand"
    missing = [f"no {basis} price: {', '.join(unpriced)}"] if unpriced else []
    missing += [f"no configuration fits in memory: {', '.join(unfit)}"] if unfit else []
    captions = {"cost-latency": f"Not on this chart, {'; '.join(missing)}."} if missing else {}
    if best is not None and p.best_estimate is not None:
        dev = get_device(best.device)
        est = p.best_estimate
        ops = [
            (r.flops / r.bytes, r.flops / r.time_s) for r in est.rows if r.flops > 0 and r.bytes > 0 and r.time_s > 0
        ]
        peak = est.peak_ops_per_s
        bw = dev.main_memory.bandwidth_bytes_per_s
        xs = [x for x, _ in ops] or [1.0]
        lo, hi = min(xs) / 2, max(max(xs) * 2, peak / bw * 4)
        ridge = peak / bw
        guides = {
            f"memory roof {bw / 1e12:.3g} TB/s" if bw >= 1e12 else f"memory roof {bw / 1e9:.3g} GB/s": [
                (lo, bw * lo),
                (ridge, peak),
            ],
            f"compute roof {peak / 1e12:.3g} TFLOP/s": [(ridge, peak), (hi, peak)],
        }
        heavy = sorted((r for r in est.rows if r.flops > 0 and r.bytes > 0 and r.time_s > 0), key=lambda r: -r.time_s)
        heaviest = [(r.flops / r.bytes, r.flops / r.time_s, f"{r.op.replace('aten.', '')} in {r.module or 'the model'}"
                     f" ({seconds_text(r.time_s)})") for r in heavy[:3]]  # fmt: skip
        charts.append(
            (
                "roofline",
                xy_chart(
                    f"Roofline: {best.device} at {best.precision}, batch {best.batch} (each dot an op; "
                    "the heaviest numbered)",
                    "arithmetic intensity (FLOP per byte)",
                    "achieved FLOP/s",
                    {"ops": ops},
                    logx=True,
                    logy=True,
                    guides=guides,
                    highlight=heaviest,
                ),
            )
        )
        per_layer = list(est.by("layer").items())
        layers = per_layer[:15]
        if len(per_layer) > 15:  # a 70B decoder has hundreds: the rest as one bar
            rest = sum(v["time_s"] for _, v in per_layer[15:])
            layers.append((f"({len(per_layer) - 15} other layers)", {"time_s": rest}))
        charts.append(
            (
                "layers",
                bar_chart(
                    f"Time per layer, {best.label()} (cost model; the largest first)",
                    "microseconds per step",
                    [(k or "(model)", v["time_s"] * 1e6) for k, v in layers],
                ),
            )
        )
        series = _scaling_series(p)
        if series:
            charts.append(
                (
                    "scaling",
                    xy_chart(
                        f"Scaling with chip count: {best.device} {best.precision} (one line per strategy and "
                        "per-chip batch)",
                        "chips",
                        "items per second",
                        series,
                        lines=True,
                        integer_x=True,
                    ),
                )
            )
    if p.fp32_metric is not None:
        from chipfit.report.text import metric_unit

        u = metric_unit(p.metric)
        drops: dict[str, float] = {}
        for r in p.rows:
            if r.accuracy_drop is not None:
                drops[r.precision] = max(drops.get(r.precision, -1e9), r.accuracy_drop)
        charts.append(
            (
                "accuracy",
                bar_chart(
                    f"{p.metric} drop from FP32 ({u.value_text(p.fp32_metric)}) per precision, worst device",
                    f"drop in {u.drop_unit} (0: as accurate as FP32)",
                    [(k, u.shown(v) or 0.0) for k, v in drops.items()],
                ),
            )
        )
    head = ["configuration", "time/step", "items/s", "$/M items", "J/item", "GiB/chip", "fits"]
    if p.fp32_metric is not None:
        from chipfit.report.text import metric_unit

        head.append(f"{p.metric} drop ({metric_unit(p.metric).drop_unit})")
    rows_html = []
    for r in p.front[:40]:
        cells = [
            r.label(),
            seconds_text(r.step_s),
            f"{r.throughput:.4g}",
            _money(r.usd_per_million),
            f"{r.energy_per_item_j:.3g}",
            f"{r.memory_per_chip_bytes / 2**30:.3g}",
            "yes" if r.fits else "no",
        ]
        if p.fp32_metric is not None:
            cells.append(drop_text(r.accuracy_drop, p.metric))
        rows_html.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    cons = ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in p.constraints.__dict__.items() if v is not None) or "none"
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>chipfit plan: {escape(p.model)}</title><style>{CSS}</style></head><body>",
        f"<h1>chipfit plan: {escape(p.model)}</h1>",
        f"<p>Objective: <b>{escape(p.objective)}</b>; constraints: {escape(cons)}; "
        f"{'training' if p.training else 'inference'}; {len(p.rows)} configurations swept.</p>",
    ]
    if best is not None:
        parts.append(f"<h2>Recommendation: {escape(best.label())}</h2>")
        parts += [f"<p class='reason'>{escape(x)}</p>" for x in p.reasons]
    for key, svg in charts:
        cap = f"<figcaption>{escape(captions[key])}</figcaption>" if key in captions else ""
        parts.append(f"<figure data-chart='{key}'>{svg}{cap}</figure>")
    parts.append(
        f"<h2>Pareto front ({len(p.front)} configurations)</h2><table><tr>"
        + "".join(f"<th>{escape(h)}</th>" for h in head)
        + "</tr>"
        + "".join(rows_html)
        + "</table>"
    )
    parts.append("<p>Estimates from chipfit's cost model (see docs/cost.md); accuracy by emulation.</p></body></html>")
    return "\n".join(parts)
