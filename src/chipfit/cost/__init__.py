"""Cost model: time, energy and money per op on every catalog chip."""

from chipfit.cost.estimate import PRECISION_ALIASES, Estimate, OpCost, Precision, estimate, resolve_precision
from chipfit.cost.units import MATRIX_MODELS, register_matrix_model, systolic_cycles

__all__ = [
    "MATRIX_MODELS",
    "PRECISION_ALIASES",
    "Estimate",
    "OpCost",
    "Precision",
    "estimate",
    "register_matrix_model",
    "resolve_precision",
    "systolic_cycles",
]
