"""`MixedPrecision`: train with a chip's training numerics on the CPU.

    with MixedPrecision("a100-sxm", "fp16", model=model) as mp:
        for x, y in data:
            opt.zero_grad()
            mp.backward(loss_fn(model(x), y))   # forward and backward under the chip's numerics
            mp.step(opt)                        # unscale, check, step or skip, update the scale

Forward and backward run inside one `chipfit.emulate` context (so FP8 delayed scaling keeps its
amax history across steps). Parameters stay FP32: they are the master weights, the optimizer
updates them in FP32 with the emulation paused, and each step's low-precision working copies are
rounded from them (the emulator re-rounds a parameter when its version changes). Loss scaling
follows the policy: dynamic (GradScaler's defaults) where matrix inputs or outputs are FP16,
none for BF16, TF32, FP32 and FP8 (per-tensor scales; E5M2 gradients), or as asked.

Diagnostics per step: the loss, the scale used, whether the step was skipped, and what storing
backward results in the compute format flushed to zero (underflow) or overflowed, in total, per
backward op and per layer (the gradients reaching each parameter).
"""

from __future__ import annotations

import json
import math
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from chipfit.amp.scaler import LossScaler
from chipfit.emulate import NumericsPolicy, policy_for
from chipfit.emulate.mode import Run, emulate
from chipfit.emulate.report import RoundingCount
from chipfit.errors import InputError
from chipfit.hardware.device import Device
from chipfit.paths import write_text_atomic

__all__ = ["LOSS_SCALING", "MixedPrecision", "StepRecord"]

LOSS_SCALING = ("auto", "dynamic", "static", "none")


@dataclass(frozen=True)
class StepRecord:
    step: int
    loss: float
    scale: float
    skipped: bool
    grad_values: int
    underflow: int  # backward values flushed to zero by storage rounding
    overflow: int  # finite backward values that became inf
    layers: dict[str, dict[str, float]] = field(default_factory=dict)  # layer -> fractions

    @property
    def underflow_fraction(self) -> float:
        return self.underflow / self.grad_values if self.grad_values else 0.0

    @property
    def overflow_fraction(self) -> float:
        return self.overflow / self.grad_values if self.grad_values else 0.0


def _layer_of(param_name: str) -> str:
    """The module a parameter belongs to ("(root)" for the model's own parameters)."""
    return param_name.rsplit(".", 1)[0] if "." in param_name else "(root)"


