"""ONNX export of a pruned model: its masks baked in (the pruned weights are zeros in the initializers,
in the layout `torch.sparse.to_sparse_semi_structured` and TensorRT's sparse kernels take: N:M along each
weight's reduction dimension), checked in onnxruntime against the model itself."""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from chipfit.paths import atomic_path
from chipfit.sparsity.prune import remove_masks

__all__ = ["export_pruned_onnx", "onnx_weights"]

OPSET = 17


def export_pruned_onnx(model: nn.Module, sample: Sequence[Any], path: str | Path) -> dict[str, Any]:
    """Write `model` (its masks baked into a copy) as ONNX to `path`, atomically; run it in onnxruntime
    on `sample` and return {path, max_abs_diff_vs_chipfit, max_abs_output}."""
    from chipfit.quant.export import run_onnx

    m = remove_masks(copy.deepcopy(model)).eval()
    path = Path(path)
    names = [f"input_{i}" for i in range(len(sample))]
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(m, tuple(sample), str(tmp), dynamo=False, opset_version=OPSET, input_names=names,
                          output_names=["output"],
                          dynamic_axes={n: {0: "batch"} for n in names} | {"output": {0: "batch"}})  # fmt: skip
    got = run_onnx(path, sample)
    with torch.no_grad():
        ours = m(*sample)
        ours = ours[0] if isinstance(ours, tuple | list) else ours
    return {"path": str(path), "max_abs_diff_vs_chipfit": float((got - ours).abs().max()),
            "max_abs_output": float(ours.abs().max())}  # fmt: skip


def onnx_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The float initializers of an ONNX file by name (to check what an export wrote)."""
    import onnx
    from onnx import numpy_helper

    out = {}
    for t in onnx.load(str(path)).graph.initializer:
        a = numpy_helper.to_array(t)
        if a.dtype.kind == "f":
            out[t.name] = torch.from_numpy(a.copy())
    return out
