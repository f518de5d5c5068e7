"""What the report's charts show (issue 18, "The report shows what matters"), read from the SVG."""

from __future__ import annotations

import re

import pytest

from chipfit.models import get_model
from chipfit.plan import plan
from chipfit.plan.html import _scaling_series, render_html


@pytest.fixture(scope="module")
def report() -> tuple[object, str]:
    spec = get_model("digits-cnn")
    p = plan(spec.pretrained(), spec.example_inputs, name="digits-cnn", devices=["a100-sxm", "h100-sxm", "ascend-910b"],
             precisions=["bf16", "int8"], batches=[8, 32], chips=[1, 2, 4], eval_data=spec.eval_data(64)[:2],
             metric="top1", backend="serial")  # fmt: skip
    return p, render_html(p)


def _figure(html: str, name: str) -> str:
    found = re.search(rf"<figure data-chart='{name}'>(.*?)</figure>", html, re.S)
    assert found, name
    return found.group(1)


def test_scaling_has_one_series_per_strategy_and_per_chip_batch_on_whole_chip_counts(report: tuple) -> None:
    p, html = report
    series = _scaling_series(p)
    best = p.best
    per_chip = best.batch // best.chips if best.strategy == "data" else best.batch
    assert set(series) >= {f"data parallel, {per_chip} items per chip", f"tensor parallel, batch {per_chip}"}
    for name, pts in series.items():
        chips = [c for c, _ in pts]
        assert chips == sorted(set(chips)) and chips[0] == 1, name  # one point per chip count: no zigzag
    svg = _figure(html, "scaling")
    ticks = re.findall(r'<text x="[\d.]+" y="(\d+)" text-anchor="middle">([^<]+)</text>', svg)
    tick_y = max(int(y) for y, t in ticks if t != "chips")  # the x tick labels, under the plot (the axis name below)
    xs = [t for y, t in ticks if int(y) == tick_y]
    assert xs and all(re.fullmatch(r"\d+", t) for t in xs), xs  # 1, 2, 4: never 0.85 or 1.68


def test_the_cost_chart_rings_the_front_and_numbers_the_recommendation(report: tuple) -> None:
    p, html = report
    svg = _figure(html, "cost-latency")
    priced_front = [r for r in p.front if r.fits and r.usd_per_million is not None]
    assert svg.count('r="5" fill="none" stroke="#555" stroke-width="1"') == len(priced_front)
    assert "Pareto front" in svg and f"recommended: {p.best.label()}"[:20] in svg
    assert "Not on this chart, no on-demand price: ascend-910b" in _figure(html, "cost-latency")


def test_the_accuracy_chart_plots_the_drop_in_points(report: tuple) -> None:
    p, html = report
    svg = _figure(html, "accuracy")
    assert "drop in points" in svg
    worst = max(r.accuracy_drop for r in p.rows if r.precision == "int8" and r.accuracy_drop is not None)
    bars = dict(re.findall(r'text-anchor="end">(\w+)</text><rect[^>]*/><text[^>]*>([^<]+)</text>', svg))
    assert float(bars["int8"]) == pytest.approx(100 * worst, abs=1e-3)  # points, not a 0.98 bar from zero


def test_the_roofline_labels_its_roofs_and_the_heaviest_ops(report: tuple) -> None:
    p, html = report
    svg = _figure(html, "roofline")
    assert "memory roof" in svg and "B/s" in svg and "compute roof" in svg and "TFLOP/s" in svg
    heaviest = max(p.best_estimate.rows, key=lambda r: r.time_s if r.flops and r.bytes else 0)
    assert heaviest.op.replace("aten.", "") in svg
