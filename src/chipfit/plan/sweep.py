"""The planner's sweep: devices x precisions x batch sizes x chip counts, priced by the cost model.

One trace per batch size (inference or a training step), one estimate per device x precision x
batch, then the chip counts by `scaleout`. A configuration fits when its per-chip memory (the
trace's footprint at the precision's bytes; weights and optimizer state split across chips for
tensor and pipeline parallel, replicated for data parallel) fits the device's main memory. A model
too large for one chip gets its minimum chip count (the smallest count in the sweep that fits).
Accuracy, when given, is per device x precision (measured once by emulation) and reused.
Energy per item is one chip's step energy over its items: the same work spread over more chips
costs the same energy (assumed; communication and pipeline-idle energy are not counted).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from torch import nn

from chipfit.plan.scaleout import STRATEGIES, StepParts, est_scale, scale_out
from chipfit.trace import Trace

__all__ = ["PlanRow", "sweep"]


@dataclass(frozen=True)
class PlanRow:
    device: str
    precision: str
    format: str
    how: str  # native | autocast | vector | host
    batch: int  # global batch (items per step)
    chips: int
    strategy: str  # single | data | tensor | pipeline
    step_s: float
    throughput: float  # items per second
    usd_per_hour: float | None
    usd_per_million: float | None
    energy_per_item_j: float
    memory_per_chip_bytes: float
    capacity_bytes: float
    fits: bool
    comm_s: float
    accuracy: float | None = None
    accuracy_drop: float | None = None  # FP32 value - this value (metric units)

    @property
    def latency_ms(self) -> float:
        return self.step_s * 1e3

    def label(self) -> str:
        par = "" if self.chips == 1 else f" x{self.chips} {self.strategy}"
        return f"{self.device} {self.precision}, batch {self.batch}{par}"

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _memory(trace: Trace, scale: float, strategy: str, n: int) -> float:
    f = trace.footprint
    state = f.params_bytes * scale + f.grads_bytes * scale + f.optimizer_bytes  # optimizer moments stay FP32
    acts = (f.activations_peak_bytes + f.kv_cache_bytes + f.inputs_bytes) * scale
    if strategy in ("tensor", "pipeline"):
        return state / n + acts / n
    return state + acts


def sweep(
    model: nn.Module,
    inputs: Callable[[int], Sequence[Any]],
    *,
    devices: Sequence[str],
    precisions: Sequence[str],
    batches: Sequence[int],
    chips: Sequence[int] = (1,),
    training: bool = False,
    accuracy: dict[tuple[str, str], tuple[float, float]] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[PlanRow]:
    """Every configuration as a PlanRow. inputs(batch) gives the model's example inputs."""
    from chipfit.cost import estimate, resolve_precision
    from chipfit.hardware import get_device
    from chipfit.trace import trace

    devs = [get_device(d) for d in devices]
    total = len(batches) * len(devs) * len(precisions)
    done = 0
    rows: list[PlanRow] = []
    for b in batches:
        tr = trace(model, list(inputs(b)), mode="training" if training else "inference", optimizer="adam")
        for dev in devs:
            for p in precisions:
                done += 1
                if progress is not None:
                    progress(done, total)
                prec = resolve_precision(dev, p)
                est = estimate(tr, dev, p)
                scale = est_scale(est, tr)
                parts = StepParts.of(est, tr)
                price = dev.price.usd_per_hour if dev.price is not None else None
                acc = accuracy.get((dev.name, p)) if accuracy else None
                cap = float(dev.main_memory.capacity_bytes)
                options: list[tuple[str, int]] = [("single", 1)]
                options += [(s, n) for n in chips if n > 1 for s in STRATEGIES]
                for strategy, n in options:
                    try:
                        so = scale_out(
                            parts,
                            None,
                            "data" if strategy == "single" else strategy,
                            n,
                            dev.interconnect,
                            training=training,
                            batch=b,
                        )
                    except ValueError:
                        continue  # no interconnect for this strategy
                    global_batch = b * n if strategy == "data" else b
                    mem = _memory(tr, scale, strategy, n)
                    thr = global_batch / so.step_s if so.step_s > 0 else math.inf
                    usd_h = price * n if price is not None else None
                    rows.append(
                        PlanRow(
                            device=dev.name,
                            precision=p,
                            format=prec.format,
                            how=prec.how,
                            batch=global_batch,
                            chips=n,
                            strategy=strategy,
                            step_s=so.step_s,
                            throughput=thr,
                            usd_per_hour=usd_h,
                            usd_per_million=(usd_h / 3600 / thr * 1e6) if usd_h is not None else None,
                            energy_per_item_j=est.energy_j / b,
                            memory_per_chip_bytes=mem,
                            capacity_bytes=cap,
                            fits=mem <= cap,
                            comm_s=so.comm_s,
                            accuracy=acc[0] if acc else None,
                            accuracy_drop=acc[1] if acc else None,
                        )
                    )
    return rows
