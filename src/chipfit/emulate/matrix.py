"""Matrix kernels under a chip's numerics, registered by aten op: a new matrix op is one
function with `@handles(aten.<op>.<overload>)`, not an edit of the dispatch mode.

Each kernel takes the mode (its policy, its operand choice, its per-site scale state and weight
cache) and the op's arguments, and returns the FP32 result before output rounding; the mode
stores it in the policy's output format. Matrix ops with no kernel here have their float
inputs rounded and run in FP32 (`EmulationMode._fake_quant`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from chipfit.emulate.accumulate import chunked_matmul
from chipfit.emulate.policy import NumericsPolicy, Operand
from chipfit.emulate.scaling import Inv, format_max, round_to
from chipfit.emulate.storage import FP32 as _FP32
from chipfit.errors import InputError

if TYPE_CHECKING:
    from chipfit.emulate.mode import EmulationMode

__all__ = ["MATRIX_KERNELS", "Kernel", "handles", "short_name"]

aten = torch.ops.aten
_EXACT_F32 = 2**24

Kernel = Callable[["EmulationMode", Any, tuple[Any, ...], dict[str, Any]], Any]
MATRIX_KERNELS: dict[Any, Kernel] = {}


def handles(*ops: Any) -> Callable[[Kernel], Kernel]:
    """Register a kernel for aten ops (OpOverloads); registering one op twice is an error."""

    def deco(fn: Kernel) -> Kernel:
        for op in ops:
            if op in MATRIX_KERNELS:
                raise InputError(f"{op} already has a matrix kernel ({MATRIX_KERNELS[op].__name__})")
            MATRIX_KERNELS[op] = fn
        return fn

    return deco


def short_name(func: Any) -> str:
    """`aten.addmm.default` -> `addmm`."""
    return str(func._overloadpacket.__name__)


def gemm(m: EmulationMode, a: torch.Tensor, b: torch.Tensor, site: tuple[Any, ...], b_role: str = "b") -> torch.Tensor:
    """a (..., M, K) @ b (..., K, N) under the policy, FP32 result before output rounding."""
    oa, ob = m._operand(a, "a"), m._operand(b, b_role)
    qa, ia = m._prepare(a, oa, site, "a", row_dim=-2, k_dim=-1)
    qb, ib = m._prepare(b, ob, site, "b", channel_dim=-1, k_dim=-2)
    watch_operands(m, (a, qa, ia), (b, qb, ib))
    if oa.integer and ob.integer:
        out = _exact_integer(torch.matmul, qa, qb, a.shape[-1], m.run.notes, _int_max(oa) * _int_max(ob))
    else:
        out = chunked_matmul(qa, qb, m.policy.accumulate)
    return _epilogue(out, ia, ib)


def watch_operands(m: EmulationMode, *ops: tuple[torch.Tensor, torch.Tensor, Inv]) -> None:
    """Backward: count what rounding gradient operands to the matrix format flushes or overflows
    (a gradient made by an FP32 op is cast here, as autocast casts it)."""
    if m.watch is None or m.phase != "backward":
        return
    for t, q, inv in ops:
        if t in m.grads:
            m.watch.record(f"{m.current} (input cast)", t, _epilogue(q.clone(), inv, 1.0))


@handles(aten.mm.default, aten.bmm.default)
def mm(m: EmulationMode, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    a, b = args[0], args[1]
    return gemm(m, a, b, m._site(short_name(func)))


@handles(aten.addmm.default, aten.baddbmm.default)
def addmm(m: EmulationMode, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    bias, a, b = args[0], args[1], args[2]
    beta = kwargs.get("beta", 1)
    alpha = kwargs.get("alpha", 1)
    out = gemm(m, a, b, m._site(short_name(func)))
    if alpha != 1:
        out = out * alpha
    if beta != 0:  # out is this GEMM's own result: the bias is added in place
        bb = cast_bias(m, bias)
        out.add_(bb if beta == 1 else beta * bb)
    return out


def cast_bias(m: EmulationMode, bias: torch.Tensor) -> torch.Tensor:
    """Autocast casts the bias with the other inputs; integer GEMMs keep an FP32 (INT32-scaled) bias."""
    fmt = m.policy.output
    if fmt == _FP32 or m.storage.format_of(bias) == fmt:
        return bias
    if not isinstance(bias, nn.Parameter):
        return round_to(bias.detach(), fmt)
    return m.storage.cached(bias, ("bias", fmt), lambda: round_to(bias.detach(), fmt))  # type: ignore[no-any-return]


@handles(aten.convolution.default)
def conv(m: EmulationMode, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    x, w, bias, stride, padding, dilation, transposed, output_padding, groups = args
    site = m._site("convolution")
    ox, ow = m._operand(x, "a"), m._operand(w, "b")
    qx, ix = m._prepare(x, ox, site, "a", k_dim=1)
    ch, kd = (1, 0) if transposed else (0, 1)
    qw, iw = m._prepare(w, ow, site, "b", channel_dim=ch, k_dim=kd)
    watch_operands(m, (x, qx, ix), (w, qw, iw))

    def fp32_conv(xx: torch.Tensor, ww: torch.Tensor) -> torch.Tensor:
        res: torch.Tensor = aten.convolution(
            xx, ww, None, stride, padding, dilation, transposed, output_padding, groups
        )
        return res

    k = int(w[0].numel()) if not transposed else int(w.shape[0] // groups * math.prod(w.shape[2:]))
    if ox.integer and ow.integer:
        out = _exact_integer(fp32_conv, qx, qw, k, m.run.notes, _int_max(ox) * _int_max(ow))
    elif m.policy.accumulate.default:
        out = fp32_conv(qx, qw)
    else:
        out = _conv_chunked(qx, qw, stride, padding, dilation, transposed, groups, m.policy)
    if isinstance(iw, torch.Tensor) and iw.dim():
        iw = iw.reshape(1, -1, *([1] * (out.dim() - 2)))
    out = _epilogue(out, ix, iw)
    if bias is not None:
        out.add_(cast_bias(m, bias).reshape(1, -1, *([1] * (out.dim() - 2))))  # out is the conv's own result
    return out


@handles(aten._scaled_dot_product_flash_attention_for_cpu.default)
def sdpa(
    m: EmulationMode, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[torch.Tensor, torch.Tensor]:
    q, k, v = args[0], args[1], args[2]
    dropout_p = args[3] if len(args) > 3 else kwargs.get("dropout_p", 0.0)
    is_causal = args[4] if len(args) > 4 else kwargs.get("is_causal", False)
    mask = kwargs.get("attn_mask")
    scale = kwargs.get("scale")
    if dropout_p:
        raise NotImplementedError("emulated attention does not support dropout; call model.eval()")
    site = m._site("sdpa")
    s = gemm(m, q, k.transpose(-2, -1), (*site, "qk"), b_role="a")
    s = s * (scale if scale is not None else 1.0 / math.sqrt(q.shape[-1]))
    if is_causal:
        causal = torch.ones(q.shape[-2], k.shape[-2], dtype=torch.bool).tril()
        s = s.masked_fill(~causal, float("-inf"))
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else s + mask
    lse = torch.logsumexp(s, dim=-1)
    p = torch.softmax(s, dim=-1)  # FP32; the PV GEMM rounds P to the input format
    out = gemm(m, p, v, (*site, "pv"), b_role="a")
    return out, lse


def _epilogue(out: torch.Tensor, ia: Inv, ib: Inv) -> torch.Tensor:
    """D = acc * (scale_inv_a * scale_inv_b), the product of per-tensor scales taken once in FP32
    as scaled GEMMs (cuBLASLt's alpha, `_scaled_mm`, TensorRT's fused per-channel scale) do;
    per-channel/row scales broadcast."""
    if isinstance(ia, float) and isinstance(ib, float):  # out is the GEMM's own result: scaled in place
        return out if ia == 1.0 and ib == 1.0 else out.mul_(float(np.float32(ia) * np.float32(ib)))
    return out * (ia * ib)


def _int_max(op: Operand) -> float:
    return format_max(op.format)


def _exact_integer(
    op: Any, qa: torch.Tensor, qb: torch.Tensor, k: int, notes: list[str], code_prod: float
) -> torch.Tensor:
    """Integer operands (as float32 integers): the INT32 accumulation, exactly, as float32.

    Every partial sum is an integer below K*max|a|*max|b|; under 2^24 FP32 holds it exactly in
    any order, else float64 does (below 2^53). The INT32 result is rounded once to FP32, as the
    epilogue's conversion does. code_prod is the formats' largest product: when K times it is
    under 2^24 the operands need not be measured."""
    if k * code_prod < _EXACT_F32:
        return op(qa, qb)  # type: ignore[no-any-return]
    bound = k * float(qa.abs().max()) * float(qb.abs().max()) if qa.numel() and qb.numel() else 0.0
    if bound >= 2**31:
        msg = f"INT32 accumulator may overflow: K={k}, bound {bound:.3g} >= 2^31 (not modelled: sums kept exact)"
        if msg not in notes:
            notes.append(msg)
    if bound < _EXACT_F32:
        return op(qa, qb)  # type: ignore[no-any-return]
    return op(qa.double(), qb.double()).float()  # type: ignore[no-any-return]


def _conv_chunked(
    x: torch.Tensor,
    w: torch.Tensor,
    stride: Any,
    padding: Any,
    dilation: Any,
    transposed: bool,
    groups: int,
    policy: NumericsPolicy,
) -> torch.Tensor:
    """2-D convolution as im2col + chunked GEMM, so narrow accumulators apply to convs too."""
    if transposed or x.dim() != 4:
        raise NotImplementedError(
            "chunked accumulation supports 2-D, non-transposed convolutions; use accumulate='fp32' for this model"
        )
    n, _cin, h, wd = x.shape
    cout, cin_g, kh, kw = w.shape
    cols = F.unfold(x, (kh, kw), dilation=dilation, padding=padding, stride=stride)  # (N, Cin*kh*kw, L)
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    outs = []
    per_group_out = cout // groups
    kg = cin_g * kh * kw
    for g in range(groups):
        wg = w[g * per_group_out : (g + 1) * per_group_out].reshape(per_group_out, kg)
        cg = cols[:, g * kg : (g + 1) * kg, :]
        outs.append(chunked_matmul(wg.unsqueeze(0), cg, policy.accumulate))  # (N, Cout_g, L)
    return torch.cat(outs, dim=1).reshape(n, cout, oh, ow)
