"""Running a model with a chip's numerics: policies, accumulation, the emulation mode, evaluation."""

from chipfit.emulate.accumulate import ACCUMULATIONS, Accumulation, chunked_matmul, chunked_matmul_reference
from chipfit.emulate.evaluate import METRICS, EvalRow, Evaluation, evaluate
from chipfit.emulate.mode import Run, emulate
from chipfit.emulate.policy import NumericsPolicy, Operand, Scaling, list_precisions, policy_for
from chipfit.emulate.report import OpStat, Report

__all__ = [
    "ACCUMULATIONS",
    "METRICS",
    "Accumulation",
    "EvalRow",
    "Evaluation",
    "NumericsPolicy",
    "OpStat",
    "Operand",
    "Report",
    "Run",
    "Scaling",
    "chunked_matmul",
    "chunked_matmul_reference",
    "emulate",
    "evaluate",
    "list_precisions",
    "policy_for",
]
