"""Line plots as self-contained SVG: stacked panels, several series each, optional log y axis."""

from __future__ import annotations

import math
from html import escape

__all__ = ["line_panels"]

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f")
W, H, PAD_L, PAD_R, PAD_T, PAD_B = 720, 200, 70, 170, 28, 30


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def line_panels(title: str, panels: list[tuple[str, dict[str, list[float]], bool]]) -> str:
    """panels: (y label, {series name: values per step}, log y). Non-finite and (on log axes)
    non-positive values leave gaps."""
    height = PAD_T + len(panels) * (H + PAD_B) + 10
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" '
        f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
    ]
    for k, (label, series, logy) in enumerate(panels):
        top = PAD_T + k * (H + PAD_B)
        x0, x1, y0, y1 = PAD_L, W - PAD_R, top + H, top

        def tr(v: float, logy: bool = logy) -> float | None:
            if not math.isfinite(v) or (logy and v <= 0):
                return None
            return math.log10(v) if logy else v

        vals = [t for s in series.values() for v in s if (t := tr(v)) is not None]
        lo, hi = (min(vals), max(vals)) if vals else (0.0, 1.0)
        if hi == lo:
            hi, lo = hi + 0.5, lo - 0.5
        n = max((len(s) for s in series.values()), default=1)
        out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{H}" fill="none" stroke="#888"/>')
        out.append(
            f'<text x="14" y="{(y0 + y1) / 2}" transform="rotate(-90 14 {(y0 + y1) / 2})" '
            f'text-anchor="middle">{escape(label)}{" (log)" if logy else ""}</text>'
        )
        for frac in (0.0, 0.5, 1.0):
            v = lo + frac * (hi - lo)
            y = y0 - frac * (y0 - y1)
            shown = 10**v if logy else v
            out.append(f'<text x="{x0 - 4}" y="{y + 4}" text-anchor="end">{_fmt(shown)}</text>')
        out.append(f'<text x="{x1}" y="{y0 + 14}" text-anchor="end">step {n - 1}</text>')
        for i, (name, s) in enumerate(series.items()):
            color = COLORS[i % len(COLORS)]
            pts: list[str] = []
            segs: list[list[str]] = []
            for j, v in enumerate(s):
                t = tr(v)
                if t is None:
                    if pts:
                        segs.append(pts)
                    pts = []
                    continue
                x = x0 + (x1 - x0) * (j / max(n - 1, 1))
                y = y0 - (y0 - y1) * (t - lo) / (hi - lo)
                pts.append(f"{x:.1f},{y:.1f}")
            if pts:
                segs.append(pts)
            for seg in segs:
                out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.3" points="{" ".join(seg)}"/>')
            ly = y1 + 14 + 14 * i
            out.append(
                f'<line x1="{x1 + 10}" y1="{ly - 4}" x2="{x1 + 28}" y2="{ly - 4}" stroke="{color}" '
                f'stroke-width="2"/><text x="{x1 + 32}" y="{ly}">{escape(name)}</text>'
            )
    out.append("</svg>")
    return "\n".join(out)


def _axis(vals: list[float], log: bool) -> tuple[float, float]:
    t = [math.log10(v) if log else v for v in vals if math.isfinite(v) and (v > 0 or not log)]
    if not t:
        return 0.0, 1.0
    lo, hi = min(t), max(t)
    if hi == lo:
        hi, lo = hi + 0.5, lo - 0.5
    pad = (hi - lo) * 0.05
    if not log and lo >= 0:  # counts and rates: the axis never dips below zero
        return max(0.0, lo - pad), hi + pad
    return lo - pad, hi + pad