class MixedPrecision:
    """See the module docstring. precision: a cost-model precision (fp32, tf32, bf16, fp16, fp8, ...)."""

    def __init__(self, device: str | Device, precision: str, *, model: nn.Module | None = None,
                 loss_scaling: str = "auto", init_scale: float = 2.0**16, growth_interval: int = 2000,
                 diagnostics: bool = True, policy: NumericsPolicy | None = None) -> None:  # fmt: skip
        if loss_scaling not in LOSS_SCALING:
            raise InputError(f"unknown loss_scaling {loss_scaling!r}; known: {', '.join(LOSS_SCALING)}")
        self.device = device if isinstance(device, str) else device.name
        self.precision = precision
        self.policy = policy or policy_for(device, precision, fp8_scaling="delayed")
        fp16 = "float16" in (self.policy.a.format, self.policy.b.format, self.policy.output)
        if loss_scaling == "auto":
            loss_scaling = "dynamic" if fp16 else "none"
        self.loss_scaling = loss_scaling
        self.scaler = (
            LossScaler(init_scale=init_scale, growth_interval=growth_interval, dynamic=loss_scaling == "dynamic")
            if loss_scaling in ("dynamic", "static")
            else None
        )
        self.model = model
        self.diagnostics = diagnostics
        self.history: list[StepRecord] = []
        self.run: Run | None = None
        self._stack: ExitStack | None = None
        self._hooks: list[Any] = []
        self._layer_counts: dict[str, RoundingCount] = {}
        self._loss = math.nan

    # ------------------------------------------------------------ context
    def __enter__(self) -> MixedPrecision:
        self._stack = ExitStack()
        self.run = self._stack.enter_context(emulate(policy=self.policy, watch=self.diagnostics))
        if self.model is not None and self.diagnostics:
            for name, p in self.model.named_parameters():
                if p.requires_grad:
                    self._hooks.append(p.register_hook(self._grad_hook(name)))
        return self

    def __exit__(self, *exc: object) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        if self._stack is not None:
            self._stack.close()
        self._stack = None

    def _grad_hook(self, name: str) -> Any:
        def hook(grad: torch.Tensor) -> None:
            watch = self.run.watch if self.run is not None else None
            got = watch.by_tensor.get(grad) if watch is not None else None
            c = self._layer_counts.setdefault(_layer_of(name), RoundingCount())
            c.add(got if got is not None else RoundingCount(int(grad.numel()), int((grad != 0).sum()), 0, 0))

        return hook

    def _require(self) -> Run:
        if self.run is None:
            raise RuntimeError("use MixedPrecision as a context manager: with MixedPrecision(...) as mp: ...")
        return self.run

    # ------------------------------------------------------------ a training step
    def backward(self, loss: torch.Tensor) -> None:
        """loss (times the loss scale) backward, under the chip's numerics."""
        run = self._require()
        if run.watch is not None:
            run.watch.reset()
        self._layer_counts = {}
        self._loss = float(loss.detach())
        (self.scaler.scale(loss) if self.scaler is not None else loss).backward()

    def step(self, optimizer: torch.optim.Optimizer, *, clip_grad_norm: float | None = None) -> bool:
        """Unscale, optionally clip, step unless a gradient is inf/NaN, update the scale.
        Returns True when the step was taken. Runs in FP32 (the masters), emulation paused."""
        run = self._require()
        with _disable_current_modes():
            params = [p for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
            if self.scaler is not None:
                scale = self.scaler.get_scale()
                self.scaler.unscale_(optimizer)
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                self.scaler.step(optimizer)
                self.scaler.update()
                skipped = self.scaler.history[-1].skipped
            else:
                scale = 1.0
                if clip_grad_norm is not None:
                    torch.nn.utils.clip_grad_norm_(params, clip_grad_norm)
                skipped = not all(bool(torch.isfinite(p.grad).all()) for p in params if p.grad is not None)
                if not skipped:
                    optimizer.step()
        total = run.watch.total() if run.watch is not None else RoundingCount()
        layers = {
            name: {
                "underflow_fraction": c.underflow_fraction,
                "overflow_fraction": c.overflow_fraction,
                "values": c.values,
            }
            for name, c in self._layer_counts.items()
        }
        self.history.append(
            StepRecord(
                len(self.history), self._loss, scale, skipped, total.values, total.underflow, total.overflow, layers
            )
        )
        return not skipped

    # ------------------------------------------------------------ reports
    @property
    def skipped_steps(self) -> int:
        return sum(r.skipped for r in self.history)

    def summary(self) -> dict[str, Any]:
        h = self.history
        values = sum(r.grad_values for r in h)
        return {
            "device": self.device,
            "precision": self.precision,
            "policy": self.policy.name,
            "loss_scaling": self.loss_scaling,
            "steps": len(h),
            "skipped_steps": self.skipped_steps,
            "final_loss": h[-1].loss if h else None,
            "final_scale": h[-1].scale if h else None,
            "underflow_fraction": sum(r.underflow for r in h) / values if values else 0.0,
            "overflow_fraction": sum(r.overflow for r in h) / values if values else 0.0,
        }

    def to_dict(self) -> dict[str, Any]:
        steps = []
        for r in self.history:
            d = asdict(r)
            d["underflow_fraction"] = r.underflow_fraction
            d["overflow_fraction"] = r.overflow_fraction
            steps.append(d)
        return {"summary": self.summary(), "steps": steps}

    def save_json(self, path: str | Path) -> Path:
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    def save_plot(self, path: str | Path) -> Path:
        """An SVG of the loss, the loss scale and the underflow fraction per step."""
        from chipfit.report.plot import line_panels

        h = self.history
        panels = [
            ("loss", {self.precision: [r.loss for r in h]}, True),
            ("loss scale", {self.precision: [r.scale for r in h]}, True),
            ("gradient underflow fraction", {self.precision: [r.underflow_fraction for r in h]}, False),
        ]
        return write_text_atomic(path, line_panels(f"{self.device} {self.precision}", panels))
