"""Opt-in: every one of the 2^32 float32 inputs, against torch and ml_dtypes.

Run with `make test-slow` (minutes per format; numpy's float16 cast alone takes
about 7 minutes on this machine type)."""

from __future__ import annotations

import ml_dtypes
import numpy as np
import pytest
import torch

from chipfit.formats import quantize

CHUNK = 1 << 24
CASES = [
    ("bfloat16", torch.bfloat16, ml_dtypes.bfloat16),
    ("float16", torch.float16, np.float16),
    ("float8_e4m3fn", torch.float8_e4m3fn, ml_dtypes.float8_e4m3fn),
    ("float8_e5m2", torch.float8_e5m2, ml_dtypes.float8_e5m2),
]
# the other float formats ml_dtypes has (E8M0 is where 0.6 and 0.7 differ), against ml_dtypes only
ML_ONLY_NAMES = ["float8_e4m3fnuz", "float8_e5m2fnuz", "float8_e8m0fnu", "float6_e3m2fn", "float6_e2m3fn"]
ML_ONLY = [(name, None, getattr(ml_dtypes, name)) for name in [*ML_ONLY_NAMES, "float4_e2m1fn"]]
SWEEPS = [(*c, p) for c in CASES for p in ("torch", "ml_dtypes")] + [(*c, "ml_dtypes") for c in ML_ONLY]


@pytest.mark.slow
@pytest.mark.parametrize(("name", "tdt", "mdt", "profile"), SWEEPS, ids=[f"{c[0]}-{c[3]}" for c in SWEEPS])
def test_all_float32_inputs(name: str, tdt: torch.dtype | None, mdt: object, profile: str) -> None:
    mismatches = 0
    out = torch.empty(CHUNK)
    for start in range(0, 1 << 32, CHUNK):
        bits = np.arange(start, start + CHUNK, dtype=np.uint64).astype(np.uint32)
        x = torch.from_numpy(bits.view(np.float32))
        got = quantize(x, name, profile=profile, out=out).view(torch.int32)
        if profile == "torch":
            assert tdt is not None
            ref = x.to(tdt).float().view(torch.int32)  # CHUNK is a multiple of 8: no scalar tail
        else:
            with np.errstate(all="ignore"):
                ref = torch.from_numpy(x.numpy().astype(mdt).astype(np.float32)).view(torch.int32)
        mismatches += int((got != ref).sum())
    assert mismatches == 0