def _ticks(lo: float, hi: float, log: bool, integers: bool = False) -> list[tuple[float, str]]:
    if integers:  # counts (chips): whole numbers only, about six of them
        a, b = math.ceil(10**lo if log else lo), math.floor(10**hi if log else hi)
        if b < a:
            return []
        if log:
            vals = sorted({v for e in range(0, int(math.log2(max(b, 1))) + 1) for v in (2**e,) if a <= v <= b})
        else:
            step = max(1, math.ceil((b - a) / 6))
            vals = list(range(a, b + 1, step))
        return [(math.log10(v) if log else float(v), str(v)) for v in vals]
    if log:
        return [(float(e), _fmt(10.0**e)) for e in range(math.ceil(lo), math.floor(hi) + 1)] or [(lo, _fmt(10**lo))]
    return [(lo + f * (hi - lo), _fmt(lo + f * (hi - lo))) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]


def xy_chart(
    title: str,
    xlabel: str,
    ylabel: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    logx: bool = False,
    logy: bool = False,
    lines: bool = False,
    highlight: list[tuple[float, float, str]] = (),  # type: ignore[assignment]
    marked: list[tuple[float, float]] = (),  # type: ignore[assignment]
    marked_label: str = "",
    guides: dict[str, list[tuple[float, float]]] | None = None,
    integer_x: bool = False,
    width: int = 720,
    height: int = 360,
) -> str:
    """A scatter (or line) chart: series name -> points.

    highlight: points marked with a numbered ring, their labels listed in the legend (a label
    beside the point would cover its neighbours); marked: points ringed without a label, named
    once in the legend by `marked_label` (e.g. the Pareto front); guides: dashed reference lines,
    each labelled at its middle (a roofline's roofs); integer_x: whole-number ticks (chip counts)."""
    pl, pr, pt, pb = 70, 180, 30, 45
    x0, x1, y0, y1 = pl, width - pr, height - pb, pt
    pts = [p for s in series.values() for p in s] + [(x, y) for x, y, _ in highlight] + list(marked)
    for g in (guides or {}).values():
        pts += g
    xlo, xhi = _axis([p[0] for p in pts], logx)
    ylo, yhi = _axis([p[1] for p in pts], logy)

    def px(v: float) -> float | None:
        if not math.isfinite(v) or (logx and v <= 0):
            return None
        t = math.log10(v) if logx else v
        return x0 + (x1 - x0) * (t - xlo) / (xhi - xlo)

    def py(v: float) -> float | None:
        if not math.isfinite(v) or (logy and v <= 0):
            return None
        t = math.log10(v) if logy else v
        return y0 - (y0 - y1) * (t - ylo) / (yhi - ylo)

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11" class="chart"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{(x0 + x1) / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
        f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="none" stroke="#888"/>',
    ]
    for t, lab in _ticks(xlo, xhi, logx, integer_x):
        x = x0 + (x1 - x0) * (t - xlo) / (xhi - xlo)
        out.append(f'<text x="{x:.1f}" y="{y0 + 14}" text-anchor="middle">{escape(lab)}</text>')
    for t, lab in _ticks(ylo, yhi, logy):
        y = y0 - (y0 - y1) * (t - ylo) / (yhi - ylo)
        out.append(f'<text x="{x0 - 4}" y="{y + 4:.1f}" text-anchor="end">{escape(lab)}</text>')
    out.append(
        f'<text x="{(x0 + x1) / 2}" y="{height - 8}" text-anchor="middle">{escape(xlabel)}'
        f"{' (log)' if logx else ''}</text>"
    )
    out.append(
        f'<text x="14" y="{(y0 + y1) / 2}" transform="rotate(-90 14 {(y0 + y1) / 2})" text-anchor="middle">'
        f"{escape(ylabel)}{' (log)' if logy else ''}</text>"
    )
    for name, g in (guides or {}).items():
        coords = [(px(x), py(y)) for x, y in g]
        seg = " ".join(f"{a:.1f},{b:.1f}" for a, b in coords if a is not None and b is not None)
        out.append(
            f'<polyline fill="none" stroke="#444" stroke-dasharray="4 3" points="{seg}"><title>'
            f"{escape(name)}</title></polyline>"
        )
        good = [(a, b) for a, b in coords if a is not None and b is not None]
        if len(good) >= 2:  # the label at the middle of the line, just above it
            (ax, ay), (bx, by) = good[0], good[-1]
            out.append(
                f'<text x="{(ax + bx) / 2:.1f}" y="{(ay + by) / 2 - 6:.1f}" text-anchor="middle" fill="#444">'
                f"{escape(name)}</text>"
            )
    for i, (name, s) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        coords = [(px(x), py(y)) for x, y in s]
        good = [(a, b) for a, b in coords if a is not None and b is not None]
        if lines and good:
            seg = " ".join(f"{a:.1f},{b:.1f}" for a, b in good)
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{seg}"/>')
        for a, b in good:
            out.append(f'<circle cx="{a:.1f}" cy="{b:.1f}" r="2.6" fill="{color}" fill-opacity="0.7"/>')
        ly = y1 + 12 + 13 * i
        out.append(
            f'<circle cx="{x1 + 14}" cy="{ly - 4}" r="4" fill="{color}"/>'
            f'<text x="{x1 + 22}" y="{ly}">{escape(name)}</text>'
        )
    row = len(series)
    if marked:
        for mx, my in marked:
            ma, mb = px(mx), py(my)
            if ma is not None and mb is not None:
                out.append(f'<circle cx="{ma:.1f}" cy="{mb:.1f}" r="5" fill="none" stroke="#555" stroke-width="1"/>')
        ly = y1 + 12 + 13 * row
        out.append(
            f'<circle cx="{x1 + 14}" cy="{ly - 4}" r="5" fill="none" stroke="#555"/>'
            f'<text x="{x1 + 22}" y="{ly}">{escape(marked_label)}</text>'
        )
        row += 1
    for i, (hx, hy, lab) in enumerate(highlight, 1):
        ha, hb = px(hx), py(hy)
        if ha is not None and hb is not None:
            out.append(
                f'<circle cx="{ha:.1f}" cy="{hb:.1f}" r="7" fill="none" stroke="black" stroke-width="2"/>'
                f'<text x="{ha + 8:.1f}" y="{hb - 7:.1f}" font-weight="bold" font-size="10">{i}</text>'
            )
        ly = y1 + 12 + 13 * row + 4
        out.append(f'<text x="{x1 + 8}" y="{ly}" font-weight="bold">{i}</text>')
        for j, part in enumerate(_wrap(lab, 26)):  # the right margin is 180 px: wrap long labels
            out.append(f'<text x="{x1 + 22}" y="{ly + 12 * j}">{escape(part)}</text>')
        row += len(_wrap(lab, 26))
    out.append("</svg>")
    return "\n".join(out)


