"""ONNX export with QuantizeLinear/DequantizeLinear pairs (QDQ), checked in onnxruntime.

Each quantized layer becomes: [Div by the SmoothQuant factors] -> Clip to +-127 steps ->
QuantizeLinear/DequantizeLinear (INT8, per tensor, the calibrated scale) on the input, and
QuantizeLinear/DequantizeLinear (INT8, per tensor or per output channel, axis 0) on the weight,
then the float Gemm/Conv, which TensorRT and onnxruntime fuse into an INT8 kernel. The Clip keeps
chipfit's symmetric range [-127, 127] (QuantizeLinear alone saturates at -128).

Supported: symmetric INT8 weights (tensor or channel granularity) and static symmetric INT8
input ranges (tensor granularity), or float inputs. Other specs (dynamic, per-token, group,
block, FP8, INT4, affine) raise a ValueError naming what is supported: torch's exporter has no
QDQ form for them at the opsets onnxruntime runs on CPU.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from chipfit.paths import atomic_path
from chipfit.quant.api import _set, layers
from chipfit.quant.modules import QuantLayer, TensorQuant

__all__ = ["OPSET", "export_onnx", "run_onnx"]

OPSET = 17
SUPPORTED = "symmetric int8 weights per tensor or per channel; static symmetric int8 inputs per tensor; or float inputs"


def _check(name: str, tq: TensorQuant | None, role: str) -> None:
    if tq is None:
        return
    s = tq.spec
    ok = s.format == "int8" and s.symmetric and not tq.log_scale
    if role == "weight":
        ok = ok and s.granularity in ("tensor", "channel")
    else:
        ok = ok and s.granularity == "tensor" and not s.dynamic
    if not ok:
        raise ValueError(
            f"layer {name}: {role} spec '{s.describe()}' has no QDQ export; supported: {SUPPORTED} "
            "(use a static recipe such as int8-entropy, int8-percentile or int8-minmax)"
        )


class _QdqLayer(nn.Module):
    """A QuantLayer written with torch's fake-quantize ops, which export as QDQ."""

    smooth: torch.Tensor | None
    weight: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, ql: QuantLayer) -> None:
        super().__init__()
        layer = ql.layer
        self.kind = "linear" if isinstance(layer, nn.Linear) else "conv"
        self.conv = layer if isinstance(layer, (nn.Conv1d, nn.Conv2d)) else None
        w = layer.weight.detach()
        smooth = ql.smooth
        self.register_buffer("smooth", None if smooth is None else smooth.detach().clone())
        if smooth is not None:
            w = w * ql._shape_w(smooth)
        self.register_buffer("weight", w.clone())
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())
        self.w_scale: torch.Tensor | None = None
        if ql.wq is not None:
            amax = ql.wq.amax if ql.wq.amax is not None else w.abs().amax()
            self.w_scale = (torch.where(amax > 0, amax, torch.ones_like(amax)) / 127.0).reshape(-1).float()
        self.w_per_tensor = self.w_scale is not None and self.w_scale.numel() == 1
        self.a_scale: float | None = None
        if ql.aq is not None:
            assert ql.aq.amax is not None
            a = float(ql.aq.amax)
            self.a_scale = (a if a > 0 else 1.0) / 127.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / (self.smooth if self.kind == "linear" else self.smooth.reshape(1, -1, *([1] * (x.dim() - 2))))
        if self.a_scale is not None:
            s = self.a_scale
            x = torch.clamp(x, -127 * s, 127 * s)
            x = torch.fake_quantize_per_tensor_affine(x, s, 0, -128, 127)
        w = self.weight
        if self.w_scale is not None:
            if self.w_per_tensor:
                w = torch.fake_quantize_per_tensor_affine(w, float(self.w_scale), 0, -128, 127)
            else:
                zp = torch.zeros(self.w_scale.numel(), dtype=torch.int32)
                w = torch.fake_quantize_per_channel_affine(w, self.w_scale, zp, 0, -128, 127)
        if self.kind == "linear":
            return F.linear(x, w, self.bias)
        assert self.conv is not None
        out: torch.Tensor = self.conv._conv_forward(x, w, self.bias)
        return out


def export_onnx(model: nn.Module, sample: Sequence[Any], path: str | Path, *, opset: int = OPSET,
                input_names: Sequence[str] | None = None) -> Path:  # fmt: skip
    """Write the quantized `model` as QDQ ONNX to `path` (atomically); returns the path."""
    qls = layers(model)
    if not qls:
        raise ValueError("the model has no quantized layers: run quantize_ first")
    for name, ql in qls.items():
        _check(name, ql.wq, "weight")
        _check(name, ql.aq, "input")
    m = copy.deepcopy(model).eval()
    for name, ql in layers(m).items():
        _set(m, name, _QdqLayer(ql))
    path = Path(path)
    names = list(input_names) if input_names else [f"input_{i}" for i in range(len(sample))]
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(m, tuple(sample), str(tmp), dynamo=False, opset_version=opset, input_names=names,
                          output_names=["output"],
                          dynamic_axes={n: {0: "batch"} for n in names} | {"output": {0: "batch"}})  # fmt: skip
    return path


def run_onnx(path: str | Path, sample: Sequence[Any]) -> torch.Tensor:
    """Run an exported model in onnxruntime (CPU) on one batch of positional inputs."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("running ONNX needs onnxruntime: pip install 'chipfit[onnx]'") from None
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), sample, strict=True)}
    return torch.from_numpy(sess.run(None, feeds)[0])
