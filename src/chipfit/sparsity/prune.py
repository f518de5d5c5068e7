"""`sparsify_`: prune a model's Linear and convolution weights in place to an N:M pattern (or an
unstructured share), by magnitude or by Wanda's activation-aware score, keeping the masks through later
training.

Masks are kept as `torch.nn.utils.parametrize` parametrizations (weight = original x mask), so an
optimizer step on the original never revives a pruned weight: fine-tuning keeps the pattern, the
prune-then-retrain recipe of NVIDIA's ASP. `remove_masks` bakes them in (pruned zeros, plain
parameters) before export.

Dense by default (configurable): the first and the last prunable layer (a network's input and output
layers are the most sensitive, and ASP and Wanda leave embeddings and heads dense), layers whose
reduction dimension is not a multiple of M (no sparse kernel runs them), and layers with fewer than
`min_params` weights (too small to gain).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, cast

import torch
from torch import nn
from torch.nn.utils import parametrize

from chipfit.cost.sparse import SparseLayers
from chipfit.errors import InputError
from chipfit.hardware.sparsity import Pattern
from chipfit.sparsity.masks import nm_mask, unstructured_mask, wanda_score

__all__ = [
    "LayerSparsity", "Method", "Pattern", "SparsityReport", "dense_layers", "remove_masks", "sparse_layers",
    "sparsify_",
]  # fmt: skip

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


class Method(StrEnum):
    MAGNITUDE = "magnitude"
    WANDA = "wanda"


class _Mask(nn.Module):
    mask: torch.Tensor

    def __init__(self, mask: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", mask)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


@dataclass(frozen=True)
class LayerSparsity:
    name: str
    params: int
    pruned: bool
    sparsity: float  # the zero share of the weight after pruning
    why_dense: str = ""


@dataclass(frozen=True)
class SparsityReport:
    pattern: Pattern
    method: Method
    layers: tuple[LayerSparsity, ...] = field(default=())

    @property
    def sparsity(self) -> float:
        """Zero share over every prunable layer's weights (dense ones included)."""
        total = sum(x.params for x in self.layers)
        return sum(x.params * x.sparsity for x in self.layers) / total if total else 0.0

    @property
    def pruned(self) -> SparseLayers:
        """The pruned layers, for the cost model (`estimate(sparsity=report.pruned)`)."""
        return SparseLayers(self.pattern, frozenset(x.name for x in self.layers if x.pruned))

    def as_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern.describe(), "method": self.method.value, "sparsity": self.sparsity,
                "layers": [vars(x) for x in self.layers]}  # fmt: skip


def _input_norms(model: nn.Module, layers: dict[str, nn.Module], calibrate: Iterable[Any] | Callable[[], Any],
                 ) -> dict[str, torch.Tensor]:  # fmt: skip
    """Each layer's per-input-channel L2 norm of its inputs over the calibration data (Wanda's ||X_j||)."""
    sq: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def run(mod: nn.Module, args: tuple[Any, ...]) -> None:
            x = args[0].detach().float()
            if isinstance(mod, nn.Linear):
                flat = x.reshape(-1, x.shape[-1])
            else:  # every tap of the kernel sees every input position: the per-channel sum over them
                flat = x.movedim(1, -1).reshape(-1, x.shape[1])
            s = (flat * flat).sum(0)
            sq[name] = sq.get(name, torch.zeros_like(s)) + s

        return run

    handles = [mod.register_forward_pre_hook(hook(n)) for n, mod in layers.items()]
    try:
        with torch.no_grad():
            if callable(calibrate):
                calibrate()
            else:
                for batch in calibrate:
                    model(*batch) if isinstance(batch, tuple | list) else model(batch)
    finally:
        for h in handles:
            h.remove()
    missing = [n for n in layers if n not in sq]
    if missing:
        raise InputError(f"the calibration data never reached {', '.join(missing[:3])}: Wanda needs their inputs")
    return {n: s.sqrt() for n, s in sq.items()}


def _method(method: Method | str) -> Method:
    try:
        return Method(method)
    except ValueError:
        raise InputError(f"unknown pruning method {method!r}; known: {', '.join(Method)}") from None


