"""Ops whose results need no rounding: they only select, copy or zero their inputs' values.

ReLU, max pooling, concatenation, padding with zeros and the like produce values that are
copies of their inputs' elements or +0. When every float input is already stored in format F
and rounding to F leaves F's own values unchanged (it is idempotent on its image), the
result is in F as computed, so the emulator tags it instead of running the rounding kernel.
The skipped call is exact, not an approximation: tests/emulate/test_passthrough.py checks
that rounding those results changes no bit. On a small model this removes a third of the
rounding calls of an emulated pass (digits-cnn: 3 of its ReLU/pooling outputs).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from chipfit.emulate.scaling import round_to
from chipfit.formats import FloatFormat, get_format

__all__ = ["PASSTHROUGH_OPS", "is_passthrough", "rounding_is_idempotent"]

aten = torch.ops.aten

# overload packets whose float outputs are elements of their float inputs, or +0
PASSTHROUGH_OPS = frozenset(
    {
        aten.relu,
        aten.relu_,
        aten.max_pool1d,
        aten.max_pool2d,
        aten.max_pool3d,
        aten.max_pool2d_with_indices,
        aten.max_pool3d_with_indices,
        aten.adaptive_max_pool2d,
        aten.adaptive_max_pool3d,
        aten.clone,
        aten.cat,
        aten.stack,
        aten.index_select,
        aten.gather,
        aten.flip,
        aten.roll,
        aten.repeat,
        aten.im2col,
        aten.tril,
        aten.triu,
        aten.maximum,
        aten.minimum,
        aten.amax,
        aten.amin,
        aten.max,
        aten.min,
        aten.sort,
        aten.topk,
        aten.index,
    }
)
# where.self selects between two tensors; its Scalar overloads may bring in any number
_OVERLOADS = frozenset({aten.where.self})


@functools.lru_cache(maxsize=64)
def rounding_is_idempotent(fmt: str) -> bool:
    """True when rounding to `fmt` maps every value it produces to itself, bit for bit.

    Probed on every float32 bit pattern whose low 23 - man_bits mantissa bits are zero (all of
    the format's values, specials and out-of-range values among them), for float formats of at
    most 16 significant bits whose values are float32 normals or zero. bfloat16 passes although
    its cast quiets signalling NaNs: those are not values the cast produces."""
    f = get_format(fmt)
    if not isinstance(f, FloatFormat) or f.min_exponent < -126 or f.man_bits > 10:
        return False
    low = 23 - f.man_bits
    probes = (torch.arange(1 << (32 - low), dtype=torch.int64) << low).to(torch.int32).view(torch.float32)
    image = round_to(probes, fmt)
    again = round_to(image.clone(), fmt)
    return bool(torch.equal(image.view(torch.int32), again.view(torch.int32)))


def is_passthrough(func: Any, args: Any) -> bool:
    """func only selects, copies or zeroes elements (constant_pad_nd counts when it pads with 0)."""
    packet = func._overloadpacket
    if packet in PASSTHROUGH_OPS or func in _OVERLOADS:
        return True
    if packet is aten.constant_pad_nd:
        value = args[2] if len(args) > 2 else 0
        return bool(value == 0)
    return False
