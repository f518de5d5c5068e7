"""Bytes in memory: the one home of a step's footprint and of the traffic scale.

The tracer records FP32 bytes (models are traced in float32). At a compute format, every byte
count scales by the format's storage width over 32 bits (`traffic_scale`): TF32 is stored
in 32-bit words, so its traffic equals FP32's; int4/fp4 are packed, 4 bits; MXFP4 4.25 and
NVFP4 4.5 bits with their block scales.

A step's footprint (`step_memory`) is what must be resident at its peak:

- inference: the weights at the compute format, the traced activation peak, KV cache and
  inputs at the compute format;
- training, mixed precision with FP32 master weights as torch's autocast + GradScaler and
  chipfit.amp run it (Micikevicius et al. 2018, "Mixed Precision Training", ICLR; Megatron-LM
  keeps FP32 gradients for bf16 the same way): FP32 masters (the parameters themselves), FP32
  gradients, the optimizer state as traced (FP32; Adam's two moments), plus a working copy
  of the weights at the compute format when that is narrower than FP32 storage (autocast's
  weight cache). Activations are stored at the compute format (assumed). For bf16 with Adam
  that is 4 + 4 + 8 + 2 = 18 bytes per parameter; for FP32 or TF32 4 + 4 + 8 = 16.

estimate, plan and amp all read their footprint from here (tests/cost/test_memory.py checks
that they agree for every precision and optimizer).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from chipfit.formats import Format, get_format, storage_bytes
from chipfit.trace import Trace

__all__ = ["FP32_BYTES", "StepMemory", "step_memory", "traffic_scale"]

FP32_BYTES = 4  # the tracer's element size: models are traced in float32


def traffic_scale(fmt: str | Format) -> float:
    """Bytes at `fmt` per traced (FP32) byte."""
    return storage_bytes(fmt) / FP32_BYTES


@dataclass(frozen=True)
class StepMemory:
    """Bytes one step needs resident, by kind. `state_bytes` (weights, masters, gradients,
    optimizer) is what tensor and pipeline parallelism split across chips."""

    format: str
    training: bool
    weights_bytes: float  # the weights at the compute format (training: the working copy, 0 when FP32-stored)
    master_bytes: float  # FP32 master weights (training)
    grads_bytes: float  # FP32 gradients (training)
    optimizer_bytes: float  # optimizer state, FP32 (training)
    activations_bytes: float  # the traced peak of live activations, at the compute format
    kv_cache_bytes: float
    inputs_bytes: float

    @property
    def state_bytes(self) -> float:
        return self.weights_bytes + self.master_bytes + self.grads_bytes + self.optimizer_bytes

    @property
    def transient_bytes(self) -> float:
        return self.activations_bytes + self.kv_cache_bytes + self.inputs_bytes

    @property
    def total_bytes(self) -> float:
        return self.state_bytes + self.transient_bytes

    def per_chip_bytes(self, strategy: str, chips: int) -> float:
        """Bytes on each of `chips` chips: tensor and pipeline parallelism split everything
        (assumed: evenly), data parallelism and single chips hold it all."""
        if chips > 1 and strategy in ("tensor", "pipeline"):
            return self.total_bytes / chips
        return self.total_bytes

    def as_dict(self) -> dict[str, float | str | bool]:
        return {**asdict(self), "state_bytes": self.state_bytes, "total_bytes": self.total_bytes}


def step_memory(trace: Trace, fmt: str | Format, weights_fmt: str | Format | None = None) -> StepMemory:
    """The footprint of `trace`'s step with its tensors at `fmt` (see the module docstring);
    `weights_fmt`: the weights' storage format when it differs (weight-only int8/int4)."""
    f = get_format(fmt)
    scale = traffic_scale(f)
    wscale = traffic_scale(weights_fmt) if weights_fmt is not None else scale
    fp = trace.footprint
    training = trace.mode == "training"
    if training:
        narrower = f.storage_bits < 8 * FP32_BYTES
        weights, master = (fp.params_bytes * scale if narrower else 0.0), float(fp.params_bytes)
        grads, optimizer = float(fp.grads_bytes), float(fp.optimizer_bytes)
    else:
        weights, master, grads, optimizer = fp.params_bytes * wscale, 0.0, 0.0, 0.0
    return StepMemory(
        format=f.name,
        training=training,
        weights_bytes=weights,
        master_bytes=master,
        grads_bytes=grads,
        optimizer_bytes=optimizer,
        activations_bytes=fp.activations_peak_bytes * scale,
        kv_cache_bytes=fp.kv_cache_bytes * scale,
        inputs_bytes=fp.inputs_bytes * scale,
    )
