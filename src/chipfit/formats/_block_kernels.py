"""numba passes for power-of-two (E8M0) block scales.

quantize_block runs: `scale_pass` (amax per block, the shared exponent k by
rule, y = x * 2^-k), then the element format's own kernel on y (saturating),
then `unscale_pass` (q * 2^k). The slow oracle is
`reference.mx_scale_exponents` (eager torch).
"""

from __future__ import annotations

import math

import numba as nb
import numpy as np
from numba import prange

RULE_FLOOR, RULE_CEIL, RULE_EVEN = 0, 1, 2
NAN_BLOCK = -(1 << 30)  # marker exponent for a block holding NaN or inf


@nb.njit(cache=True, parallel=True, boundscheck=False, nogil=True)
def scale_pass(blocks, y, kexp, emax, rule, elem_max, man_bits, lo, hi):  # type: ignore[no-untyped-def]
    nb_, bs = blocks.shape
    for j in prange(nb_):
        amax = 0.0
        bad = False
        for t in range(bs):
            v = abs(np.float64(blocks[j, t]))
            if not (v <= 1e300):  # NaN or inf
                bad = True
            elif v > amax:
                amax = v
        if bad:
            kexp[j] = NAN_BLOCK
            for t in range(bs):
                y[j, t] = np.float32(np.nan)
            continue
        if amax == 0.0:
            k = lo
        else:
            m, ex = math.frexp(amax)  # amax = m * 2^ex, m in [0.5, 1)
            k = ex - 1 - emax
            if rule == RULE_CEIL:
                if amax > elem_max * math.ldexp(1.0, k):
                    k += 1
            elif rule == RULE_EVEN:
                # round the significand (in [1, 2)) half up to man_bits bits; a carry moves to the next binade
                step = math.ldexp(1.0, man_bits)
                if math.floor(2.0 * m * step + 0.5) >= 2.0 * step:
                    k += 1
            k = min(max(k, lo), hi)
        kexp[j] = k
        inv = math.ldexp(1.0, -k)
        for t in range(bs):
            y[j, t] = np.float32(np.float64(blocks[j, t]) * inv)


@nb.njit(cache=True, parallel=True, boundscheck=False, nogil=True)
def unscale_pass(q, kexp, out):  # type: ignore[no-untyped-def]
    nb_, bs = q.shape
    for j in prange(nb_):
        k = kexp[j]
        if k == NAN_BLOCK:
            for t in range(bs):
                out[j, t] = np.float32(np.nan)
        else:
            s = math.ldexp(1.0, k)
            for t in range(bs):
                out[j, t] = np.float32(np.float64(q[j, t]) * s)
