"""Pruning masks: N:M structured sparsity along a weight's reduction dimension, and unstructured masks.

N:M keeps the N highest-scoring of every M consecutive weights along the dimension a matrix unit reduces
over: a Linear weight's (out, in) rows, in groups of M along `in`, the layout NVIDIA's sparse tensor cores
and `torch.sparse.to_sparse_semi_structured` take (2:4: two of every four, the pair's positions kept as
2-bit metadata); a convolution's weight (out, in / groups, kh, kw) in groups along its input channels at
each kernel position, as NVIDIA's ASP permutes it (the implicit GEMM reduces over in x kh x kw with the
channels innermost). Scores: |W| (magnitude), or Wanda's |W| x ||X_j|| with X_j the j-th input feature's
activations over calibration data (Sun et al., 2023, "A Simple and Effective Pruning Approach for Large
Language Models"). `nm_mask_reference` is the literal loop the tests hold the fast path to.
"""

from __future__ import annotations

import math

import torch

from chipfit.errors import InputError

__all__ = [
    "check_nm",
    "nm_groups_view",
    "nm_mask",
    "nm_mask_reference",
    "unstructured_mask",
    "wanda_score",
    "wanda_score_reference",
]


def _check_pattern(n: int, m: int) -> None:
    if not (isinstance(n, int) and isinstance(m, int)) or m < 1 or not 0 < n <= m:
        raise InputError(f"an N:M pattern keeps 0 < N <= M of every M weights, got {n}:{m}")


def nm_groups_view(w: torch.Tensor) -> torch.Tensor:
    """`w` as (rows, reduction) with the reduction dimension innermost: a Linear weight as it is; a
    convolution's (out, in, *kernel) as (out x kernel positions, in)."""
    if w.dim() == 2:
        return w
    if w.dim() < 2:
        raise InputError(f"N:M sparsity applies to matrices and convolution kernels, got shape {tuple(w.shape)}")
    return w.movedim(1, -1).reshape(-1, w.shape[1])


def _from_groups_view(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if like.dim() == 2:
        return v
    moved = (like.shape[0], *like.shape[2:], like.shape[1])
    return v.reshape(moved).movedim(-1, 1)


def nm_mask(w: torch.Tensor, n: int, m: int, score: torch.Tensor | None = None) -> torch.Tensor:
    """A boolean mask of `w`'s shape keeping the n highest-`score` (default |w|) weights of every m
    consecutive along the reduction dimension. Ties keep the earlier position. The reduction length must
    be a multiple of m (as sparse kernels require)."""
    _check_pattern(n, m)
    s = (w.abs() if score is None else score).detach()
    if s.shape != w.shape:
        raise InputError(f"a score must have the weight's shape {tuple(w.shape)}, got {tuple(s.shape)}")
    v = nm_groups_view(s.float())
    rows, k = v.shape
    if k % m:
        raise InputError(f"the reduction dimension ({k}) is not a multiple of M={m}: N:M kernels cannot run it")
    g = v.reshape(rows, k // m, m)
    # a stable descending order: ties keep the earlier position (sort on -score, stable)
    order = torch.sort(-g, dim=-1, stable=True).indices[..., :n]
    keep = torch.zeros_like(g, dtype=torch.bool).scatter_(-1, order, True)
    return _from_groups_view(keep.reshape(rows, k), w)


def nm_mask_reference(w: torch.Tensor, n: int, m: int, score: torch.Tensor | None = None) -> torch.Tensor:
    """nm_mask by literal loops over rows and groups (the oracle)."""
    _check_pattern(n, m)
    s = nm_groups_view((w.abs() if score is None else score).detach().float())
    out = torch.zeros(s.shape, dtype=torch.bool)
    for r in range(s.shape[0]):
        for start in range(0, s.shape[1], m):
            vals = [(float(s[r, start + j]), j) for j in range(m)]
            vals.sort(key=lambda t: (-t[0], t[1]))
            for _, j in vals[:n]:
                out[r, start + j] = True
    return _from_groups_view(out, w)


def check_nm(mask: torch.Tensor, n: int, m: int) -> bool:
    """Every group of m along the reduction dimension keeps exactly n."""
    v = nm_groups_view(mask)
    rows, k = v.shape
    return k % m == 0 and bool((v.reshape(rows, k // m, m).sum(-1) == n).all())


def unstructured_mask(w: torch.Tensor, sparsity: float, score: torch.Tensor | None = None) -> torch.Tensor:
    """Keep the (1 - sparsity) share of highest-`score` weights of the whole tensor (magnitude pruning)."""
    if not 0 <= sparsity < 1:
        raise InputError(f"sparsity is the pruned share in [0, 1), got {sparsity}")
    s = (w.abs() if score is None else score).detach().float().flatten()
    keep = s.numel() - math.floor(sparsity * s.numel())
    idx = torch.sort(-s, stable=True).indices[:keep]
    return torch.zeros(s.numel(), dtype=torch.bool).scatter_(0, idx, True).reshape(w.shape)


def wanda_score(w: torch.Tensor, input_norm: torch.Tensor) -> torch.Tensor:
    """|W| x ||X_j||: `input_norm` holds each input channel's L2 norm over the calibration activations
    (Linear: per input feature; convolution: per input channel, over batch, positions and kernel taps)."""
    if input_norm.dim() != 1 or input_norm.numel() != w.shape[1]:
        raise InputError(f"Wanda needs one norm per input channel ({w.shape[1]}), got shape {tuple(input_norm.shape)}")
    shape = (1, -1) + (1,) * (w.dim() - 2)
    return w.detach().abs() * input_norm.reshape(shape).to(w.dtype)


def wanda_score_reference(w: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """Wanda's score for a Linear weight from the raw activations `inputs` (tokens, in), element by element."""
    out = torch.empty(w.shape)
    for j in range(w.shape[1]):
        norm = math.sqrt(sum(float(x) ** 2 for x in inputs[:, j]))
        for i in range(w.shape[0]):
            out[i, j] = abs(float(w[i, j])) * norm
    return out
