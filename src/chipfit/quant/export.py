"""ONNX export with QuantizeLinear/DequantizeLinear pairs (QDQ), checked in onnxruntime.

Each quantized layer becomes: [Div by the SmoothQuant factors] -> Clip to +-127 steps ->
QuantizeLinear/DequantizeLinear (INT8, per tensor, the calibrated scale) on the input, and
QuantizeLinear/DequantizeLinear (INT8, per tensor or per output channel, axis 0) on the weight,
then the float Gemm/Conv, which TensorRT and onnxruntime fuse into an INT8 kernel. The Clip keeps
chipfit's symmetric range [-127, 127] (QuantizeLinear alone saturates at -128).

Supported: symmetric INT8, FP8 E4M3 or E5M2 weights (tensor or channel granularity) and static
symmetric input ranges in those formats (tensor granularity), or float inputs. FP8 layers are
exported as placeholder INT8 pairs, then retyped to FLOAT8 zero points at opset 19 (the first
with FP8 QDQ; saturating, so no Clip). Other specs (dynamic, per-token, group, block, INT4,
affine, LSQ) raise a ValueError naming what is supported: QDQ has no form for them that
onnxruntime runs on CPU.
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chipfit.errors import InputError
from chipfit.paths import atomic_path
from chipfit.quant.api import _set, layers
from chipfit.quant.modules import QuantLayer, TensorQuant

__all__ = ["OPSET", "export_onnx", "run_onnx"]

OPSET = 17
OPSET_FP8 = 19  # the first opset with FLOAT8 QuantizeLinear/DequantizeLinear
QDQ_FORMATS = {"int8": None, "float8_e4m3fn": "FLOAT8E4M3FN", "float8_e5m2": "FLOAT8E5M2"}
SUPPORTED = (
    "symmetric int8 / float8_e4m3fn / float8_e5m2 weights per tensor or per channel; static symmetric inputs "
    "per tensor in those formats; or float inputs"
)


def _check(name: str, tq: TensorQuant | None, role: str) -> None:
    if tq is None:
        return
    s = tq.spec
    ok = s.format in QDQ_FORMATS and s.symmetric and not tq.log_scale
    if role == "weight":
        ok = ok and s.granularity in ("tensor", "channel")
    else:
        ok = ok and s.granularity == "tensor" and not s.dynamic
    if not ok:
        raise InputError(
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
        self.w_format = ql.wq.spec.format if ql.wq is not None else ""
        if ql.wq is not None:
            amax = ql.wq.amax if ql.wq.amax is not None else w.abs().amax()
            safe = torch.where(amax > 0, amax, torch.ones_like(amax)).float()
            self.w_scale = (safe / _qmax(self.w_format)).reshape(-1)  # FP32, as fake_quant computes it
        self.w_per_tensor = self.w_scale is not None and self.w_scale.numel() == 1
        self.a_scale: float | None = None
        self.a_format = ql.aq.spec.format if ql.aq is not None else ""
        if ql.aq is not None:
            if ql.aq.amax is None:
                raise InputError("a quantized layer has no calibrated input range: quantize_(..., calibrate=...)")
            a = ql.aq.amax.float()
            self.a_scale = float(torch.where(a > 0, a, torch.ones_like(a)) / _qmax(self.a_format))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.smooth is not None:
            x = x / (self.smooth if self.kind == "linear" else self.smooth.reshape(1, -1, *([1] * (x.dim() - 2))))
        if self.a_scale is not None:
            s = self.a_scale
            if self.a_format == "int8":
                x = torch.clamp(x, -127 * s, 127 * s)
            # FP8: a placeholder QDQ pair, retyped to FLOAT8 after export (saturating, no Clip)
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


def _qmax(fmt: str) -> float:
    from chipfit.emulate.scaling import format_max

    return format_max(fmt)


def _retype_fp8(path: Path, fp8_layers: dict[str, tuple[str, str]]) -> None:
    """Give the Q/DQ pairs of FP8 layers FLOAT8 zero points (which makes them FP8 QDQ)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    consts = {n.output[0]: n for n in g.node if n.op_type == "Constant"}
    producers = {o: n for n in g.node for o in n.output}
    weights = {i.name for i in g.initializer}
    made: dict[str, str] = {}
    for node in g.node:
        if node.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        layer = next((n for n in fp8_layers if f"/{n}/" in node.name), None)
        if layer is None:
            continue
        q = node if node.op_type == "QuantizeLinear" else producers.get(node.input[0])
        is_weight = q is not None and q.input[0] in weights
        fmt = fp8_layers[layer][0 if is_weight else 1]
        if not QDQ_FORMATS.get(fmt):
            continue  # this side of the layer is INT8
        zp = node.input[2]
        const = consts.get(zp)
        dims = list(numpy_helper.to_array(const.attribute[0].t).shape) if const is not None else []
        key = f"{zp}:{fmt}"
        if key not in made:
            name = f"{layer}.{'weight' if is_weight else 'input'}_fp8_zero_point"
            count = int(np.prod(dims)) if dims else 1
            g.initializer.append(helper.make_tensor(name, getattr(TensorProto, QDQ_FORMATS[fmt] or ""), dims,
                                                    [0.0] * count))  # fmt: skip
            made[key] = name
        node.input[2] = made[key]
    for op in model.opset_import:
        if op.domain in ("", "ai.onnx"):
            op.version = max(op.version, OPSET_FP8)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def export_onnx(model: nn.Module, sample: Sequence[Any], path: str | Path, *, opset: int = OPSET,
                input_names: Sequence[str] | None = None) -> Path:  # fmt: skip
    """Write the quantized `model` as QDQ ONNX to `path` (atomically); returns the path."""
    qls = layers(model)
    if not qls:
        raise InputError("the model has no quantized layers: run quantize_ first")
    for name, ql in qls.items():
        _check(name, ql.wq, "weight")
        _check(name, ql.aq, "input")
    m = copy.deepcopy(model).eval()
    for name, ql in layers(m).items():
        _set(m, name, _QdqLayer(ql))
    path = Path(path)
    names = list(input_names) if input_names else [f"input_{i}" for i in range(len(sample))]
    fp8 = {n: (ql.wq.spec.format if ql.wq else "", ql.aq.spec.format if ql.aq else "") for n, ql in qls.items()}
    fp8 = {n: f for n, f in fp8.items() if any(QDQ_FORMATS.get(x) for x in f)}
    with atomic_path(path) as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        torch.onnx.export(m, tuple(sample), str(tmp), dynamo=False, opset_version=OPSET_FP8 if fp8 else opset,
                          input_names=names, output_names=["output"],
                          dynamic_axes={n: {0: "batch"} for n in names} | {"output": {0: "batch"}})  # fmt: skip
        if fp8:
            _retype_fp8(tmp, fp8)
    return path


def _has_fp8(path: str | Path) -> bool:
    import onnx

    fp8 = {onnx.TensorProto.FLOAT8E4M3FN, onnx.TensorProto.FLOAT8E5M2}
    return any(t.data_type in fp8 for t in onnx.load(str(path)).graph.initializer)


def run_onnx(path: str | Path, sample: Sequence[Any], *, optimize: bool | None = None) -> torch.Tensor:
    """Run an exported model in onnxruntime (CPU) on one batch of positional inputs.

    optimize: onnxruntime's graph optimizations; None = on, except for FP8 graphs, where
    onnxruntime 1.32's optimizers change the results (digits-cnn fp8 recipe: max |diff| to
    chipfit 23.6 with them, 9.5e-6 without; benchmarks/results/quant.md)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise RuntimeError("running ONNX needs onnxruntime: pip install 'chipfit[onnx]'") from None
    so = ort.SessionOptions()
    so.log_severity_level = 3
    if optimize is None:
        optimize = not _has_fp8(path)
    if not optimize:
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    feeds = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), sample, strict=True)}
    return torch.from_numpy(sess.run(None, feeds)[0])
