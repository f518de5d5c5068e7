"""`LossScaler`: dynamic loss scaling with torch.amp.GradScaler's semantics and defaults.

scale(loss) multiplies by the scale. unscale_(optimizer) multiplies every gradient by the FP32
reciprocal of the scale (as GradScaler: inv = fl32(1 / fl64(scale))) and records whether any
gradient is inf or NaN; it may run once per step (gradient clipping goes between). step(optimizer)
unscales if needed and runs optimizer.step() unless a non-finite gradient was found (the step is
skipped and the weights stay as they were). update() then multiplies the scale by backoff_factor
after a skipped step, or by growth_factor after growth_interval consecutive clean steps
(torch._amp_update_scale_). Defaults: 2^16, x2, x0.5, 2000.

`dynamic=False` keeps the scale fixed (static loss scaling); non-finite steps are still skipped.
The scaler works outside any emulation context: gradient arithmetic on FP32 master weights is
FP32, as on the chips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from chipfit.errors import InputError

__all__ = ["LossScaler", "ScalerStep"]


@dataclass(frozen=True)
class ScalerStep:
    """What one step did: the scale it used, whether it skipped, the scale after update()."""

    scale: float
    skipped: bool
    next_scale: float


@dataclass
class LossScaler:
    init_scale: float = 2.0**16
    growth_factor: float = 2.0
    backoff_factor: float = 0.5
    growth_interval: int = 2000
    dynamic: bool = True
    enabled: bool = True
    history: list[ScalerStep] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.init_scale <= 0:
            raise InputError(f"init_scale must be > 0, got {self.init_scale}")
        if self.growth_factor <= 1.0:
            raise InputError(f"growth_factor must be > 1, got {self.growth_factor}")
        if not 0.0 < self.backoff_factor < 1.0:
            raise InputError(f"backoff_factor must be in (0, 1), got {self.backoff_factor}")
        if self.growth_interval < 1:
            raise InputError(f"growth_interval must be >= 1, got {self.growth_interval}")
        self._scale = torch.tensor(self.init_scale, dtype=torch.float32)
        self._growth_tracker = 0
        self._found_inf: bool | None = None  # None: not unscaled this step
        self._stepped = False

    # ------------------------------------------------------------ GradScaler's API
    def get_scale(self) -> float:
        return float(self._scale) if self.enabled else 1.0

    def scale(self, loss: torch.Tensor) -> torch.Tensor:
        if not self.enabled:
            return loss
        return loss * self._scale.to(loss.dtype)

    def unscale_(self, optimizer: torch.optim.Optimizer) -> None:
        if not self.enabled:
            return
        if self._found_inf is not None:
            raise RuntimeError("unscale_() has already been called on this optimizer since the last update().")
        inv = self._scale.double().reciprocal().float()
        found = False
        with torch.no_grad():
            for group in optimizer.param_groups:
                for p in group["params"]:
                    if p.grad is None:
                        continue
                    if not bool(torch.isfinite(p.grad).all()):
                        found = True
                    p.grad.mul_(inv)
        self._found_inf = found

    def step(self, optimizer: torch.optim.Optimizer, *args: Any, **kwargs: Any) -> Any:
        """optimizer.step() unless a gradient is inf/NaN; returns its result, or None when skipped."""
        if not self.enabled:
            return optimizer.step(*args, **kwargs)
        if self._stepped:
            raise RuntimeError("step() has already been called since the last update().")
        if self._found_inf is None:
            self.unscale_(optimizer)
        self._stepped = True
        if self._found_inf:
            return None
        return optimizer.step(*args, **kwargs)

    def update(self, new_scale: float | None = None) -> None:
        if not self.enabled:
            return
        if self._found_inf is None:
            raise RuntimeError("No inf checks were recorded prior to update.")
        used = float(self._scale)
        skipped = bool(self._found_inf)
        if new_scale is not None:
            self._scale.fill_(new_scale)
        elif self.dynamic:
            if skipped:
                self._scale *= self.backoff_factor
                self._growth_tracker = 0
            else:
                self._growth_tracker += 1
                if self._growth_tracker == self.growth_interval:
                    self._scale *= self.growth_factor
                    self._growth_tracker = 0
        self.history.append(ScalerStep(used, skipped, float(self._scale)))
        self._found_inf = None
        self._stepped = False

    # ------------------------------------------------------------ state
    @property
    def skipped_steps(self) -> int:
        return sum(s.skipped for s in self.history)

    def state_dict(self) -> dict[str, Any]:
        return {
            "scale": float(self._scale),
            "growth_factor": self.growth_factor,
            "backoff_factor": self.backoff_factor,
            "growth_interval": self.growth_interval,
            "_growth_tracker": self._growth_tracker,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._scale.fill_(float(state["scale"]))
        self.growth_factor = float(state["growth_factor"])
        self.backoff_factor = float(state["backoff_factor"])
        self.growth_interval = int(state["growth_interval"])
        self._growth_tracker = int(state["_growth_tracker"])
