"""What an aten op is: its class, FLOPs, bytes moved and GEMM shape, from shapes alone.

FLOPs come from torch's own registered formulas (torch.utils.flop_counter) where
they exist: matmuls, convolutions, attention kernels. chipfit adds formulas for
what that registry leaves out. Those are CPU scaled-dot-product attention, and
per-element counts for elementwise, reduction, normalization and softmax ops,
which run on vector units. An op with neither is *uncosted* and listed as such.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.flop_counter import flop_registry

from chipfit.errors import InputError
from chipfit.vocab import MATRIX_CLASSES, OpClass

__all__ = [
    "OP_CLASSES",
    "OP_RULES",
    "PREFIX_RULES",
    "OpRule",
    "classify",
    "gemm_shape",
    "is_view",
    "op_flops",
    "register_op",
    "rule_for",
]

OP_CLASSES: tuple[OpClass, ...] = tuple(OpClass)

_MATMUL = {"mm", "addmm", "bmm", "baddbmm", "_scaled_mm", "dot", "mv", "addmv", "matmul", "linear", "_int_mm"}
_CONV = {"convolution", "_convolution", "convolution_backward", "_slow_conv2d_forward", "_slow_conv2d_backward",
         "convolution_overrideable", "cudnn_convolution", "mkldnn_convolution", "thnn_conv2d"}  # fmt: skip
_ATTN_PREFIX = ("_scaled_dot_product", "_flash_attention", "_efficient_attention", "flex_attention")
_SOFTMAX = {
    "_softmax",
    "_log_softmax",
    "_softmax_backward_data",
    "_log_softmax_backward_data",
    "softmax",
    "log_softmax",
}
_NORM = {"native_layer_norm", "native_layer_norm_backward", "native_batch_norm", "native_batch_norm_backward",
         "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
         "_native_batch_norm_legit_functional",
         "native_group_norm", "native_group_norm_backward", "_fused_rms_norm", "_fused_rms_norm_backward",
         "batch_norm", "layer_norm", "group_norm", "rms_norm", "cudnn_batch_norm",
         "cudnn_batch_norm_backward"}  # fmt: skip
_EMBED = {"embedding", "embedding_dense_backward", "index_select", "gather", "index", "index_put", "index_put_",
          "scatter", "scatter_add", "scatter_add_", "_embedding_bag", "take", "index_add", "index_add_"}  # fmt: skip
_REDUCE = {"sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "var", "std", "var_mean", "prod",
           "norm", "linalg_vector_norm", "cumsum", "logsumexp", "nll_loss_forward", "nll_loss_backward",
           "nll_loss2d_forward", "mse_loss", "mse_loss_backward", "max_pool2d_with_indices",
           "max_pool2d_with_indices_backward", "avg_pool2d", "avg_pool2d_backward", "_adaptive_avg_pool2d",
           "_adaptive_avg_pool2d_backward", "adaptive_max_pool2d", "all", "any", "topk", "sort"}  # fmt: skip
# reshapes whose schema carries no alias annotation but that never copy (matmul's decomposition uses them)
_FREE_RESHAPES = {"_unsafe_view"}
# copies, allocations and fills: bytes, no arithmetic
_MOVE = {"clone", "copy_", "_to_copy", "cat", "stack", "contiguous", "constant_pad_nd", "repeat", "new_zeros",
         "new_ones", "new_empty", "new_full", "zeros", "ones", "empty", "full", "zeros_like", "ones_like",
         "empty_like", "full_like", "fill_", "zero_", "arange", "lift_fresh", "lift_fresh_copy",
         "where", "masked_fill", "masked_fill_", "tril", "triu", "flip", "roll", "repeat_interleave",
         "empty_strided", "scalar_tensor", "randn", "rand", "randint", "normal_", "uniform_", "bernoulli_",
         "native_dropout", "native_dropout_backward", "_local_scalar_dense", "resize_", "set_",
         "slice_backward", "select_backward", "expand_copy", "permute_copy", "t_copy", "view_copy"}  # fmt: skip


# Per-element cost of transcendental functions in multiply-add equivalents (chipfit's estimate;
# measured on a 2-core AVX-512 CPU with torch 2.13 relative to a multiply: gelu 6x, exp 5x,
# sigmoid 4x, silu 5x, tanh 15x, erf 7x, rsqrt 1.5x). Backward variants count double.
TRANSCENDENTAL = {"gelu": 6, "exp": 5, "sigmoid": 4, "silu": 5, "tanh": 15, "erf": 7, "log": 5, "sin": 6, "cos": 6,
                  "rsqrt": 2, "sqrt": 2, "pow": 2, "softplus": 6, "mish": 8, "hardswish": 2, "log_sigmoid": 6,
                  "elu": 5, "expm1": 5, "log1p": 5}  # fmt: skip


_POOL = {"max_pool2d_with_indices", "max_pool2d", "avg_pool2d", "max_pool3d_with_indices", "avg_pool3d"}


def _name(func: Any) -> str:
    return str(func._overloadpacket.__name__) if hasattr(func, "_overloadpacket") else str(func).split(".")[-2]


def is_view(func: Any) -> bool:
    """True when the op returns an alias of an input without writing it (view / metadata op)."""
    schema = getattr(func, "_schema", None)
    if schema is None or not schema.returns:
        return False
    alias = schema.returns[0].alias_info
    return alias is not None and not alias.is_write


Shapes = list[tuple[int, ...]]
FlopsFn = Callable[[str, tuple[Any, ...], Shapes, Shapes], int]  # (name, args, in_shapes, out_shapes) -> flops
GemmFn = Callable[[str, Shapes, Shapes], tuple[int, int, int, int]]  # -> (M, N, K, batch)


@dataclass(frozen=True)
class OpRule:
    """What chipfit knows of an aten op (by its overload packet's name): its class, and where the
    class's default does not fit, its FLOPs (torch's own formula, where torch registers one,
    wins) and its GEMM shape for the matrix-unit models."""

    op_class: OpClass
    flops: FlopsFn | None = None
    gemm: GemmFn | None = None


OP_RULES: dict[str, OpRule] = {}
# ops known by a name prefix (attention kernels come in many variants)
PREFIX_RULES: dict[str, OpRule] = {}


def register_op(*names: str, op_class: OpClass, flops: FlopsFn | None = None, gemm: GemmFn | None = None,
                prefix: bool = False) -> OpRule:  # fmt: skip
    """Tell chipfit what the aten ops `names` are: the one place a new op is classified and costed.
    Registering a name twice is an error."""
    rule = OpRule(OpClass(op_class), flops, gemm)
    table = PREFIX_RULES if prefix else OP_RULES
    for name in names:
        if name in table:
            raise InputError(f"aten op {name!r} is already registered as {table[name].op_class}")
        table[name] = rule
    return rule


def rule_for(name: str) -> OpRule | None:
    rule = OP_RULES.get(name)
    if rule is None:
        rule = next((r for p, r in PREFIX_RULES.items() if name.startswith(p)), None)
    return rule


def classify(func: Any, phase: str) -> OpClass:
    """The op class: views by their schema, then the registry (matrix ops keep their class in the
    optimizer phase; every other optimizer-phase op is `optimizer`), then torch's pointwise tag
    (and gradients of pointwise ops) for elementwise; anything else is `other` (uncosted)."""
    name = _name(func)
    if is_view(func) or name in _FREE_RESHAPES:
        return OpClass.VIEW
    rule = rule_for(name)
    if rule is not None and rule.op_class in MATRIX_CLASSES:
        return rule.op_class
    if phase == "optimizer":
        return OpClass.OPTIMIZER
    if rule is not None:
        return rule.op_class
    if torch.Tag.pointwise in getattr(func, "tags", ()) or name.startswith("_foreach_"):
        return OpClass.ELEMENTWISE
    if name.endswith("_backward") and _is_pointwise(name[: -len("_backward")]):
        return OpClass.ELEMENTWISE  # gradients of pointwise ops (threshold, hardtanh, gelu, silu, ...) are pointwise
    return OpClass.OTHER


def _is_pointwise(name: str) -> bool:
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return False
    overload = getattr(packet, "default", None)
    return overload is not None and torch.Tag.pointwise in overload.tags


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def _mm_gemm(a: int, b: int) -> GemmFn:
    """(M, K) @ (K, N) from inputs a and b (addmm's first input is the bias)."""

    def gemm(_name: str, ins: Shapes, _outs: Shapes) -> tuple[int, int, int, int]:
        (m, k), (_, n) = ins[a], ins[b]
        return m, n, k, 1

    return gemm


def _bmm_gemm(a: int, b: int) -> GemmFn:
    def gemm(_name: str, ins: Shapes, _outs: Shapes) -> tuple[int, int, int, int]:
        (batch, m, k), (_, _, n) = ins[a], ins[b]
        return m, n, k, batch

    return gemm


def _conv_gemm(name: str, ins: Shapes, outs: Shapes) -> tuple[int, int, int, int]:
    """Implicit GEMM: M = N*H*W of the output, N = Cout per group, K = Cin*kh*kw; batch = groups."""
    if name == "convolution_backward":
        grad_out, inp, weight = ins[0], ins[1], ins[2]
    else:
        inp, weight, grad_out = ins[0], ins[1], outs[0]
    groups = max(1, inp[1] // weight[1]) if weight[1] else 1
    m = grad_out[0] * _numel(grad_out[2:])
    return m, weight[0] // groups, weight[1] * _numel(weight[2:]), groups


def _attention_gemm(name: str, ins: Shapes, _outs: Shapes) -> tuple[int, int, int, int]:
    qs, ks = (ins[1], ins[2]) if name.endswith("backward") else (ins[0], ins[1])
    return qs[-2], ks[-2], qs[-1], _numel(qs[:-2])


def _sdpa_flops(name: str, _args: tuple[Any, ...], ins: Shapes, _outs: Shapes) -> int:
    """CPU scaled-dot-product attention, which torch's registry leaves out: QK^T and PV,
    2 * (2 * B*H * Sq * Sk * D) forward; the backward twice that."""
    backward = name.endswith("backward")
    q, k = (ins[1], ins[2]) if backward else (ins[0], ins[1])
    forward = 4 * _numel(q[:-2]) * q[-2] * k[-2] * q[-1]
    return 2 * forward if backward else forward


def _pool_flops(_name: str, args: tuple[Any, ...], _ins: Shapes, outs: Shapes) -> int:
    """A compare (or add) per window element per output."""
    if len(args) < 2 or not isinstance(args[1], (list, tuple)):
        raise InputError("no kernel size: the class's per-element count applies")
    window = math.prod(int(v) for v in args[1]) if args[1] else 1
    return 2 * window * _numel(outs[0])


def _transcendental(weight: int) -> FlopsFn:
    def flops(name: str, _args: tuple[Any, ...], _ins: Shapes, outs: Shapes) -> int:
        return weight * (2 if name.endswith("_backward") else 1) * sum(_numel(s) for s in outs)

    return flops


# per element of (output | first input), by class, where no rule gives the FLOPs
_PER_ELEMENT = {OpClass.ELEMENTWISE: (1, "out"), OpClass.OPTIMIZER: (2, "out"), OpClass.REDUCTION: (1, "in"),
                OpClass.NORMALIZATION: (5, "in"), OpClass.SOFTMAX: (5, "in")}  # fmt: skip
_NO_ARITHMETIC = (OpClass.EMBEDDING, OpClass.DATA_MOVEMENT, OpClass.VIEW)


def op_flops(
    func: Any,
    op_class: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    in_shapes: Shapes,
    out_shapes: Shapes,
) -> tuple[int, str]:
    """(flops, source) with source 'torch' (torch's registered formula), 'chipfit' (a rule or the
    class's per-element count) or 'none' (nothing known: the op is reported as uncosted)."""
    packet = getattr(func, "_overloadpacket", None)
    if packet in flop_registry:
        return int(flop_registry[packet](*args, **kwargs, out_val=out)), "torch"
    name = _name(func)
    rule = rule_for(name)
    if rule is not None and rule.flops is not None and rule.op_class == op_class:
        try:
            return int(rule.flops(name, args, in_shapes, out_shapes)), "chipfit"
        except (IndexError, ValueError, TypeError):
            pass  # shapes the formula does not cover: the class's default below
    if op_class in _PER_ELEMENT:
        per_element, of = _PER_ELEMENT[OpClass(op_class)]
        out_elems = sum(_numel(s) for s in out_shapes)
        n = out_elems if of == "out" or not in_shapes else _numel(in_shapes[0])
        return per_element * n, "chipfit"
    if op_class in _NO_ARITHMETIC:
        return 0, "chipfit"
    return 0, "none"


def gemm_shape(op_class: str, name: str, in_shapes: Shapes, out_shapes: Shapes) -> tuple[int, int, int, int] | None:
    """(M, N, K, batch) of a matmul-like op, for tiling onto matrix units (None where unknown)."""
    rule = rule_for(name)
    if rule is None or rule.gemm is None or rule.op_class != op_class:
        return None
    try:
        return rule.gemm(name, in_shapes, out_shapes)
    except (IndexError, ValueError, ZeroDivisionError):
        return None


# ------------------------------------------------------------ the built-in rules
register_op("mm", "_int_mm", "_scaled_mm", op_class=OpClass.MATMUL, gemm=_mm_gemm(0, 1))
register_op("addmm", op_class=OpClass.MATMUL, gemm=_mm_gemm(1, 2))
register_op("bmm", op_class=OpClass.MATMUL, gemm=_bmm_gemm(0, 1))
register_op("baddbmm", op_class=OpClass.MATMUL, gemm=_bmm_gemm(1, 2))
register_op(*(_MATMUL - {"mm", "_int_mm", "_scaled_mm", "addmm", "bmm", "baddbmm"}), op_class=OpClass.MATMUL)
register_op(*_CONV, op_class=OpClass.CONV, gemm=_conv_gemm)
register_op("_scaled_dot_product", op_class=OpClass.ATTENTION, flops=_sdpa_flops, gemm=_attention_gemm, prefix=True)
register_op(*(p for p in _ATTN_PREFIX if p != "_scaled_dot_product"), op_class=OpClass.ATTENTION,
            gemm=_attention_gemm, prefix=True)  # fmt: skip
# in the order the classes win where a name is in two sets
_taken = set(OP_RULES)
for _names, _cls, _flops in [
    (_SOFTMAX, OpClass.SOFTMAX, None),
    (_NORM, OpClass.NORMALIZATION, None),
    (_EMBED, OpClass.EMBEDDING, None),
    (_REDUCE & _POOL, OpClass.REDUCTION, _pool_flops),
    (_REDUCE - _POOL, OpClass.REDUCTION, None),
    (_MOVE, OpClass.DATA_MOVEMENT, None),
    (_POOL, OpClass.REDUCTION, _pool_flops),
]:
    _new = sorted(set(_names) - _taken)
    register_op(*_new, op_class=_cls, flops=_flops)
    _taken |= set(_new)
for _op, _w in TRANSCENDENTAL.items():  # pointwise by torch's tag; registered for their weights
    register_op(*sorted({_op, f"{_op}_backward"} - _taken), op_class=OpClass.ELEMENTWISE, flops=_transcendental(_w))
