"""Structured sparsity (issue 22, in progress): N:M and unstructured pruning masks (`masks`) and the
in-place entry point `sparsify_` with mask-preserving parametrizations (`prune`)."""

from chipfit.sparsity.masks import (
    check_nm,
    nm_mask,
    nm_mask_reference,
    unstructured_mask,
    wanda_score,
    wanda_score_reference,
)
from chipfit.sparsity.prune import LayerSparsity, Method, Pattern, SparsityReport, remove_masks, sparsify_

__all__ = [
    "LayerSparsity",
    "Method",
    "Pattern",
    "SparsityReport",
    "check_nm",
    "nm_mask",
    "nm_mask_reference",
    "remove_masks",
    "sparsify_",
    "unstructured_mask",
    "wanda_score",
    "wanda_score_reference",
]
