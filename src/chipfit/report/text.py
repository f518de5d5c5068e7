"""Numbers for people: one formatter per unit, so every table and reason reads the same."""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["PERCENT_METRICS", "MetricUnit", "metric_unit", "seconds_text"]

_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def seconds_text(s: float) -> str:
    """A duration in the largest unit that keeps it at least 1: 8.1e-06 -> '8.1 µs', 0.0123 -> '12.3 ms'."""
    if not math.isfinite(s) or s <= 0:
        return f"{s:g} s"
    for scale, unit in _UNITS:
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


@dataclass(frozen=True)
class MetricUnit:
    """The one unit a metric is shown in, everywhere (flags, tables, JSON keys, reasons).

    Top-1 and agreement are fractions inside chipfit and shown as percent, their drops in
    percentage points; cosine similarity is shown as itself, its drop in cosine units. JSON keys
    name the unit: `accuracy_percent` / `accuracy_drop_points`, or `accuracy_cosine` /
    `accuracy_drop_cosine`."""

    metric: str
    scale: float  # shown = internal x scale
    value_unit: str  # "percent" | "cosine"
    drop_unit: str  # "points" | "cosine"

    def shown(self, v: float | None) -> float | None:
        """An internal value (a fraction for top-1) in the unit people and JSON see."""
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else v * self.scale

    def internal(self, v: float | None) -> float | None:
        """A value a user gave (a flag) in the shown unit, back to chipfit's internal one."""
        return None if v is None else v / self.scale

    def key(self, name: str, *, drop: bool = False) -> str:
        """`accuracy` -> `accuracy_percent`; with drop, `accuracy_drop` -> `accuracy_drop_points`."""
        return f"{name}_{self.drop_unit if drop else self.value_unit}"

    def value_text(self, v: float | None) -> str:
        s = self.shown(v)
        if s is None:
            return "-" if v is None else "nan"
        return f"{s:.2f} %" if self.value_unit == "percent" else f"{s:.6f}"

    def drop_text(self, d: float | None, *, signed: bool = False) -> str:
        s = self.shown(d)
        if s is None:
            return "-"
        s = round(s, 6) or 0.0  # no "-0" from float noise
        sign = "+" if signed else ""
        return f"{s:{sign}.2f} pt" if self.drop_unit == "points" else f"{s:{sign}.3g}"


PERCENT_METRICS = ("top1", "agreement")


def metric_unit(metric: str) -> MetricUnit:
    """The unit of a metric name (top1, agreement, cosine, or a custom metric: shown as itself)."""
    if metric in PERCENT_METRICS:
        return MetricUnit(metric, 100.0, "percent", "points")
    return MetricUnit(
        metric, 1.0, "cosine" if metric == "cosine" else "value", "cosine" if metric == "cosine" else "value"
    )
