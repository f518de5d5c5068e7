"""What a trace holds: one record per aten op, the memory footprint, and summaries."""

from __future__ import annotations

import functools
import json
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from chipfit.errors import InputError
from chipfit.paths import write_text_atomic

__all__ = ["Footprint", "OpRecord", "Trace"]


@dataclass(frozen=True)
class OpRecord:
    """One aten op as the model ran it (shapes only; nothing was computed)."""

    index: int
    op: str  # e.g. "aten.mm.default"
    module: str  # dotted path, "" for ops outside any submodule
    module_type: str
    phase: str  # forward | backward | optimizer
    op_class: str
    input_shapes: tuple[tuple[int, ...], ...]
    input_dtypes: tuple[str, ...]
    output_shapes: tuple[tuple[int, ...], ...]
    output_dtypes: tuple[str, ...]
    flops: int
    flops_source: str  # torch (torch's registered formula) | chipfit | none
    bytes_read: int
    bytes_written: int
    gemm: tuple[int, int, int, int] | None = None  # (M, N, K, batch) for matmul-like ops
    param_bytes: int = 0  # of bytes_read, those of model parameters (weights stream from main memory)
    # the dataflow: a tensor id per input and per output (aligned with input_shapes / output_shapes). Ids
    # name storage: a view or an in-place op's output has its input's id, so the last op that wrote an id
    # is the producer of every later reader of it (the trace's producer/consumer graph)
    reads: tuple[int, ...] = ()
    writes: tuple[int, ...] = ()
    read_sizes: tuple[int, ...] = ()  # bytes of each input the op reads (a broadcast dimension once)
    read_params: tuple[bool, ...] = ()  # which inputs are model parameters
    # bytes of each output (aligned with `writes`): set on a compiled kernel's record, whose outputs are
    # the tensors it writes for readers outside it; a traced op's come from its output shapes
    write_sizes: tuple[int, ...] = ()

    @property
    def bytes(self) -> int:
        return self.bytes_read + self.bytes_written

    @property
    def uncosted(self) -> bool:
        return self.flops_source == "none"

    @property
    def is_view(self) -> bool:
        return self.op_class == "view"


@dataclass(frozen=True)
class Footprint:
    """Bytes the traced step needs resident at its peak."""

    params_bytes: int
    grads_bytes: int
    optimizer_bytes: int
    activations_peak_bytes: int
    kv_cache_bytes: int
    inputs_bytes: int

    @property
    def total_bytes(self) -> int:
        return (
            self.params_bytes + self.grads_bytes + self.optimizer_bytes + self.activations_peak_bytes
            + self.kv_cache_bytes + self.inputs_bytes
        )  # fmt: skip


