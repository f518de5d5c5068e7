"""Evaluation data from a file, for models that are not built in (`chipfit plan --eval-data`).

Two formats, both holding whole arrays that are cut into batches here:
- `.pt` (torch.save, loaded with weights_only=True: tensors only, no code): a dict with
  "inputs" (a tensor, or a list/tuple of tensors for several positional inputs, first dimension
  the items) and optionally "targets" (a tensor with the same first dimension).
- `.npz` (numpy.savez): arrays "inputs" (or "inputs_0", "inputs_1", ... for several positional
  inputs) and optionally "targets".
Without targets, metrics compare with the FP32 outputs (cosine, agreement).
"""

from __future__ import annotations

from pathlib import Path

import torch

from chipfit.errors import InputError

__all__ = ["first_items", "load_batches"]

FORMATS = (".pt", ".npz")


def _bad(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path}: {why}. Expected {' or '.join(FORMATS)} holding 'inputs' (a tensor or a list of tensors, one "
        "per positional input, items first) and optionally 'targets'"
    )


def _read(path: Path) -> tuple[list[torch.Tensor], torch.Tensor | None]:
    if path.suffix == ".npz":
        import numpy as np

        with np.load(path, allow_pickle=False) as z:
            keys = set(z.files)
            if "inputs" in keys:
                inputs = [torch.from_numpy(z["inputs"])]
            else:
                inputs = [torch.from_numpy(z[f"inputs_{i}"]) for i in range(len(keys)) if f"inputs_{i}" in keys]
            targets = torch.from_numpy(z["targets"]) if "targets" in keys else None
        return inputs, targets
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle errors come in many types
        raise _bad(path, f"torch.load failed ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or "inputs" not in obj:
        raise _bad(path, "no 'inputs'")
    raw = obj["inputs"]
    inputs = [raw] if isinstance(raw, torch.Tensor) else list(raw) if isinstance(raw, (list, tuple)) else []
    return inputs, obj.get("targets")


Batch = tuple[tuple[torch.Tensor, ...], torch.Tensor | None]


def first_items(batches: list[Batch], n: int) -> list[Batch]:
    """The first `n` items of `batches` exactly (the last batch cut short); all when n >= their total."""
    if n < 1:
        raise InputError(f"the item limit must be a positive integer, got {n}")
    out: list[Batch] = []
    left = n
    for inputs, target in batches:
        if left <= 0:
            break
        k = min(left, inputs[0].shape[0])
        out.append((tuple(t[:k] for t in inputs), None if target is None else target[:k]))
        left -= k
    return out


def load_batches(path: str | Path, batch: int) -> list[tuple[tuple[torch.Tensor, ...], torch.Tensor | None]]:
    """(inputs, targets) batches of `batch` items from a .pt or .npz file (see the module doc)."""
    p = Path(path)
    if p.suffix not in FORMATS:
        raise _bad(p, f"unknown suffix {p.suffix!r}")
    if not p.is_file():
        raise _bad(p, "no such file")
    if batch < 1:
        raise InputError(f"batch must be a positive integer, got {batch}")
    inputs, targets = _read(p)
    if not inputs or not all(isinstance(t, torch.Tensor) and t.dim() >= 1 for t in inputs):
        raise _bad(p, "'inputs' is not a tensor or a list of tensors with an item dimension")
    n = inputs[0].shape[0]
    if any(t.shape[0] != n for t in inputs) or (targets is not None and targets.shape[0] != n):
        raise _bad(p, "inputs and targets disagree on the number of items")
    if n == 0:
        raise _bad(p, "no items")
    inputs = [t.float() if t.is_floating_point() else t for t in inputs]
    return [
        (tuple(t[i : i + batch] for t in inputs), None if targets is None else targets[i : i + batch])
        for i in range(0, n, batch)
    ]