def dense_layers(
    model: nn.Module,
    pattern: Pattern | str = "2:4",
    *,
    dense: Iterable[str] | None = None,
    keep_ends_dense: bool = True,
    min_params: int = 256,
) -> dict[str, str]:
    """Every prunable layer's name -> why it stays dense ('' where it is pruned): the one rule that
    `sparsify_` prunes by and that `sparse_layers` prices by (see the module docstring for the defaults)."""
    pat = Pattern.parse(pattern) if isinstance(pattern, str) else pattern
    layers = {n: m for n, m in model.named_modules() if isinstance(m, PRUNABLE)}
    if not layers:
        raise InputError("no Linear or convolution layer to prune")
    asked = set(dense or ())
    unknown = asked - set(layers)
    if unknown:
        raise InputError(f"--dense names no prunable layer: {', '.join(sorted(unknown))}; prunable: "
                         f"{', '.join(layers)}")  # fmt: skip
    names = list(layers)
    why: dict[str, str] = {n: "asked" for n in asked}
    if keep_ends_dense and len(names) > 2:
        why.setdefault(names[0], "the first layer")
        why.setdefault(names[-1], "the last layer")
    for n, mod in layers.items():
        w = mod.weight
        if w.numel() < min_params:
            why.setdefault(n, f"fewer than {min_params} weights")
        elif pat.share is None and w.shape[1] % pat.m:  # the reduction dimension (nm_groups_view's)
            why.setdefault(n, f"its reduction dimension is not a multiple of {pat.m}")
    return {n: why.get(n, "") for n in names}


def sparse_layers(
    model: nn.Module,
    pattern: Pattern | str = "2:4",
    *,
    dense: Iterable[str] | None = None,
    keep_ends_dense: bool = True,
    min_params: int = 256,
) -> SparseLayers:
    """The layers `sparsify_` would prune with these arguments, for the cost model (`estimate(sparsity=)`):
    what a pruned model costs, priced on the dense one (plan --sparsity)."""
    pat = Pattern.parse(pattern) if isinstance(pattern, str) else pattern
    why = dense_layers(model, pat, dense=dense, keep_ends_dense=keep_ends_dense, min_params=min_params)
    return SparseLayers(pat, frozenset(n for n, w in why.items() if not w))


def sparsify_(
    model: nn.Module,
    pattern: Pattern | str = "2:4",
    method: Method | str = Method.MAGNITUDE,
    *,
    calibrate: Iterable[Any] | Callable[[], Any] | None = None,
    dense: Iterable[str] | None = None,
    keep_ends_dense: bool = True,
    min_params: int = 256,
) -> SparsityReport:
    """Prune `model` in place; the masks stay on as parametrizations (see `remove_masks`).

    dense: module names kept dense, beside the defaults (first and last prunable layer unless
    keep_ends_dense is False, layers whose reduction dimension M does not divide, layers under
    `min_params` weights). calibrate: batches or a callable running the model, for Wanda."""
    pat = Pattern.parse(pattern) if isinstance(pattern, str) else pattern
    meth = _method(method)
    why = dense_layers(model, pat, dense=dense, keep_ends_dense=keep_ends_dense, min_params=min_params)
    layers = {n: m for n, m in model.named_modules() if n in why}
    norms: dict[str, torch.Tensor] = {}
    if meth is Method.WANDA:
        if calibrate is None:
            raise InputError("Wanda scores weights by their inputs: pass calibrate=<batches or callable>")
        norms = _input_norms(model, {n: m for n, m in layers.items() if not why[n]}, calibrate)
    out = []
    for n, mod in layers.items():
        w = mod.weight
        if why[n]:
            out.append(LayerSparsity(n, w.numel(), False, float((w == 0).float().mean()), why[n]))
            continue
        if parametrize.is_parametrized(mod, "weight"):
            raise InputError(f"{n} is already pruned (or parametrized): call remove_masks first")
        score = wanda_score(w, norms[n]) if meth is Method.WANDA else None
        mask = nm_mask(w, pat.n, pat.m, score) if pat.share is None else unstructured_mask(w, pat.share, score)
        parametrize.register_parametrization(mod, "weight", _Mask(mask.to(w.dtype)))
        out.append(LayerSparsity(n, w.numel(), True, float((mod.weight == 0).float().mean())))
    return SparsityReport(pat, meth, tuple(out))


def remove_masks(model: nn.Module) -> nn.Module:
    """Bake the masks into plain weights (pruned entries zero), in place: for export, or to prune again.

    A deep copy of a parametrized module shares its injected class with the original, and torch's
    `remove_parametrizations` deletes the property from that class, which would strip the weight from
    every copy. Where the mask is a module's only parametrization, its class goes back to the original
    one and the baked weight becomes a plain parameter, leaving the shared class alone."""
    for mod in model.modules():
        if not (isinstance(mod, PRUNABLE) and parametrize.is_parametrized(mod, "weight")):
            continue
        plist = cast(nn.ModuleDict, mod.parametrizations)
        if set(plist.keys()) != {"weight"} or not all(
            isinstance(p, _Mask) for p in cast(nn.ModuleList, plist["weight"])
        ):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
            continue
        original = cast(torch.Tensor, plist["weight"].original)
        with torch.no_grad():
            baked = mod.weight.detach().clone()
        mod.__class__ = mod.__class__.__bases__[0]  # the class register_parametrization derived from
        del mod._modules["parametrizations"]
        mod.weight = nn.Parameter(baked, requires_grad=original.requires_grad)
    return model
