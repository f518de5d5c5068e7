"""Mixed-precision training on emulated chips: loss scaling, FP32 masters, gradient diagnostics."""

from chipfit.amp.scaler import LossScaler, ScalerStep

__all__ = ["LossScaler", "ScalerStep"]
