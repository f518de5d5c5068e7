"""chipfit: run any PyTorch model on AI accelerators you do not own."""

from chipfit.emulate import NumericsPolicy, emulate, evaluate, policy_for
from chipfit.trace import trace

__all__ = ["NumericsPolicy", "emulate", "evaluate", "policy_for", "trace"]
__version__ = "0.1.0"
