"""The compiled execution model: what a deployed stack (TensorRT, XLA, Neuron, torch.compile) runs
instead of one kernel per aten op.

`compile_trace(trace, stack)` groups a trace's ops into the kernels a compiling stack would launch,
following the trace's dataflow (each record's `reads` and `writes` tensor ids: a producer is the
last op that wrote an id, views write nothing), and returns a trace of one record per kernel. The
cost model then prices that trace exactly as it prices an eager one, so there is one pricing path.
A kernel reads each tensor that comes from outside it once and writes each tensor that something
outside it reads (or that nothing reads: the step's outputs, what the backward keeps); the tensors
that stay inside never touch DRAM. The rules, each switched by the stack (`hardware.stacks.Stack`, data
in hardware/stacks.toml with a source per rule):

- views cost nothing (no kernel), and neither do layout copies that only GEMMs, convolutions or
  attention read (`_absorbed`: the compiler passes a strided operand instead, as Inductor's
  reinterpret_tensor and TensorRT's shuffle fusion do);
- inference BatchNorm after a convolution is folded into the convolution's weights and bias
  (`fold_batchnorm`): no work, no bytes;
- epilogue fusion (`epilogue`): an elementwise op whose input is a GEMM's or convolution's only
  consumer runs in that kernel's epilogue (bias, activation, residual add: the residual is read);
- pointwise fusion (`pointwise`): chains of elementwise, normalization, softmax, reduction and
  copy ops, each the only consumer of its predecessor, run as one kernel;
- fused attention (`attention`): a batched GEMM followed by softmax (with its scaling, masking and
  dropout) and a second batched GEMM reading the probabilities is one FlashAttention-style kernel:
  no S x S tensor in memory;

and an op joins a kernel only when no other input it reads comes from a kernel that depends on that
kernel (no cycles). The literal eager execution (stack "eager": one kernel per op) is `trace` itself.
"""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from dataclasses import dataclass, field

from chipfit.cost.residency import out_bytes
from chipfit.errors import InputError
from chipfit.hardware.stacks import Execution, Stack, get_stack
from chipfit.trace import Trace
from chipfit.trace.records import OpRecord
from chipfit.vocab import OpClass

__all__ = ["BATCHNORM", "Kernel", "compile_trace", "kernels"]


MATRIX = frozenset({OpClass.MATMUL.value, OpClass.CONV.value, OpClass.ATTENTION.value})
POINTWISE = frozenset({
    OpClass.ELEMENTWISE.value, OpClass.NORMALIZATION.value, OpClass.SOFTMAX.value, OpClass.REDUCTION.value,
    OpClass.DATA_MOVEMENT.value,
})  # fmt: skip
BATCHNORM = frozenset({
    "aten.native_batch_norm.default", "aten._native_batch_norm_legit_no_training.default",
    "aten._native_batch_norm_legit.default", "aten.batch_norm.default", "aten.cudnn_batch_norm.default",
})  # fmt: skip


@dataclass
class Kernel:
    """One kernel of a compiled trace: its ops (record indices, in order) and what it is."""

    kind: str  # matrix | pointwise | attention | other
    members: list[int] = field(default_factory=list)
    folded: list[int] = field(default_factory=list)  # ops folded away (BatchNorm into a conv)
    softmax: bool = False  # a matrix kernel that has taken a softmax (attention in progress)
    matmuls: int = 0


Graph = tuple[list[list[int | None]], dict[int, set[int]], dict[tuple[int, int], set[int]]]


def _absorbed(trace: Trace) -> dict[int, int]:
    """Layout copies a compiler never runs: a data-movement op with one input and one output (clone,
    contiguous, an expand's copy) read only by GEMMs, convolutions or attention gets folded into their
    operand load as a strided access (Inductor hands extern GEMMs a reinterpret_tensor; TensorRT fuses
    shuffles). Returns {copy's output tensor id: its input's id}."""
    recs = trace.records
    _, readers, _ = _graph(trace, {})
    return {
        r.writes[0]: r.reads[0]
        for r in recs
        if r.op_class == OpClass.DATA_MOVEMENT.value and not r.is_view and len(r.reads) == 1 and len(r.writes) == 1
        and readers[r.index] and all(recs[i].op_class in MATRIX for i in readers[r.index])
    }  # fmt: skip


