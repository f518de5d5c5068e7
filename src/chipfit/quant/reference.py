"""Slow, literal versions of the histogram threshold searches (the tests' oracles).

Written as ModelOpt's `calib/histogram.py` reads (calibration.md 1.2, 1.4): Python loops over
bins and groups, no vectorisation, so a reader can check them line by line.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import numpy as np

__all__ = ["entropy_amax_reference", "mse_amax_reference", "percentile_amax_reference"]


def entropy_amax_reference(counts: np.ndarray, edges: np.ndarray, bits: int = 8, start_bin: int = 128) -> float:
    bins = [float(c) for c in counts]
    bins[0] = bins[1]
    total = sum(bins)
    levels = 2 ** (bits - 1)
    divergences: list[float] = []
    cuts: list[int] = []
    for i in range(start_bin, len(bins) + 1):
        space = np.linspace(0, i, num=levels + 1)
        group = [int(np.digitize(j, space)) - 1 for j in range(i)]
        group = [g if bins[j] != 0 else -1 for j, g in enumerate(group)]
        sums = [0.0] * levels
        for j, g in enumerate(group):
            if g != -1:
                sums[g] += bins[j]
        sizes = Counter(g for g in group if g != -1)
        q = [sums[g] / sizes[g] if g != -1 else 0.0 for g in group]
        p = bins[:i]
        p[-1] += sum(bins[i:])
        sp, sq = sum(p), sum(q)
        kl = 0.0
        for pj, qj in zip(p, q, strict=True):
            if pj > 0:
                kl = math.inf if qj == 0 else kl + (pj / sp) * math.log((pj / sp) / (qj / sq))
        divergences.append(kl if sq > 0 else math.inf)
        cuts.append(i)
        assert round(sum(p)) == round(total)
    best = min(divergences)
    last = max(k for k, d in enumerate(divergences) if d == best)
    return float(edges[cuts[last]])


def percentile_amax_reference(counts: np.ndarray, edges: np.ndarray, percentile: float) -> float:
    total = float(sum(counts))
    running = 0.0
    for j, c in enumerate(counts):
        running += float(c) / total
        if running >= percentile / 100:
            return float(edges[j])
    return float(edges[len(counts) - 1])


def mse_amax_reference(counts: np.ndarray, edges: np.ndarray, fake_quant: Callable[[np.ndarray, float], np.ndarray],
                       start_bin: int = 128) -> float:  # fmt: skip
    centers = [(float(edges[j]) + float(edges[j + 1])) / 2 for j in range(len(counts))]
    best, best_amax = math.inf, centers[-1]
    for i in range(start_bin, len(centers)):
        q = fake_quant(np.array(centers), centers[i])
        mse = sum((float(q[j]) - centers[j]) ** 2 * float(counts[j]) for j in range(len(centers))) / len(centers)
        if mse < best:
            best, best_amax = mse, centers[i]
    return best_amax
