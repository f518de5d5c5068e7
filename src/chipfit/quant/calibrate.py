"""Calibrators: the clipping threshold (amax) of a tensor from the values seen on calibration data.

The histogram calibrators follow TensorRT as pytorch-quantization and ModelOpt implement it
(shared/reference/calibration.md, section 1.2):

- |x| histogram: on the first batch 2048 equal-width bins over [0, max|x|]; a later batch
  reaching beyond the top edge appends bins of the same width (old counts stay valid).
- entropy: zero-bin suppression (bin 0 takes bin 1's count); for every cut i from 128 to the
  number of bins, P = the first i bins with the clipped mass added to bin i-1, Q = those bins
  merged into 2^(bits-1) groups, each group's sum spread over its non-empty bins; KL(P||Q);
  the last arg-min wins and amax = the right edge of the last kept bin.
- percentile: the left edge of the first bin whose CDF reaches p/100 (default 99.99).
- mse: every bin centre from bin 128 up is tried as amax; the fake-quantized centres are
  weighted by the counts; the first arg-min of the mean squared error wins.

Min-max and moving-average min-max (torch.ao's averaging constant 0.01) keep running extremes.
`reference.py` holds slow, literal versions of the three searches; the tests compare them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from chipfit.errors import InputError

__all__ = [
    "CALIBRATORS",
    "Calibrator",
    "Histogram",
    "Observer",
    "entropy_amax",
    "make_observer",
    "mse_amax",
    "percentile_amax",
    "register_calibrator",
]

NUM_BINS = 2048
START_BIN = 128


@dataclass
class Histogram:
    """A streaming histogram of |x| with equal-width bins starting at 0."""

    num_bins: int = NUM_BINS
    counts: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.float64))
    width: float = 0.0

    @property
    def edges(self) -> np.ndarray:
        return np.arange(len(self.counts) + 1, dtype=np.float64) * self.width

    def add(self, x: torch.Tensor) -> None:
        a = x.detach().abs().float().reshape(-1)
        a = a[torch.isfinite(a)]
        if not a.numel():
            return
        top = float(a.max())
        if self.width == 0.0:
            if top == 0.0:
                self.counts = np.zeros(1) if not len(self.counts) else self.counts
                self.counts[0] += a.numel()  # all zeros so far: kept until a range exists
                return
            zeros = float(self.counts.sum())
            self.width = top / self.num_bins
            self.counts = np.zeros(self.num_bins, dtype=np.float64)
            self.counts[0] += zeros
        n = len(self.counts)
        if top > n * self.width:
            grow = math.ceil(top / self.width) - n
            self.counts = np.concatenate([self.counts, np.zeros(grow)])
            n += grow
        h = torch.histc(a, bins=n, min=0.0, max=n * self.width)
        self.counts += h.double().numpy()


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    """KL(p || q) of two unnormalised distributions (scipy.stats.entropy's convention)."""
    p = p / p.sum()
    q = q / q.sum()
    nz = p > 0
    if np.any(q[nz] == 0):
        return math.inf
    return float(np.sum(p[nz] * np.log(p[nz] / q[nz])))


def entropy_amax(counts: np.ndarray, edges: np.ndarray, bits: int = 8, unsigned: bool = False,
                 start_bin: int = START_BIN, stride: int = 1) -> float:  # fmt: skip
    """TensorRT's KL-divergence threshold (vectorised over each cut's bins)."""
    bins = counts.astype(np.float64).copy()
    if len(bins) < 2:
        return float(edges[-1])
    bins[0] = bins[1]
    total = bins.sum()
    levels = 1 << (bits - 1 + int(unsigned))
    start = min(start_bin, len(bins))
    best, best_i = math.inf, len(bins)
    csum = np.concatenate([[0.0], np.cumsum(bins)])
    for i in range(start, len(bins) + 1, stride):
        group = np.digitize(np.arange(i), np.linspace(0, i, num=levels + 1)) - 1
        kept = bins[:i]
        nonempty = kept != 0
        sums = np.bincount(group[nonempty], weights=kept[nonempty], minlength=levels)
        sizes = np.bincount(group[nonempty], minlength=levels)
        q = np.where(nonempty, (sums / np.maximum(sizes, 1))[group], 0.0)
        p = kept.copy()
        p[-1] += total - csum[i]
        kl = _kl(p, q) if q.sum() > 0 else math.inf
        if kl <= best:  # the last arg-min wins
            best, best_i = kl, i
    return float(edges[best_i])


def percentile_amax(counts: np.ndarray, edges: np.ndarray, percentile: float = 99.99) -> float:
    if not 0 < percentile <= 100:
        raise InputError(f"percentile must be in (0, 100], got {percentile}")
    cdf = np.cumsum(counts / counts.sum())
    idx = int(np.searchsorted(cdf, percentile / 100))
    return float(edges[min(idx, len(edges) - 1)])


def mse_amax(counts: np.ndarray, edges: np.ndarray, fake_quant: Callable[[np.ndarray, float], np.ndarray],
             start_bin: int = START_BIN) -> float:  # fmt: skip
    """The bin centre (from start_bin up) that minimises the count-weighted squared error."""
    centers = (edges[1:] + edges[:-1]) / 2
    best, best_amax = math.inf, float(centers[-1]) if len(centers) else 0.0
    for i in range(min(start_bin, max(len(centers) - 1, 0)), len(centers)):
        amax = float(centers[i])
        mse = float(np.mean((fake_quant(centers, amax) - centers) ** 2 * counts))
        if mse < best:  # the first arg-min wins
            best, best_amax = mse, amax
    return best_amax


@dataclass(frozen=True)
class Calibrator:
    """A calibration method as data: what it keeps while observing and how it picks amax.

    moving_average: running extremes follow a moving average (torch.ao's MovingAverageMinMax)
      instead of the overall min and max.
    threshold: amax from the observer's |x| histogram (which it then keeps); None: max |x|."""

    name: str
    moving_average: bool = False
    threshold: Callable[[Observer], float] | None = None

    @property
    def histogram(self) -> bool:
        return self.threshold is not None


CALIBRATORS: dict[str, Calibrator] = {}


def register_calibrator(c: Calibrator) -> Calibrator:
    """Add a calibration method: QuantSpec(calibrator=name), the recipes and the CLI pick it up."""
    if c.name in CALIBRATORS:
        raise InputError(f"calibrator {c.name!r} is already registered")
    CALIBRATORS[c.name] = c
    return c


class Observer:
    """Watches a tensor over calibration batches and gives its clipping range (lo, hi)."""

    def __init__(self, method: str, *, percentile: float = 99.99, momentum: float = 0.01, bits: int = 8,
                 fake_quant: Callable[[np.ndarray, float], np.ndarray] | None = None) -> None:  # fmt: skip
        if method not in CALIBRATORS:
            raise InputError(f"unknown calibrator {method!r}; known: {', '.join(CALIBRATORS)}")
        self.method = method
        self.calibrator = CALIBRATORS[method]
        self.percentile = percentile
        self.momentum = momentum
        self.bits = bits
        self.fake_quant = fake_quant
        self.lo: float | None = None
        self.hi: float | None = None
        self.hist = Histogram()
        self.batches = 0

    def observe(self, x: torch.Tensor) -> None:
        x = x.detach()
        if not x.numel():
            return
        lo, hi = float(x.min()), float(x.max())
        self.batches += 1
        if self.lo is None or self.hi is None:
            self.lo, self.hi = lo, hi
        elif self.calibrator.moving_average:
            self.lo += self.momentum * (lo - self.lo)
            self.hi += self.momentum * (hi - self.hi)
        else:
            self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        if self.calibrator.histogram:
            self.hist.add(x)

    def amax(self) -> float:
        """The symmetric clipping threshold."""
        if self.lo is None or self.hi is None:
            raise InputError("observer saw no data: run calibration batches through the model first")
        full = max(abs(self.lo), abs(self.hi))
        if self.calibrator.threshold is None or self.hist.width == 0.0:
            return full
        return min(self.calibrator.threshold(self), full)

    def range(self) -> tuple[float, float]:
        """(lo, hi) for asymmetric quantization: histogram methods clip both ends to their amax."""
        if self.lo is None or self.hi is None:
            raise InputError("observer saw no data: run calibration batches through the model first")
        if not self.calibrator.histogram:
            return self.lo, self.hi
        a = self.amax()
        return max(self.lo, -a), min(self.hi, a)


def _mse(o: Observer) -> float:
    if o.fake_quant is None:
        raise InputError("the mse calibrator needs the format's fake_quant")
    return mse_amax(o.hist.counts, o.hist.edges, o.fake_quant)


for _c in [
    Calibrator("minmax"),
    Calibrator("moving-minmax", moving_average=True),
    Calibrator("percentile", threshold=lambda o: percentile_amax(o.hist.counts, o.hist.edges, o.percentile)),
    Calibrator("entropy", threshold=lambda o: entropy_amax(o.hist.counts, o.hist.edges, bits=o.bits)),
    Calibrator("mse", threshold=_mse),
]:
    register_calibrator(_c)


def make_observer(method: str, **kw: object) -> Observer:
    return Observer(method, **kw)  # type: ignore[arg-type]
