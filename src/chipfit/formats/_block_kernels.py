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


# ---------------------------------------------------------------- scales with mantissa bits (NVFP4)
# For finite input, one pass per block: amax, the scale rounded to its float format (saturating,
# nearest-even), y = x / effective scale in FP32, y rounded to the element format (saturating,
# nearest-even), times scale * tensor scale. The operation order, and where FP32 and FP64 round,
# are those of the eager path (`_parts` + `quantize_block`), which is the oracle in the tests.


@nb.njit(inline="always")
def _pow2(q):  # type: ignore[no-untyped-def]
    """2.0**q for a normal float64 exponent q, built from bits (no libm call, vectorises)."""
    return np.int64((q + 1023) << 52).view(np.float64)


@nb.njit(inline="always")
def _round_sat(v, man, emin, vmax):  # type: ignore[no-untyped-def]
    """v >= 0 (a float64 holding a float32 value) rounded to nearest-even on a float format's
    grid, subnormals kept, values above vmax saturated (for the per-block scale). The binade
    comes from v's float64 exponent bits (v = 0 gives the subnormal quantum, and rounds to 0)."""
    e = max(((np.float64(v).view(np.int64) >> 52) & 0x7FF) - 1023, emin)
    q = e - man
    return min(np.rint(v * _pow2(-q)) * _pow2(q), vmax)


@nb.njit(inline="always")
def _round_elem(a, man_scale, first_top, vmax):  # type: ignore[no-untyped-def]
    """a >= 0 (a float64 holding a float32 value) on a narrow element grid (nearest-even,
    saturating). man_scale = 2^-man; first_top = 2^(emin + 1). Branch-free, so the block loop
    vectorises: the binade comes from a's float64 exponent bits, and the quantum 2^q and its
    inverse are built from bits (multiplying by them is exact, as dividing by the quantum was)."""
    emin = ((np.float64(first_top).view(np.int64) >> 52) - 1023) - 1
    neg_man = (np.float64(man_scale).view(np.int64) >> 52) - 1023
    e = max(((np.float64(a).view(np.int64) >> 52) & 0x7FF) - 1023, emin)
    q = e + neg_man
    quantum = np.int64((q + 1023) << 52).view(np.float64)
    inv = np.int64((1023 - q) << 52).view(np.float64)
    return min(np.rint(a * inv) * quantum, vmax)


_GROUP = 64  # blocks whose scales are computed together (a loop over blocks vectorises; one block's does not)


@nb.njit(inline="always")
def _scaled_group(x, out, g0, g1, nblk, bs, ts, sc, elem_max, man_scale, first_top, s_man, s_emin, s_max):  # type: ignore[no-untyped-def]
    """Blocks g0..g1 (row-major over x's rows, nblk per row): their amaxes, then their scales
    (sc holds back = scale * tensor scale), then their elements. r and c0 step along; no
    integer division per block."""
    n1 = x.shape[1]
    r0 = g0 // nblk
    c00 = (g0 - r0 * nblk) * bs
    r, c0 = r0, c00
    bits = x.view(np.int32)
    for i in range(g1 - g0):
        top = np.int32(0)
        for t in range(c0, min(c0 + bs, n1)):
            top = max(top, bits[r, t] & np.int32(0x7FFFFFFF))  # bits of |x|: same order as the values
        sc[i] = np.float64(np.int32(top).view(np.float32))
        c0 += bs
        if c0 >= n1:
            c0 = 0
            r += 1
    for i in range(g1 - g0):
        sc[i] = _round_sat(np.float64(np.float32(sc[i] / elem_max / ts)), s_man, s_emin, s_max) * ts
    r, c0 = r0, c00
    for i in range(g1 - g0):
        c1 = min(c0 + bs, n1)
        back = sc[i]
        eff = np.float64(np.float32(back))
        if eff > 0:
            for t in range(c0, c1):
                v = np.float64(x[r, t])
                y = abs(np.float64(np.float32(v / eff)))
                out[r, t] = np.float32(math.copysign(_round_elem(y, man_scale, first_top, elem_max) * back, v))
        else:  # the scale rounded to zero: the eager path's zeros (positive)
            for t in range(c0, c1):
                out[r, t] = np.float32(0.0)
        c0 += bs
        if c0 >= n1:
            c0 = 0
            r += 1


@nb.njit(inline="always")
def _tensor_scale(amax, both_max, tensor_scale):  # type: ignore[no-untyped-def]
    """The per-tensor scale from the tensor's amax (the eager path's t_amax / both_max), or -1.0
    when amax is not finite (NaN or inf: the caller takes the eager path)."""
    if not (amax <= 1e300):
        return -1.0
    ts = amax / both_max if tensor_scale and amax > 0 else 1.0
    return ts if ts <= 1e300 else -1.0


@nb.njit(inline="always")
def _tensor_ts(x, both_max, tensor_scale):  # type: ignore[no-untyped-def]
    """The tensor scale of C-contiguous x: its amax as an integer max over the bits of |x| (the
    bit order of non-negative floats is their value order, and NaN's bits exceed inf's)."""
    bits = x.reshape(-1).view(np.int32)
    top = np.int32(0)
    for i in range(bits.shape[0]):
        top = max(top, bits[i] & np.int32(0x7FFFFFFF))
    amax = np.nan if top > 0x7F800000 else np.float64(np.int32(top).view(np.float32))
    return _tensor_scale(amax, both_max, tensor_scale)


@nb.njit(cache=True, parallel=True, boundscheck=False, nogil=True, error_model="numpy")
def scaled_par(x, out, bs, both_max, tensor_scale, elem_max, man_scale, first_top, s_man, s_emin, s_max):  # type: ignore[no-untyped-def]
    ts = _tensor_ts(x, both_max, tensor_scale)
    if ts < 0:
        return ts
    nblk = (x.shape[1] + bs - 1) // bs
    total = x.shape[0] * nblk
    for g in prange((total + _GROUP - 1) // _GROUP):
        sc = np.empty(_GROUP)
        g0 = g * _GROUP
        _scaled_group(
            x, out, g0, min(g0 + _GROUP, total), nblk, bs, ts, sc, elem_max, man_scale, first_top, s_man, s_emin, s_max
        )
    return ts


@nb.njit(cache=True, boundscheck=False, nogil=True, error_model="numpy")
def scaled_ser(x, out, bs, both_max, tensor_scale, elem_max, man_scale, first_top, s_man, s_emin, s_max):  # type: ignore[no-untyped-def]
    ts = _tensor_ts(x, both_max, tensor_scale)
    if ts < 0:
        return ts
    nblk = (x.shape[1] + bs - 1) // bs
    total = x.shape[0] * nblk
    sc = np.empty(_GROUP)
    for g0 in range(0, total, _GROUP):
        _scaled_group(
            x, out, g0, min(g0 + _GROUP, total), nblk, bs, ts, sc, elem_max, man_scale, first_top, s_man, s_emin, s_max
        )
    return ts
