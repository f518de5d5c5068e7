"""N:M and unstructured masks: exact patterns along the reduction dimension, the fast path against the
literal reference, Wanda's score against its definition, torch's own 2:4 layout check."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from chipfit.errors import InputError
from chipfit.sparsity import (
    check_nm,
    nm_mask,
    nm_mask_reference,
    unstructured_mask,
    wanda_score,
    wanda_score_reference,
)

PATTERNS = [(2, 4), (1, 4), (4, 8), (1, 2), (3, 4), (4, 4)]


@settings(max_examples=40, deadline=None, derandomize=True)
@given(
    nm=st.sampled_from(PATTERNS),
    shape=st.sampled_from([(8, 16), (3, 8), (16, 8, 3, 3), (4, 16, 1, 1), (6, 8, 5), (1, 32)]),
    seed=st.integers(0, 2**16),
    ties=st.booleans(),
)
def test_masks_are_exact_and_match_the_reference(nm: tuple[int, int], shape: tuple[int, ...], seed: int,
                                                 ties: bool) -> None:  # fmt: skip
    n, m = nm
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=g)
    if ties:  # few distinct values: the tie rule decides
        w = torch.round(w * 2) / 2
    mask = nm_mask(w, n, m)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    assert check_nm(mask, n, m)
    assert torch.equal(mask, nm_mask_reference(w, n, m))
    # along the input channels: every (out, kernel position) keeps n of each m consecutive input channels
    if w.dim() == 4:
        per = mask.permute(0, 2, 3, 1).reshape(-1, shape[1] // m, m).sum(-1)
        assert bool((per == n).all())
    # what is kept dominates what is pruned, group by group
    v = w.abs().movedim(1, -1).reshape(-1, m) if w.dim() > 2 else w.abs().reshape(-1, m)
    k = mask.movedim(1, -1).reshape(-1, m) if w.dim() > 2 else mask.reshape(-1, m)
    for vals, keep in zip(v, k, strict=True):
        if (~keep).any():
            assert vals[keep].min() >= vals[~keep].max()


def test_linear_layout_is_torchs_semi_structured_layout() -> None:
    """torch's own compressor for the 2:4 sparse tensor-core layout (values plus 2-bit metadata, the one
    `to_sparse_semi_structured` builds on CUDA; its CPU conversion is torch's private module) keeps every
    pruned weight exactly, and a dense one not."""
    from torch.sparse._semi_structured_conversions import (
        sparse_semi_structured_from_dense_cutlass as compress,
    )
    from torch.sparse._semi_structured_conversions import (
        sparse_semi_structured_to_dense_cutlass as expand,
    )

    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    pruned = (w * nm_mask(w, 2, 4)).half()
    values, meta = compress(pruned)
    assert values.shape == (64, 64)  # half the values kept
    assert torch.equal(expand(values, meta), pruned)
    dense = w.half()
    assert not torch.equal(expand(*compress(dense)), dense)


def test_wanda_score_matches_its_definition() -> None:
    g = torch.Generator().manual_seed(1)
    w, x = torch.randn(6, 8, generator=g), torch.randn(50, 8, generator=g)
    score = wanda_score(w, x.norm(dim=0))
    torch.testing.assert_close(score, wanda_score_reference(w, x))
    # a channel whose inputs are large protects its weights: scale channel 0 up and it is always kept
    x2 = x.clone()
    x2[:, 0] *= 1e3
    mask = nm_mask(w, 2, 4, wanda_score(w, x2.norm(dim=0)))
    assert bool(mask[:, 0].all())
    conv = torch.randn(4, 8, 3, 3, generator=g)
    assert wanda_score(conv, torch.ones(8)).shape == conv.shape


def test_unstructured_keeps_the_largest_share() -> None:
    w = torch.arange(1.0, 101.0).reshape(10, 10)
    mask = unstructured_mask(w, 0.3)
    assert int(mask.sum()) == 70 and bool(mask.flatten()[30:].all()) and not bool(mask.flatten()[:30].any())


def test_bad_patterns_and_shapes_are_named() -> None:
    with pytest.raises(InputError, match="keeps 0 < N <= M"):
        nm_mask(torch.randn(4, 8), 5, 4)
    with pytest.raises(InputError, match="not a multiple of M=4"):
        nm_mask(torch.randn(4, 6), 2, 4)
    with pytest.raises(InputError, match="matrices and convolution kernels"):
        nm_mask(torch.randn(8), 2, 4)
    with pytest.raises(InputError, match="one norm per input channel"):
        wanda_score(torch.randn(4, 8), torch.ones(4))
    with pytest.raises(InputError, match=r"pruned share in \[0, 1\)"):
        unstructured_mask(torch.randn(4, 4), 1.0)