def _graph(trace: Trace, alias: dict[int, int]) -> Graph:
    """(for each record, the producer of each input or None; for each record, the records reading
    any of its outputs; for each (producer, tensor id), the records reading it). Views pass ids
    through and produce nothing; so do absorbed layout copies (`alias`: their output id -> input id)."""
    producer: dict[int, int] = {}
    preds: list[list[int | None]] = []
    readers: dict[int, set[int]] = defaultdict(set)
    tensor_readers: dict[tuple[int, int], set[int]] = defaultdict(set)
    for r in trace.records:
        reads = [alias.get(t, t) for t in r.reads]
        ps = [producer.get(t) for t in reads]
        preds.append(ps)
        if r.is_view or (r.writes and r.writes[0] in alias):
            continue
        for t, p in zip(reads, ps, strict=True):
            if p is not None:
                readers[p].add(r.index)
                tensor_readers[(p, t)].add(r.index)
        for t in r.writes:
            producer[t] = r.index
    return preds, readers, tensor_readers


def kernels(trace: Trace, stack: Stack) -> list[Kernel]:
    """The kernels `stack` runs `trace` as (views dropped), in launch order."""
    if stack.execution is Execution.EAGER:
        kinds = [("matrix" if r.op_class in MATRIX else "other", r.index) for r in trace.records if not r.is_view]
        return [Kernel(kind, [i]) for kind, i in kinds]
    alias = _absorbed(trace)
    preds, readers, _ = _graph(trace, alias)
    recs = trace.records
    scores = _attention_scores(trace, preds, readers) if stack.attention else set()
    out: list[Kernel] = []
    where: dict[int, int] = {}  # record -> its kernel
    deps: list[int] = []  # per kernel, a bit set of the kernels it depends on (itself included)
    for r in recs:
        if r.is_view or (r.writes and r.writes[0] in alias):
            continue
        k = _join(r, preds[r.index], readers, where, out, stack, trace.mode == "inference", scores, deps)
        if k is None:
            kind = "matrix" if r.op_class in MATRIX else "pointwise" if r.op_class in POINTWISE else "other"
            out.append(Kernel(kind, [r.index], matmuls=int(r.op_class == OpClass.MATMUL.value)))
            k = len(out) - 1
            deps.append(1 << k)
        for p in preds[r.index]:
            if p is not None:
                deps[k] |= deps[where[p]]
        where[r.index] = k
    return out


def _join(
    r: OpRecord,
    preds: list[int | None],
    readers: dict[int, set[int]],
    where: dict[int, int],
    out: list[Kernel],
    stack: Stack,
    inference: bool,
    scores: set[int],
    deps: list[int],
) -> int | None:
    """The kernel `r` joins, or None (a kernel of its own); updates that kernel. `scores`: the
    elementwise ops between an attention's first batched GEMM and its softmax (scale, mask)."""
    for p in preds:
        if p is None or readers[p] != {r.index}:
            continue  # an input from outside the graph, or one that something else reads too
        k = where[p]
        kern = out[k]
        if any(q is not None and where[q] != k and deps[where[q]] >> k & 1 for q in preds):
            continue  # another input comes from a kernel that depends on this one: joining would make a cycle
        cls = r.op_class
        if stack.fold_batchnorm and inference and r.op in BATCHNORM and kern.kind == "matrix" and not kern.softmax:
            kern.folded.append(r.index)
            return k
        if kern.kind == "matrix" and cls == OpClass.ELEMENTWISE.value and (stack.epilogue or r.index in scores):
            kern.members.append(r.index)
            return k
        if kern.kind == "matrix" and stack.attention and cls == OpClass.SOFTMAX.value and kern.matmuls == 1:
            kern.softmax = True
            kern.members.append(r.index)
            return k
        if kern.softmax and stack.attention and cls == OpClass.MATMUL.value and kern.matmuls == 1:
            kern.kind, kern.matmuls = "attention", 2
            kern.members.append(r.index)
            return k
        if kern.kind == "pointwise" and stack.pointwise and cls in POINTWISE:
            kern.members.append(r.index)
            return k
    return None


