"""`plan --serve`'s self-contained HTML report: the recommendation and its reasons, the serving frontier
(output tokens/s per chip against tokens/s per user, one point per client count) as inline SVG, the
simulated configurations and the ones ruled out. No scripts, no network; every text from the model or
the catalog is HTML-escaped."""

from __future__ import annotations

from html import escape

from chipfit.plan.html import CSS
from chipfit.report.plot import xy_chart
from chipfit.serve.plan import ServePlan, label

__all__ = ["SERVE_CHARTS", "render_serve_html"]

SERVE_CHARTS = ("frontier", "cost-throughput")


def _money(v: float | None) -> str:
    return "-" if v is None else f"{v:,.3f}"


def render_serve_html(p: ServePlan) -> str:
    best = p.best
    parts = [
        "<!DOCTYPE html><html><head><meta charset='utf-8'>",
        f"<title>chipfit serving plan: {escape(p.model)}</title><style>{CSS}</style></head><body>",
        f"<h1>chipfit serving plan: {escape(p.model)}</h1>",
        f"<p>Workload: {escape(p.workload.describe())}; objectives: {escape(p.slo.describe())}; "
        f"{len(p.results)} configurations simulated, {len(p.skipped)} ruled out.</p>",
        f"<h2>Recommendation: {escape(label(best)) if best else 'none'}</h2>",
        *(f"<p class='reason'>{escape(x)}</p>" for x in p.reasons()),
    ]
    if p.frontier:
        ok = [(f.tokens_per_s_per_user, f.output_tokens_per_s_per_chip) for f in p.frontier if f.meets_slo]
        miss = [(f.tokens_per_s_per_user, f.output_tokens_per_s_per_chip) for f in p.frontier if not f.meets_slo]
        series = {"meets the objectives": ok, "misses them": miss}
        svg = xy_chart("serving frontier of the recommendation", "tokens/s per user (1 / TPOT p50)",
                       "output tokens/s per chip", {k: v for k, v in series.items() if v}, lines=True,
                       highlight=[(x, y, f"{f.clients} clients") for f, (x, y) in
                                  zip(p.frontier, [(f.tokens_per_s_per_user, f.output_tokens_per_s_per_chip)
                                                   for f in p.frontier], strict=True)])  # fmt: skip
        parts.append(f"<figure data-chart='frontier'>{svg}<figcaption>{escape(label(best) if best else '')} at "
                     "1, 2, 4, ... concurrent clients per replica: more clients, more tokens per chip, fewer per "
                     "user.</figcaption></figure>")  # fmt: skip
    priced = [r for r in p.results if r.usd_per_million_output_tokens is not None]
    if priced:
        by_dev: dict[str, list[tuple[float, float]]] = {}
        for r in priced:
            by_dev.setdefault(r.device.name, []).append(
                (r.output_tokens_per_s_per_chip, r.usd_per_million_output_tokens or 0.0)
            )
        svg = xy_chart("$ per million output tokens against throughput", "output tokens/s per chip",
                       "$ / M output tokens", by_dev, logx=True, logy=True)  # fmt: skip
        parts.append(f"<figure data-chart='cost-throughput'>{svg}<figcaption>every simulated configuration, "
                     "at the load it was sized for</figcaption></figure>")  # fmt: skip
    head = ("configuration", "tokens/s", "tokens/s per chip", "tokens/s per user", "TTFT p99 ms", "TPOT p99 ms",
            "meets", "$ / M tokens", "J / token")  # fmt: skip
    rows = []
    for r in p.results:
        cells = (label(r), f"{r.output_tokens_per_s:,.0f}", f"{r.output_tokens_per_s_per_chip:,.0f}",
                 f"{r.tokens_per_s_per_user:,.1f}", f"{r.sim.ttft_s(99) * 1e3:,.0f}", f"{r.sim.tpot_s(99) * 1e3:,.1f}",
                 "yes" if r.meets_slo else "no", _money(r.usd_per_million_output_tokens),
                 f"{r.joules_per_output_token:.3g}")  # fmt: skip
        rows.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>")
    parts.append("<h2>Simulated configurations</h2><table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head)
                 + "</tr>" + "".join(rows) + "</table>")  # fmt: skip
    if p.skipped:
        items = "".join(f"<li>{escape(c)}: {escape(w)}</li>" for c, w in p.skipped)
        parts.append(f"<details><summary>{len(p.skipped)} configurations ruled out</summary><ul>{items}</ul></details>")
    parts.append("<p>Simulated with chipfit's serving model (docs/serving.md): per-layer kernels priced by the "
                 "compiled cost model, continuous batching with chunked prefill.</p></body></html>")  # fmt: skip
    return "".join(parts)
