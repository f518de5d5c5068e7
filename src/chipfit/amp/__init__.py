"""Mixed-precision training on emulated chips: loss scaling, FP32 masters, gradient diagnostics."""

from chipfit.amp.scaler import LossScaler, ScalerStep
from chipfit.amp.train import LOSS_SCALING, MixedPrecision, StepRecord

__all__ = ["LOSS_SCALING", "LossScaler", "MixedPrecision", "ScalerStep", "StepRecord"]