def _attention_scores(trace: Trace, preds: list[list[int | None]], readers: dict[int, set[int]]) -> set[int]:
    """The elementwise ops on a chain batched GEMM -> elementwise* -> softmax, each the only reader of
    the one before: an attention's scaling and masking, which a fused attention kernel takes in even
    where the stack fuses no other epilogue (Inductor's fuse_attention patterns)."""
    recs = trace.records
    out: set[int] = set()
    for r in recs:
        if r.op_class != OpClass.SOFTMAX.value:
            continue
        chain: list[int] = []
        cur = r.index
        while True:
            on_chain = (OpClass.MATMUL.value, OpClass.ELEMENTWISE.value)  # other inputs: a mask, a bias
            ps = [p for p in preds[cur] if p is not None and readers[p] == {cur} and recs[p].op_class in on_chain]
            if len(ps) != 1:
                break
            p = ps[0]
            if recs[p].op_class == OpClass.MATMUL.value:
                out.update(chain)
                break
            if recs[p].op_class != OpClass.ELEMENTWISE.value:
                break
            chain.append(p)
            cur = p
    return out


def _fused_record(
    trace: Trace, k: Kernel, index: int, preds: list[list[int | None]],
    tensor_readers: dict[tuple[int, int], set[int]], alias: dict[int, int],
) -> OpRecord:  # fmt: skip
    """The kernel as one record: its flops, the bytes it reads from outside (each tensor once) and the
    bytes it writes for readers outside (or for nobody: the step's outputs)."""
    recs = trace.records
    inside = set(k.members) | set(k.folded)
    main = next((recs[i] for i in k.members if recs[i].op_class in MATRIX), recs[k.members[0]])
    ins: dict[int, tuple[int, bool]] = {}  # tensor id -> (bytes, is a parameter), each read from outside once
    for i in k.members:
        m = recs[i]
        for t0, size, is_param, p in zip(m.reads, m.read_sizes, m.read_params, preds[i], strict=True):
            t = alias.get(t0, t0)
            if (p is not None and p in inside) or t in ins:
                continue  # produced inside the kernel, or already read by it
            ins[t] = (size, is_param)
    outs: dict[int, int] = {}  # tensor id -> bytes, each written for a reader outside (or for nobody)
    for i in [*k.members, *k.folded]:
        m = recs[i]
        mine = range(min(1, len(m.writes))) if i in k.folded else range(len(m.writes))  # a folded BN: its output
        for j in mine:
            who = tensor_readers.get((i, m.writes[j]), set())
            if who - inside or not who:
                outs[m.writes[j]] = out_bytes(m, j)
    read = sum(s for s, _ in ins.values())
    param = sum(s for s, p in ins.values() if p)
    written = sum(outs.values())
    flops = sum(recs[i].flops for i in k.members)
    names = "+".join(recs[i].op.split(".")[1] for i in [*k.members, *k.folded])
    op = recs[k.members[0]].op if len(k.members) == 1 and not k.folded else f"fused[{names}]"
    op_class = OpClass.ATTENTION.value if k.kind == "attention" else main.op_class
    return dataclasses.replace(
        main, index=index, op=op, op_class=op_class, flops=flops, bytes_read=read, bytes_written=written,
        param_bytes=param, reads=tuple(ins), writes=tuple(outs), read_sizes=tuple(s for s, _ in ins.values()),
        read_params=tuple(p for _, p in ins.values()), write_sizes=tuple(outs.values()),
    )  # fmt: skip


def compile_trace(trace: Trace, stack: Stack | str) -> Trace:
    """`trace` as `stack` runs it: one record per kernel (for eager, `trace` itself)."""
    stack = get_stack(stack) if isinstance(stack, str) else stack
    if stack.execution is Execution.EAGER:
        return trace
    if trace.records and not any(r.reads for r in trace.records):  # an op without tensor inputs can come first
        raise InputError(f"trace {trace.model!r} has no dataflow (saved by an older chipfit): trace it again")
    alias = _absorbed(trace)
    preds, _, tensor_readers = _graph(trace, alias)
    ks = kernels(trace, stack)
    records = [_fused_record(trace, k, i, preds, tensor_readers, alias) for i, k in enumerate(ks)]
    # allocations (empty, zeros of nothing) are no kernels in a compiled program
    records = [dataclasses.replace(r, index=i) for i, r in enumerate(x for x in records if x.flops or x.bytes)]
    return dataclasses.replace(trace, records=records, module_calls=0)
