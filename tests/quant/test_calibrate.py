"""Histogram thresholds against the slow literal references, and the streaming histogram."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from chipfit.quant import Histogram, Observer, QuantSpec
from chipfit.quant.calibrate import entropy_amax, mse_amax, percentile_amax
from chipfit.quant.modules import TensorQuant
from chipfit.quant.reference import entropy_amax_reference, mse_amax_reference, percentile_amax_reference


def _hist(kind: str, seed: int, bins: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "gauss":
        x = np.abs(rng.normal(size=20000))
    elif kind == "relu":  # many exact zeros, a long tail
        x = np.maximum(rng.standard_t(3, size=20000), 0)
    else:  # sparse: empty bins inside the range
        x = np.abs(rng.choice([0.1, 0.5, 2.0, 7.5], size=5000) + rng.normal(scale=0.01, size=5000))
    counts, edges = np.histogram(x, bins=bins, range=(0, x.max()))
    return counts.astype(np.float64), edges


CASES = [(k, s, b) for k in ("gauss", "relu", "sparse") for s in (0, 1) for b in (160, 300)]


@pytest.mark.parametrize(("kind", "seed", "bins"), CASES)
def test_entropy_equals_reference(kind: str, seed: int, bins: int) -> None:
    c, e = _hist(kind, seed, bins)
    assert entropy_amax(c, e) == entropy_amax_reference(c, e)


@pytest.mark.parametrize(("kind", "seed", "bins"), CASES)
@pytest.mark.parametrize("p", [99.0, 99.9, 99.99])
def test_percentile_equals_reference(kind: str, seed: int, bins: int, p: float) -> None:
    c, e = _hist(kind, seed, bins)
    assert percentile_amax(c, e, p) == percentile_amax_reference(c, e, p)


@pytest.mark.parametrize(("kind", "seed", "bins"), CASES[::2])
@pytest.mark.parametrize("fmt", ["int8", "float8_e4m3fn"])
def test_mse_equals_reference(kind: str, seed: int, bins: int, fmt: str) -> None:
    c, e = _hist(kind, seed, bins)
    fq = TensorQuant(QuantSpec(fmt), "activation")._np_fake_quant
    assert mse_amax(c, e, fq) == mse_amax_reference(c, e, fq)


def test_entropy_clips_a_long_tail_and_keeps_a_compact_range() -> None:
    c, e = _hist("relu", 0, 2048)
    assert entropy_amax(c, e) < 0.5 * e[-1]  # t(3) tail: the KL cut sits well inside the range
    g = np.ones(2048)
    assert entropy_amax(g, np.linspace(0, 1, 2049)) == 1.0  # uniform: nothing worth clipping


def test_histogram_grows_by_whole_bins_of_the_same_width() -> None:
    h = Histogram()
    h.add(torch.tensor([0.0, 1.0, 2.0]))
    assert len(h.counts) == 2048 and h.width == 2.0 / 2048
    h.add(torch.tensor([3.0]))
    assert len(h.counts) == 3072 and h.width == 2.0 / 2048  # 3.0 / width = 3072 bins
    assert h.counts.sum() == 4 and h.counts[0] == 1


def test_observer_methods_and_errors() -> None:
    x = torch.cat([torch.randn(10000, generator=torch.Generator().manual_seed(0)), torch.tensor([50.0])])
    full = Observer("minmax")
    full.observe(x)
    assert full.amax() == 50.0
    pct = Observer("percentile", percentile=99.9)
    pct.observe(x)
    assert pct.amax() < 5.0  # the outlier is clipped
    mov = Observer("moving-minmax", momentum=0.5)
    mov.observe(torch.tensor([-1.0, 1.0]))
    mov.observe(torch.tensor([-3.0, 3.0]))
    assert mov.range() == (-2.0, 2.0)
    with pytest.raises(ValueError, match="known: minmax, moving-minmax"):
        Observer("kl")
    with pytest.raises(ValueError, match="saw no data"):
        Observer("entropy").amax()
    assert math.isfinite(Observer("entropy").hist.width)


def test_a_calibrator_is_one_registered_handler() -> None:
    from chipfit.quant.calibrate import CALIBRATORS, Calibrator, register_calibrator

    assert list(CALIBRATORS) == ["minmax", "moving-minmax", "percentile", "entropy", "mse"]
    with pytest.raises(ValueError, match="calibrator 'entropy' is already registered"):
        register_calibrator(Calibrator("entropy"))
    with pytest.raises(ValueError, match="unknown calibrator 'p50'; known: minmax, moving-minmax"):
        Observer("p50")
    try:
        # the median of |x| as the threshold: the histogram's 50th percentile edge
        register_calibrator(Calibrator("p50", threshold=lambda o: percentile_amax(o.hist.counts, o.hist.edges, 50)))
        QuantSpec("int8", "tensor", calibrator="p50")  # the config accepts it
        obs = Observer("p50")
        obs.observe(torch.arange(-1000, 1001, dtype=torch.float32))
        assert obs.calibrator.histogram and 490 <= obs.amax() <= 510  # half of max |x| = 1000
    finally:
        CALIBRATORS.pop("p50", None)
