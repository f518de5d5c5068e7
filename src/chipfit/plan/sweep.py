"""The planner's sweep: devices x precisions x batch sizes x chip counts, priced by the cost model.

One trace per batch size (inference or a training step), one estimate per device x precision x
batch, then the chip counts by `scaleout`. A configuration fits when its per-chip memory (the
estimate's footprint, `cost.memory.step_memory`; split across chips for tensor and pipeline
parallel, replicated for data parallel) fits the device's main memory. A model
too large for one chip gets its minimum chip count (the smallest count in the sweep that fits).
Accuracy, when given, is per device x precision (measured once by emulation) and reused.
Energy per item is one chip's step energy over its items: the same work spread over more chips
costs the same energy (assumed; communication and pipeline-idle energy are not counted).

The driver traces (one trace per batch size, in this process: models need not pickle); the
pricing of each (trace, devices) chunk is a `SweepTask` that a backend runs (`chipfit.plan.backend`:
in this process, a process pool or a Ray cluster). Rows come back in the serial order whatever
the backend, so every backend gives the same plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from chipfit.cost.sparse import SparseLayers
from chipfit.hardware.device import Device
from chipfit.hardware.pricing import Pricing
from chipfit.plan.scaleout import STRATEGIES, StepParts, scale_out
from chipfit.trace import Trace
from chipfit.vocab import How

__all__ = ["Measured", "PlanRow", "SweepTask", "price", "sweep"]


@dataclass(frozen=True, kw_only=True)
class PlanRow:
    device: str
    precision: str
    format: str
    how: How
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
    accuracy_source: str | None = None  # emulation | quant:CONFIG (a quantized copy of the model)
    execution: str = "eager"  # the stack that priced the step (hardware/stacks.toml)
    sparsity: str = ""  # the pattern its pruned layers run ("2:4"), "" dense

    @property
    def latency_ms(self) -> float:
        return self.step_s * 1e3

    def label(self) -> str:
        """`l4 fp8, batch 128`, naming a compiler cast (`trainium fp32→bf16`) or a fallback
        (`tpu-v4 fp8 (vector unit, no matrix unit for it)`)."""
        from chipfit.hardware.precision import precision_label

        par = "" if self.chips == 1 else f" x{self.chips} {self.strategy}"
        sp = f" {self.sparsity} sparse" if self.sparsity else ""
        return f"{self.device} {precision_label(self.precision, self.format, self.how)}{sp}, batch {self.batch}{par}"

    def as_dict(self, metric: str = "") -> dict[str, Any]:
        """The row's fields; with the plan's metric, accuracy in its one shown unit and named for it
        (`accuracy_percent`, `accuracy_drop_points` for top-1; `accuracy_cosine`, ... for cosine)."""
        d = asdict(self)
        if metric:
            from chipfit.report.text import metric_unit

            u = metric_unit(metric)
            d = {u.key("accuracy") if k == "accuracy" else u.key("accuracy_drop", drop=True) if k == "accuracy_drop"
                 else k: u.shown(v) if k in ("accuracy", "accuracy_drop") else v for k, v in d.items()}  # fmt: skip
        return d


@dataclass(frozen=True)
class Measured:
    """Accuracy of one device x precision: the metric, its drop from FP32, and where it came from."""

    value: float
    drop: float  # FP32 value - value (metric units)
    source: str = "emulation"  # or quant:CONFIG


@dataclass(frozen=True)
class SweepTask:
    """Price one trace (sent beside the task) on some devices: every precision, every chip count."""

    batch: int
    devices: tuple[Device, ...]  # the devices themselves: a worker may not have the driver's registry
    precisions: tuple[str, ...]
    chips: tuple[int, ...]
    training: bool
    accuracy: dict[tuple[str, str], Measured] = field(default_factory=dict)
    allow_fallback: bool = False  # also price formats a device runs only on its vector unit or host
    usd_per_hour: dict[str, float] = field(default_factory=dict)  # device -> per-chip price; absent: unpriced
    execution: str | None = None  # None: each device's default stack (hardware.stacks.resolve_stack)
    sparsity: SparseLayers | None = None  # also price the model with these layers pruned (plan --sparsity)
    sparse_accuracy: dict[tuple[str, str], Measured] = field(default_factory=dict)  # the pruned model's

    @property
    def estimates(self) -> int:
        return len(self.devices) * len(self.precisions)


def offered(dev: Device, precision: str, *, training: bool, allow_fallback: bool) -> bool:
    """Is (device, precision) a configuration to sweep? The matrix unit runs it (natively or by the
    compiler's documented cast) unless fallbacks are allowed, and for training the device's stack
    trains in that format (catalog `training.formats`; never an integer format)."""
    from chipfit.hardware.precision import resolve_precision

    prec = resolve_precision(dev, precision)
    if not (prec.on_matrix_unit or allow_fallback):
        return False
    return not training or (dev.trains_in(prec.format) and not prec.weight_format)  # no weight-only training


def price(tr: Trace, task: SweepTask) -> list[PlanRow]:
    """The rows of `task`, in device, precision, (strategy, chips) order, each sparse variant after its
    dense twin. Runs in any process."""
    from chipfit.cost import estimate

    rows: list[PlanRow] = []
    for dev in task.devices:
        for p in task.precisions:
            if not offered(dev, p, training=task.training, allow_fallback=task.allow_fallback):
                continue  # the chip does not run (or train in) it: not a configuration to recommend
            est = estimate(tr, dev, p, execution=task.execution)
            rows += _rows(tr, task, dev, p, est, task.accuracy.get((dev.name, p)))
            sp = task.sparsity
            if sp is not None and not task.training and dev.sparse_speedup(est.precision.format, sp.pattern) > 1:
                est = estimate(tr, dev, p, execution=task.execution, sparsity=sp)
                rows += _rows(tr, task, dev, p, est, task.sparse_accuracy.get((dev.name, p)))
    return rows


def _rows(tr: Trace, task: SweepTask, dev: Device, p: str, est: Any, acc: Measured | None) -> list[PlanRow]:
    """One estimate's rows: one chip, then every strategy x chip count the fabric joins."""
    parts = StepParts.of(est, tr, dev)
    price_h = task.usd_per_hour.get(dev.name)
    cap = float(dev.main_memory.capacity_bytes)
    b = task.batch
    options: list[tuple[str, int]] = [("single", 1)]
    options += [(s, n) for n in task.chips if n > 1 for s in STRATEGIES]
    rows = []
    for strategy, n in options:
        try:
            so = scale_out(parts, None, "data" if strategy == "single" else strategy, n, dev, training=task.training,
                           batch=b)  # fmt: skip
        except ValueError:
            continue  # the fabric cannot join n chips (no interconnect, or no network beyond the domain)
        global_batch = b * n if strategy == "data" else b
        mem = est.memory.per_chip_bytes(strategy, n)
        thr = global_batch / so.step_s if so.step_s > 0 else math.inf
        usd_h = price_h * n if price_h is not None else None
        rows.append(
            PlanRow(
                device=dev.name,
                precision=p,
                format=est.precision.format,
                how=est.precision.how,
                batch=global_batch,
                chips=n,
                strategy=strategy,
                step_s=so.step_s,
                throughput=thr,
                usd_per_hour=usd_h,
                usd_per_million=(usd_h / 3600 / thr * 1e6) if usd_h is not None else None,
                energy_per_item_j=so.energy_j / global_batch,
                memory_per_chip_bytes=mem,
                capacity_bytes=cap,
                fits=mem <= cap,
                comm_s=so.comm_s,
                accuracy=acc.value if acc else None,
                accuracy_drop=acc.drop if acc else None,
                accuracy_source=acc.source if acc else None,
                execution=est.execution,
                sparsity=est.sparsity,
            )
        )
    return rows


def sweep(
    model: nn.Module,
    inputs: Callable[[int], Sequence[Any]],
    *,
    devices: Sequence[str | Device],
    precisions: Sequence[str],
    batches: Sequence[int],
    chips: Sequence[int] = (1,),
    training: bool = False,
    optimizer: str = "adam",
    accuracy: dict[tuple[str, str], Measured] | None = None,  # (device name, precision)
    allow_fallback: bool = False,
    progress: Callable[[int, int], None] | None = None,
    backend: str = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    pricing: Pricing | None = None,
    execution: str | None = None,
    sparsity: SparseLayers | None = None,
    sparse_accuracy: dict[tuple[str, str], Measured] | None = None,
) -> list[PlanRow]:
    """Every configuration as a PlanRow. inputs(batch) gives the model's example inputs;
    `optimizer` (sgd, adam) is the training step's. Only what a device runs on its matrix unit
    (natively or by its compiler's cast) is swept, unless `allow_fallback`: then formats it runs
    on its vector unit or host come back too, labelled as such.

    backend: serial (this process), local (a process pool of `workers`, default one per core) or
    ray (a Ray cluster at `ray_address`, default a local instance); all give the same rows.
    pricing: the price basis, TCO assumptions and user prices (default: on-demand, the catalog's).
    execution: None prices each device under its own default stack; eager, compiled or a stack name
    prices all of them that way (cost.estimate). sparsity: also the model with these layers pruned, on
    the devices with sparse math for its pattern at the row's format (inference only), its accuracy
    from `sparse_accuracy`."""
    from chipfit.hardware import get_device
    from chipfit.plan.backend import open_backend
    from chipfit.trace import trace

    devs = {dev.name: dev for dev in (get_device(d) for d in devices)}  # unknown names fail here, naming all
    precs, counts = tuple(precisions), tuple(chips)
    acc = {(d, p): accuracy[(d, p)] for d in devs for p in precs if (d, p) in accuracy} if accuracy else {}
    total = len(batches) * len(devs) * len(precs)
    quotes = {n: (pricing or Pricing()).quote(d) for n, d in devs.items()}
    usd_h = {n: q.usd_per_hour for n, q in quotes.items() if q is not None}
    with open_backend(backend, workers=workers, ray_address=ray_address) as ex:
        chunks = ex.chunks()
        for b in batches:
            tr = trace(model, list(inputs(b)), mode="training" if training else "inference", optimizer=optimizer)
            for part in _split(tuple(devs.values()), chunks):
                mine = {(d.name, p): acc[(d.name, p)] for d in part for p in precs if (d.name, p) in acc}
                sparse_mine = {(d.name, p): m for (dn, p), m in (sparse_accuracy or {}).items()
                               for d in part if d.name == dn}  # fmt: skip
                prices = {d.name: usd_h[d.name] for d in part if d.name in usd_h}
                ex.submit(tr, SweepTask(b, part, precs, counts, training, mine, allow_fallback, prices, execution,
                                        sparsity, sparse_mine))  # fmt: skip
        results = ex.gather(lambda done: progress(done, total) if progress is not None else None)
    return [row for rows in results for row in rows]


def _split(items: tuple[Device, ...], k: int) -> list[tuple[Device, ...]]:
    """items in k contiguous, near-equal, non-empty parts (order kept)."""
    k = max(1, min(k, len(items)))
    size, extra = divmod(len(items), k)
    out, start = [], 0
    for i in range(k):
        end = start + size + (1 if i < extra else 0)
        out.append(items[start:end])
        start = end
    return out
