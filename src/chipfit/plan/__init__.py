"""The planner: which chip, precision, batch size and chip count for a model."""

from chipfit.plan.api import DEFAULT_BATCHES, DEFAULT_PRECISIONS, measure_accuracy, plan
from chipfit.plan.backend import BACKENDS
from chipfit.plan.plan import OBJECTIVES, Constraints, Plan, PlanError, pareto_front, recommend
from chipfit.plan.sweep import PlanRow, sweep

__all__ = [
    "BACKENDS",
    "DEFAULT_BATCHES",
    "DEFAULT_PRECISIONS",
    "OBJECTIVES",
    "Constraints",
    "Plan",
    "PlanError",
    "PlanRow",
    "measure_accuracy",
    "pareto_front",
    "plan",
    "recommend",
    "sweep",
]