def _wrap(text: str, width: int) -> list[str]:
    words, lines, cur = text.split(), [], ""
    for w in words:
        if cur and len(cur) + 1 + len(w) > width:
            lines.append(cur)
            cur = w
        else:
            cur = f"{cur} {w}".strip()
    return [*lines, cur] if cur else lines or [""]


def bar_chart(title: str, xlabel: str, bars: list[tuple[str, float]], *, width: int = 720) -> str:
    """Horizontal bars: (label, value), drawn in the order given."""
    bh, pl, pr, pt = 18, 260, 80, 30
    height = pt + bh * len(bars) + 30
    vmax = max((v for _, v in bars if math.isfinite(v)), default=1.0) or 1.0
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" '
        f'font-size="11" class="chart"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{width / 2}" y="18" text-anchor="middle" font-size="13">{escape(title)}</text>',
    ]
    for i, (label, v) in enumerate(bars):
        y = pt + i * bh
        w = (width - pl - pr) * (v / vmax if math.isfinite(v) and v > 0 else 0.0)
        out.append(
            f'<text x="{pl - 6}" y="{y + 13}" text-anchor="end">{escape(label)}</text>'
            f'<rect x="{pl}" y="{y + 2}" width="{w:.1f}" height="{bh - 5}" fill="{COLORS[0]}"/>'
            f'<text x="{pl + w + 4:.1f}" y="{y + 13}">{escape(_fmt(v))}</text>'
        )
    out.append(f'<text x="{pl}" y="{height - 8}">{escape(xlabel)}</text></svg>')
    return "\n".join(out)
