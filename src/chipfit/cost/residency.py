"""What an op reads from on-chip memory because an earlier op left it there.

A GPU's L2 (a CPU's last-level cache, an accelerator's SRAM) is write-back and write-allocating: a
kernel's output lands in it, and the next kernel that reads that tensor finds whatever part has not
been evicted since. Between an op and its producer lie the bytes of every tensor touched in between
(the reuse distance); under least-recently-used replacement a tensor is still there when those bytes
fit beside it (Mattson, Gecsei, Slutz and Traiger, "Evaluation techniques for storage hierarchies",
IBM Systems Journal 9(2), 1970: a cache of capacity C hits exactly the references whose stack distance
is below C). This module replays a trace's dataflow (each record's `reads` and `writes` tensor ids)
through an LRU of the device's on-chip capacity, at tensor granularity, and returns per record the
bytes of activations it reads that hit.

Approximations, each labelled:

- granularity: a tensor evicted in part keeps its most recently used share resident, and a reader
  hits that share (`min(resident, size)`); a line-level LRU rescanning a partly resident tensor from
  its start can do worse (the misses evict its own tail);
- writes: every byte an op writes is charged to main memory once, the dirty line's eventual
  write-back, whether or not a reader found it on chip first (dead activations are still written
  back: the cache does not know they are dead);
- weights: parameters pass through the cache (they occupy it and evict activations) but are priced
  as before (from main memory unless the whole model fits on chip: cost.estimate._memory);
- a single pass over one step, starting cold (nothing resident): an op whose whole working set fits
  on chip is priced on chip regardless, as before (the steady state of repeated steps).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator

from chipfit.trace import Trace
from chipfit.trace.records import OpRecord

__all__ = ["DTYPE_BYTES", "out_bytes", "resident_reads", "resident_reads_reference", "write_sizes"]

DTYPE_BYTES = {"float64": 8, "int64": 8, "complex64": 8, "float32": 4, "int32": 4, "float16": 2, "bfloat16": 2,
               "int16": 2, "int8": 1, "uint8": 1, "bool": 1, "float8_e4m3fn": 1, "float8_e5m2": 1}  # fmt: skip


def out_bytes(rec: OpRecord, i: int) -> int:
    """Bytes of the record's `i`-th output, from its shape and dtype."""
    n = 1
    for d in rec.output_shapes[i]:
        n *= d
    return n * DTYPE_BYTES.get(rec.output_dtypes[i], 4)


def write_sizes(rec: OpRecord) -> tuple[int, ...]:
    """Bytes of each tensor the record writes (aligned with `rec.writes`): a kernel record carries them,
    a traced op's come from its output shapes."""
    if rec.write_sizes:
        return rec.write_sizes
    return tuple(out_bytes(rec, j) for j in range(min(len(rec.writes), len(rec.output_shapes))))


Touches = tuple[list[tuple[int, float, bool]], list[tuple[int, float]]]


def _touches(trace: Trace, capacity_bytes: float, scale: float) -> Iterator[Touches]:
    """Per record, nothing where it touches no memory (a view, or no cache at all), else (each input once: id,
    bytes at the compute format, is a parameter; then every tensor it leaves in the cache, inputs first and
    outputs after, most recent last: id, bytes, at most the capacity). An in-place op's output id is one of
    its inputs: it moves to the end once."""
    for rec in trace.records:
        if rec.is_view or capacity_bytes <= 0:
            yield [], []
            continue
        reads: list[tuple[int, float, bool]] = []
        for t, size, param in zip(rec.reads, rec.read_sizes, rec.read_params, strict=False):
            if all(t != r[0] for r in reads):
                reads.append((t, size * scale, param))
        left = [(t, s) for t, s, _ in reads] + [
            (t, s * scale) for t, s in zip(rec.writes, write_sizes(rec), strict=False)
        ]
        last = {t: i for i, (t, _) in enumerate(left)}
        yield reads, [(t, min(s, capacity_bytes)) for i, (t, s) in enumerate(left) if last[t] == i]


def resident_reads(trace: Trace, capacity_bytes: float, scale: float = 1.0) -> list[float]:
    """Per record of `trace`, the bytes of activations (at the compute format: traced bytes x `scale`)
    it reads that an LRU cache of `capacity_bytes`, replaying the trace from cold, still holds.
    Views and records without dataflow read nothing from it. O(records x tensors touched)."""
    lru: OrderedDict[int, float] = OrderedDict()  # tensor id -> bytes resident, least recently used first
    total = 0.0
    out: list[float] = []
    for reads, left in _touches(trace, capacity_bytes, scale):
        hit = 0.0
        for t, size, param in reads:
            hit += 0.0 if param else min(lru.get(t, 0.0), size)
        for t, size in left:
            total += size - lru.pop(t, 0.0)
            lru[t] = size
        while total > capacity_bytes * (1 + 1e-12):
            t, res = lru.popitem(last=False)
            over = total - capacity_bytes
            if res > over:  # the least recently used tensor keeps its newer share
                lru[t] = res - over
                lru.move_to_end(t, last=False)
                total = capacity_bytes
            else:
                total -= res
        out.append(hit)
    return out


def resident_reads_reference(trace: Trace, capacity_bytes: float, scale: float = 1.0) -> list[float]:
    """The oracle for `resident_reads`: the same LRU as a plain list of [id, bytes] pairs, most recent
    last, each access a linear search (quadratic; for tests)."""
    stack: list[list[float]] = []
    out: list[float] = []
    for reads, left in _touches(trace, capacity_bytes, scale):
        held = {i: b for i, b in stack}
        out.append(sum(min(held.get(t, 0.0), size) for t, size, param in reads if not param))
        for t, size in left:
            stack = [e for e in stack if e[0] != t] + [[t, size]]
        while sum(b for _, b in stack) > capacity_bytes * (1 + 1e-12):
            over = sum(b for _, b in stack) - capacity_bytes
            if stack[0][1] > over:
                stack[0][1] -= over
            else:
                stack.pop(0)
    return out