@dataclass(frozen=True)
class Trace:
    """A traced step: every op, the footprint and what the model was traced with."""

    model: str
    mode: str  # inference | training
    batch: int
    param_count: int
    records: list[OpRecord]
    footprint: Footprint
    input_shapes: list[tuple[int, ...]] = field(default_factory=list)
    optimizer: str | None = None
    module_calls: int = 0  # nn.Module invocations in the forward (eager frameworks pay per call)

    # ------------------------------------------------------------ totals
    @property
    def flops(self) -> int:
        return sum(r.flops for r in self.records)

    @property
    def flops_torch(self) -> int:
        """FLOPs from torch's registered formulas only: what torch's FlopCounterMode counts."""
        return sum(r.flops for r in self.records if r.flops_source == "torch")

    @property
    def bytes(self) -> int:
        return sum(r.bytes for r in self.records)

    def uncosted(self) -> list[OpRecord]:
        return [r for r in self.records if r.uncosted]

    def phase_flops(self, phase: str) -> int:
        return sum(r.flops for r in self.records if r.phase == phase)

    def distinct_ops(self) -> tuple[list[OpRecord], list[int]]:
        """(one record per distinct op, the position in that list of every record's twin).

        Twins differ only in index and module (a repeated layer repeats its ops), so they cost the
        same on any device: the cost model prices each distinct op once. Computed once per trace.
        """
        return self._distinct

    @functools.cached_property
    def _distinct(self) -> tuple[list[OpRecord], list[int]]:
        first: dict[tuple[Any, ...], int] = {}
        reps: list[OpRecord] = []
        where: list[int] = []
        for r in self.records:
            key = (r.op, r.module_type, r.phase, r.op_class, r.input_shapes, r.input_dtypes, r.output_shapes,
                   r.output_dtypes, r.flops, r.bytes_read, r.bytes_written, r.gemm, r.param_bytes)  # fmt: skip
            pos = first.get(key)
            if pos is None:
                pos = first[key] = len(reps)
                reps.append(r)
            where.append(pos)
        return reps, where

    def __getstate__(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k not in ("_distinct", "_compiled", "_resident")}

    # ------------------------------------------------------------ summaries
    def by_class(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"ops": 0, "flops": 0, "bytes": 0, "uncosted": 0})
        for r in self.records:
            row = out[r.op_class]
            row["ops"] += 1
            row["flops"] += r.flops
            row["bytes"] += r.bytes
            row["uncosted"] += int(r.uncosted)
        return dict(sorted(out.items(), key=lambda kv: -kv[1]["flops"]))

    def by_module(self, depth: int = 1) -> dict[str, dict[str, int]]:
        """Totals per module path cut at `depth` components ("" = outside any submodule)."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"ops": 0, "flops": 0, "bytes": 0})
        for r in self.records:
            key = ".".join(r.module.split(".")[:depth]) if r.module else ""
            row = out[key]
            row["ops"] += 1
            row["flops"] += r.flops
            row["bytes"] += r.bytes
        return dict(out)

    def module_tree(self) -> dict[str, dict[str, int]]:
        """Totals for every module path and all its ancestors (the tree, flattened)."""
        out: dict[str, dict[str, int]] = defaultdict(lambda: {"ops": 0, "flops": 0, "bytes": 0})
        for r in self.records:
            parts = r.module.split(".") if r.module else []
            for d in range(len(parts) + 1):
                row = out[".".join(parts[:d])]
                row["ops"] += 1
                row["flops"] += r.flops
                row["bytes"] += r.bytes
        return dict(out)

    def top(self, n: int = 10, key: str = "flops") -> list[OpRecord]:
        if key not in ("flops", "bytes"):
            raise InputError(f"unknown key {key!r}; known: flops, bytes")
        return sorted(self.records, key=lambda r: getattr(r, key), reverse=True)[:n]

    def summary(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "mode": self.mode,
            "batch": self.batch,
            "optimizer": self.optimizer,
            "param_count": self.param_count,
            "ops": len(self.records),
            "flops": self.flops,
            "flops_torch": self.flops_torch,
            "flops_by_phase": {p: self.phase_flops(p) for p in ("forward", "backward", "optimizer")},
            "bytes": self.bytes,
            "uncosted_ops": len(self.uncosted()),
            "module_calls": self.module_calls,
            "footprint": {**asdict(self.footprint), "total_bytes": self.footprint.total_bytes},
            "by_class": self.by_class(),
        }

    # ------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {
            **self.summary(),
            "input_shapes": [list(s) for s in self.input_shapes],
            "records": [asdict(r) for r in self.records],
        }

    def save(self, path: str | Path) -> Path:
        """Write JSON atomically (temp file + rename)."""
        return write_text_atomic(path, json.dumps(self.to_dict()))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        def tup(x: Any) -> Any:
            return tuple(tup(v) for v in x) if isinstance(x, list) else x

        records = [OpRecord(**{k: (tup(v) if isinstance(v, list) else v) for k, v in r.items()}) for r in d["records"]]
        fp = {k: v for k, v in d["footprint"].items() if k != "total_bytes"}
        return cls(
            d["model"], d["mode"], d["batch"], d["param_count"], records, Footprint(**fp),
            [tuple(s) for s in d.get("input_shapes", [])], d.get("optimizer"), d.get("module_calls", 0),
        )  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        return cls.from_dict(json.loads(Path(path).read_text()))
