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
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" '
           f'font-size="11"><rect width="100%" height="100%" fill="white"/>',
           f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>']  # fmt: skip
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
        out.append(f'<text x="14" y="{(y0 + y1) / 2}" transform="rotate(-90 14 {(y0 + y1) / 2})" '
                   f'text-anchor="middle">{escape(label)}{" (log)" if logy else ""}</text>')  # fmt: skip
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
            out.append(f'<line x1="{x1 + 10}" y1="{ly - 4}" x2="{x1 + 28}" y2="{ly - 4}" stroke="{color}" '
                       f'stroke-width="2"/><text x="{x1 + 32}" y="{ly}">{escape(name)}</text>')  # fmt: skip
    out.append("</svg>")
    return "\n".join(out)
