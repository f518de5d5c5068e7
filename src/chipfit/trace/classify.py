"""What an aten op is: its class, FLOPs, bytes moved and GEMM shape, from shapes alone.

FLOPs come from torch's own registered formulas (torch.utils.flop_counter) where
they exist: matmuls, convolutions, attention kernels. chipfit adds formulas for
what that registry leaves out. Those are CPU scaled-dot-product attention, and
per-element counts for elementwise, reduction, normalization and softmax ops,
which run on vector units. An op with neither is *uncosted* and listed as such.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.flop_counter import flop_registry

from chipfit.vocab import OpClass

__all__ = ["OP_CLASSES", "classify", "gemm_shape", "is_view", "op_flops"]

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


def classify(func: Any, phase: str) -> str:
    """The op class; optimizer-phase ops are `optimizer` whatever they compute."""
    name = _name(func)
    if is_view(func) or name in _FREE_RESHAPES:
        return "view"
    if name in _MATMUL:
        return "matmul"
    if name in _CONV:
        return "conv"
    if name.startswith(_ATTN_PREFIX):
        return "attention"
    if phase == "optimizer":
        return "optimizer"
    if name in _SOFTMAX:
        return "softmax"
    if name in _NORM:
        return "normalization"
    if name in _EMBED:
        return "embedding"
    if name in _REDUCE:
        return "reduction"
    if name in _MOVE:
        return "data-movement"
    if torch.Tag.pointwise in getattr(func, "tags", ()) or name.startswith("_foreach_"):
        return "elementwise"
    if name.endswith("_backward") and _is_pointwise(name[: -len("_backward")]):
        return "elementwise"  # gradients of pointwise ops (threshold, hardtanh, gelu, silu, ...) are pointwise
    return "other"


def _is_pointwise(name: str) -> bool:
    packet = getattr(torch.ops.aten, name, None)
    if packet is None:
        return False
    overload = getattr(packet, "default", None)
    return overload is not None and torch.Tag.pointwise in overload.tags


def _numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def op_flops(
    func: Any,
    op_class: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    out: Any,
    in_shapes: list[tuple[int, ...]],
    out_shapes: list[tuple[int, ...]],
) -> tuple[int, str]:
    """(flops, source) with source 'torch', 'chipfit' or 'none'."""
    packet = getattr(func, "_overloadpacket", None)
    if packet in flop_registry:
        return int(flop_registry[packet](*args, **kwargs, out_val=out)), "torch"
    name = _name(func)
    if op_class == "attention" and name.startswith("_scaled_dot_product") and len(in_shapes) >= 3:
        backward = name.endswith("backward")
        q, k = (in_shapes[1], in_shapes[2]) if backward else (in_shapes[0], in_shapes[1])
        forward = 4 * _numel(q[:-2]) * q[-2] * k[-2] * q[-1]  # QK^T and PV: 2 * (2 * B*H * Sq * Sk * D)
        return (2 * forward if backward else forward), "chipfit"
    out_elems = sum(_numel(s) for s in out_shapes)
    if name in _POOL and len(args) > 1 and isinstance(args[1], (list, tuple)):
        window = math.prod(int(v) for v in args[1]) if args[1] else 1
        return 2 * window * _numel(out_shapes[0]), "chipfit"  # compare (and index) per window element
    if op_class == "elementwise" and name.removesuffix("_backward") in TRANSCENDENTAL:
        weight = TRANSCENDENTAL[name.removesuffix("_backward")] * (2 if name.endswith("_backward") else 1)
        return weight * out_elems, "chipfit"
    in_elems = _numel(in_shapes[0]) if in_shapes else out_elems
    per = {"elementwise": (1, out_elems), "optimizer": (2, out_elems), "reduction": (1, in_elems),
           "normalization": (5, in_elems), "softmax": (5, in_elems)}  # fmt: skip
    if op_class in per:
        per_element, n = per[op_class]
        return per_element * n, "chipfit"
    if op_class in ("embedding", "data-movement", "view"):
        return 0, "chipfit"
    return 0, "none"


def gemm_shape(
    op_class: str, name: str, in_shapes: list[tuple[int, ...]], out_shapes: list[tuple[int, ...]]
) -> tuple[int, int, int, int] | None:
    """(M, N, K, batch) of a matmul-like op, for tiling onto matrix units."""
    try:
        if op_class == "matmul":
            if name in ("mm", "_int_mm", "_scaled_mm"):
                (m, k), (_, n) = in_shapes[0], in_shapes[1]
                return m, n, k, 1
            if name == "addmm":
                (m, k), (_, n) = in_shapes[1], in_shapes[2]
                return m, n, k, 1
            if name == "bmm":
                (b, m, k), (_, _, n) = in_shapes[0], in_shapes[1]
                return m, n, k, b
            if name == "baddbmm":
                (b, m, k), (_, _, n) = in_shapes[1], in_shapes[2]
                return m, n, k, b
        if op_class == "conv":
            if name == "convolution_backward":
                grad_out, inp, weight = in_shapes[0], in_shapes[1], in_shapes[2]
            else:
                inp, weight, grad_out = in_shapes[0], in_shapes[1], out_shapes[0]
            groups = max(1, inp[1] // weight[1]) if weight[1] else 1
            m = grad_out[0] * _numel(grad_out[2:])
            return m, weight[0] // groups, weight[1] * _numel(weight[2:]), groups
        if op_class == "attention" and len(in_shapes) >= 3:
            qs, ks = (in_shapes[1], in_shapes[2]) if name.endswith("backward") else (in_shapes[0], in_shapes[1])
            return qs[-2], ks[-2], qs[-1], _numel(qs[:-2])
    except (IndexError, ValueError, ZeroDivisionError):
        return None
    return None
