"""MX and NVFP4 block formats on hand-worked blocks."""

from __future__ import annotations

import math

import pytest
import torch

from chipfit.formats import BlockFormat, Rounding, block, get_format, get_profile, quantize
from chipfit.formats.block import decode_block, encode_block, quantize_block


def _block(first: list[float], size: int = 32, fill: float = 0.0) -> torch.Tensor:
    return torch.tensor(first + [fill] * (size - len(first)))


def test_ocp_floor_clips_the_top_of_a_non_power_of_two_block() -> None:
    # amax 957: floor(log2 957) = 9, emax(e4m3) = 8, so the scale is 2^(9-8) = 2;
    # 957 / 2 = 478.5 > 448 saturates to 448, i.e. 896 (microxcaling issue 4's example)
    q = quantize_block(_block([957.0, 3.0]), "mxfp8_e4m3", scale_rule="floor")
    assert q[0].item() == 896.0 and q[1].item() == 3.0 / 2 * 2
    # ceil: the smallest 2^k with 957 / 2^k <= 448 is 4; 957 / 4 = 239.25 -> 240 (step 16 in [128, 256)) -> 960
    assert quantize_block(_block([957.0]), "mxfp8_e4m3", scale_rule="ceil")[0].item() == 960.0
    # even: 957 = 1.869 * 2^9; rounding the mantissa to 3 bits gives 1.875, no carry: same scale as floor
    assert quantize_block(_block([957.0]), "mxfp8_e4m3", scale_rule="even")[0].item() == 896.0
    # 1000 = 1.953 * 2^9 carries to 2^10 under even: scale 4, 250 -> 256 -> 1024
    assert quantize_block(_block([1000.0]), "mxfp8_e4m3", scale_rule="even")[0].item() == 1024.0


def test_power_of_two_block_is_exact() -> None:
    x = _block([256.0, -1.0, 0.5, 0.125])
    assert torch.equal(quantize_block(x, "mxfp8_e4m3"), x)


def test_all_zero_block_gets_the_smallest_scale() -> None:
    enc = encode_block(torch.zeros(64), "mxfp4")
    assert enc.scales.tolist() == [0, 0]  # E8M0 code 0 = 2^-127
    assert torch.equal(decode_block(enc), torch.zeros(64))


def test_nan_in_a_block_poisons_only_that_block() -> None:
    x = torch.ones(64)
    x[3] = float("nan")
    q = quantize_block(x, "mxfp8_e5m2")
    assert torch.isnan(q[:32]).all() and torch.equal(q[32:], torch.ones(32))
    # second block: amax 1, emax(e5m2) = 15, scale 2^-15 = E8M0 code 127 - 15 = 112
    assert encode_block(x, "mxfp8_e5m2").scales.tolist() == [0xFF, 112]


def test_mxfp4_elements_and_scale() -> None:
    # amax 5 -> floor(log2 5) = 2, emax(e2m1) = 2 -> scale 2^0; elements RNE onto {0, .5, 1, 1.5, 2, 3, 4, 6}
    x = _block([5.0, 2.6, -0.3, 1.25])
    enc = encode_block(x, "mxfp4")
    assert enc.scales.tolist() == [127]
    assert quantize_block(x, "mxfp4")[:4].tolist() == [4.0, 3.0, -0.5, 1.0]


def test_mxint8() -> None:
    # amax 1.0 -> scale 2^0, elements are k/64 with |k| <= 127
    x = _block([1.0, 0.3, -0.99])
    q = quantize_block(x, "mxint8")
    assert q[:3].tolist() == [1.0, round(0.3 * 64) / 64, -round(0.99 * 64) / 64]


def test_nvfp4_two_level_scale() -> None:
    x = torch.linspace(-3, 3, 32)
    x[0] = -12.0
    enc = encode_block(x, "nvfp4")
    # tensor scale = amax / (448 * 6) = 12 / 2688
    assert math.isclose(enc.tensor_scale or 0.0, 12.0 / 2688, rel_tol=1e-7)
    assert enc.scales.numel() == 2
    q = quantize_block(x, "nvfp4")
    assert q[0].item() == -12.0  # the amax of its block maps to 6 * scale exactly
    assert torch.equal(decode_block(enc), q)
    err = (q - x).abs().max().item()
    assert err <= 12.0 / 6 * 0.5 + 1e-6  # at most half a step of the coarsest e2m1 spacing (1) at scale 2


@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e3m2", "mxfp6_e2m3", "mxfp4", "mxint8", "nvfp4"])
def test_encode_decode_is_quantize_along_any_axis(name: str) -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(5, 70, 3, generator=g) * 10  # 70 is not a multiple of the block: partial last block
    for axis in (1, 0, -1):
        q = quantize(x, name, axis=axis)
        enc = encode_block(x, name, axis=axis)
        assert torch.equal(decode_block(enc), q)
        assert q.shape == x.shape


