"""Numbers for people: one formatter per unit, so every table and reason reads the same."""

from __future__ import annotations

import math

__all__ = ["seconds_text"]

_UNITS = ((1.0, "s"), (1e-3, "ms"), (1e-6, "µs"), (1e-9, "ns"))


def seconds_text(s: float) -> str:
    """A duration in the largest unit that keeps it at least 1: 8.1e-06 -> '8.1 µs', 0.0123 -> '12.3 ms'."""
    if not math.isfinite(s) or s <= 0:
        return f"{s:g} s"
    for scale, unit in _UNITS:
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"
