"""Quantization: calibration, PTQ, QAT, sensitivity, mixed-precision search, ONNX export."""

from chipfit.quant.api import layers, only, prepare_qat, quantize_, run_calibration
from chipfit.quant.calibrate import CALIBRATORS, Histogram, Observer
from chipfit.quant.modules import QuantLayer, TensorQuant, fake_quant
from chipfit.quant.spec import RECIPES, Override, QuantConfig, QuantSpec, get_recipe

__all__ = [
    "CALIBRATORS",
    "RECIPES",
    "Histogram",
    "Observer",
    "Override",
    "QuantConfig",
    "QuantLayer",
    "QuantSpec",
    "TensorQuant",
    "fake_quant",
    "get_recipe",
    "layers",
    "only",
    "prepare_qat",
    "quantize_",
    "run_calibration",
]