def test_block_relative_error_is_bounded() -> None:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1024, generator=g)
    rel = ((quantize(x, "mxfp8_e4m3") - x).abs() / x.abs().clamp_min(1e-3)).median().item()
    assert rel < 2**-4  # 3 mantissa bits: at most half an ulp (2^-4) for values away from the bottom


def test_wrong_kind_errors() -> None:
    with pytest.raises(TypeError, match="not a block format"):
        quantize_block(torch.zeros(4), "bfloat16")
    with pytest.raises(ValueError, match="axis 3 out of range"):
        quantize_block(torch.zeros(4), "mxfp4", axis=3)


@pytest.mark.parametrize("rule", ["floor", "ceil", "even"])
@pytest.mark.parametrize("name", ["mxfp8_e4m3", "mxfp8_e5m2", "mxfp6_e2m3", "mxfp4", "mxint8"])
def test_scale_exponents_match_reference(name: str, rule: str) -> None:
    """The numba scale pass against the exact reference, on amaxes at and around every power of two."""
    from chipfit.formats import BlockFormat, get_format
    from chipfit.formats.block import encode_block
    from chipfit.formats.reference import mx_scale_exponents

    fmt = get_format(name)
    assert isinstance(fmt, BlockFormat)
    g = torch.Generator().manual_seed(0)
    amax = torch.cat(
        [
            torch.rand(300, generator=g) * 2.0 ** torch.randint(-140, 127, (300,), generator=g),
            torch.tensor([2.0**k for k in range(-149, 128, 7)]),
            torch.tensor([fmt.element.max * 2.0**k for k in (-3, 0, 5)]),
            torch.tensor([0.0, float("nan"), float("inf")]),
        ]
    )
    x = torch.zeros(amax.numel(), 32)
    x[:, 5] = -amax  # the amax may be negative
    man = fmt.element.man_bits if hasattr(fmt.element, "man_bits") else fmt.element.bits - 2
    expected = mx_scale_exponents(amax.tolist(), fmt.element.max, fmt.element_emax, man, rule)
    codes = encode_block(x, fmt, scale_rule=rule).scales.reshape(-1).tolist()
    assert codes == [0xFF if k is None else k + 127 for k in expected]


def _eager_block(x: torch.Tensor, name: str, axis: int, profile: str) -> torch.Tensor:
    """The eager torch path of quantize_block, step by step (the oracle of the fused pass)."""
    f = get_format(name)
    assert isinstance(f, BlockFormat)
    q, sc, ts, n, _k = block._parts(x, f, axis, Rounding.NEAREST_EVEN, get_profile(profile), None, None)
    out = (q.double() * (sc.double() * (ts or 1.0)).unsqueeze(-1)).float()
    return block._from_blocks(out, n, axis).reshape(x.shape)


@pytest.mark.parametrize("profile", ["torch", "ml_dtypes", "ocp-nonsat", "ocp-satfinite"])
@pytest.mark.parametrize("magnitude", [1e-30, 1e-3, 1.0, 2688.0 * 2, 1e30])
# (67, 37): block groups of the fused pass start mid-row and rows end in partial blocks; (1000, 41):
# above the parallel threshold
@pytest.mark.parametrize("shape", [(3, 37), (4, 16, 5), (2, 33, 7), (1, 1), (67, 37), (1000, 41)])
def test_fused_nvfp4_pass_equals_the_eager_path(shape: tuple[int, ...], magnitude: float, profile: str) -> None:
    g = torch.Generator().manual_seed(sum(shape) + int(math.log10(magnitude) + 40))
    x = torch.randn(*shape, generator=g) * magnitude
    flat = x.view(-1)
    if flat.numel() > 4:  # zeros of both signs and a value far below its block's scale
        flat[0], flat[1], flat[2] = 0.0, -0.0, -float(flat[3]) * 1e-9
    for axis in range(-x.dim(), x.dim()):
        got = quantize(x, "nvfp4", axis=axis, profile=profile)
        ref = _eager_block(x, "nvfp4", axis, profile)
        assert torch.equal(got.contiguous().view(torch.int32), ref.contiguous().view(torch.int32))


def test_fused_nvfp4_leaves_non_finite_and_empty_input_to_the_eager_rules() -> None:
    x = torch.tensor([[1.0, float("nan"), 3.0] + [0.5] * 13 + [2.0] * 16])
    got = quantize(x, "nvfp4")
    ref = _eager_block(x, "nvfp4", -1, "torch")
    assert torch.isnan(got[0, :16]).all() and torch.equal(got.view(torch.int32), ref.view(torch.int32))
    assert quantize(torch.zeros(5, 0, 3), "nvfp4", axis=1).shape == (5, 0, 3)
