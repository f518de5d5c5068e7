"""Structured sparsity (issue 22, in progress): N:M and unstructured pruning masks (`masks`)."""

from chipfit.sparsity.masks import (
    check_nm,
    nm_mask,
    nm_mask_reference,
    unstructured_mask,
    wanda_score,
    wanda_score_reference,
)

__all__ = ["check_nm", "nm_mask", "nm_mask_reference", "unstructured_mask", "wanda_score", "wanda_score_reference"]
