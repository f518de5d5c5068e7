"""Structured sparsity: N:M and unstructured pruning masks (`masks`), the in-place entry point `sparsify_`
with mask-preserving parametrizations and the dense-layer rule (`prune`), mask-preserving fine-tuning
under a chip's numerics (`finetune`). What a pruned GEMM costs is `chipfit.cost.sparse`."""

from chipfit.cost.sparse import SparseLayers
from chipfit.sparsity.masks import (
    check_nm,
    nm_mask,
    nm_mask_reference,
    unstructured_mask,
    wanda_score,
    wanda_score_reference,
)
from chipfit.sparsity.prune import (
    LayerSparsity,
    Method,
    Pattern,
    SparsityReport,
    dense_layers,
    remove_masks,
    sparse_layers,
    sparsify_,
)

__all__ = [
    "LayerSparsity",
    "Method",
    "Pattern",
    "SparseLayers",
    "SparsityReport",
    "check_nm",
    "dense_layers",
    "nm_mask",
    "nm_mask_reference",
    "remove_masks",
    "sparse_layers",
    "sparsify_",
    "unstructured_mask",
    "wanda_score",
    "wanda_score_reference",
]
