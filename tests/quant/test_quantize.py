"""quantize_: configs, fake quantization by hand, PTQ on digits, SmoothQuant, bias correction, QAT."""

from __future__ import annotations

import copy
import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chipfit.formats import quantize
from chipfit.models import get_model
from chipfit.models.digits import load_digits_data
from chipfit.quant import RECIPES, Override, QuantConfig, QuantSpec, layers, only, prepare_qat, quantize_


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    d = load_digits_data()
    model = get_model("digits-cnn").pretrained().eval()  # type: ignore[misc]
    calib = [d.x_train[i : i + 64] for i in range(0, 512, 64)]
    return model, d.x_test, d.y_test, calib


def _top1(m: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((m(x).argmax(-1) == y).float().mean())


@pytest.mark.parametrize("name", list(RECIPES))
def test_recipes_round_trip_through_json(name: str) -> None:
    cfg = RECIPES[name]
    assert QuantConfig.from_json(cfg.to_json()) == cfg
    back = json.loads(cfg.to_json())
    assert back["name"] == name


def test_config_errors_name_the_choices() -> None:
    with pytest.raises(ValueError, match="known: tensor, channel, group, block, token"):
        QuantSpec("int8", "row")
    with pytest.raises(ValueError, match=r"unknown format 'int9'; known: .*int8"):
        QuantSpec("int9")
    with pytest.raises(ValueError, match="block formats"):
        QuantSpec("mxfp4", "tensor")
    with pytest.raises(ValueError, match="unknown config keys"):
        QuantConfig.from_dict({"wieghts": None})
    with pytest.raises(ValueError, match="unknown recipe 'int3'; known: int8"):
        quantize_(nn.Linear(2, 2), "int3")
    with pytest.raises(ValueError, match="needs calibration data"):
        quantize_(nn.Sequential(nn.Linear(2, 2)), "int8-entropy")


def test_overrides_skip_and_replace_by_pattern() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    cfg = RECIPES["int8"].with_(overrides=(Override("0", skip=True), Override("2", QuantSpec("int4", "channel"), None)))
    quantize_(model, cfg)
    qls = layers(model)
    assert list(qls) == ["2"] and qls["2"].aq is None and qls["2"].wq is not None
    assert qls["2"].wq.spec.format == "int4"


def test_int8_linear_equals_quantize_by_hand() -> None:
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(32, 8)
    x = torch.randn(16, 32, generator=g) * 3
    ref_lin = copy.deepcopy(lin)
    model = nn.Sequential(lin)
    quantize_(model, "int8-minmax", calibrate=[x])
    with torch.no_grad():
        out = model(x)
    w = ref_lin.weight.detach()
    sw = w.abs().amax(dim=1, keepdim=True) / 127
    sx = x.abs().max() / 127
    qw = quantize(w / sw, "int8") * sw
    qx = quantize(x / sx, "int8") * sx
    assert torch.equal(out, F.linear(qx, qw, ref_lin.bias.detach()))


def test_static_int8_ptq_on_digits_drops_at_most_half_a_point(digits: tuple) -> None:  # type: ignore[type-arg]
    base, x, y, calib = digits
    fp32 = _top1(base, x, y)
    for recipe in ("int8-entropy", "int8-percentile", "int8-mse"):
        m = quantize_(copy.deepcopy(base), recipe, calibrate=calib)
        assert fp32 - _top1(m, x, y) <= 0.005, recipe


def test_smoothquant_is_an_identity_before_rounding() -> None:
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Linear(16, 16), nn.GELU(), nn.Linear(16, 4))
    x = torch.randn(64, 16, generator=g)
    x[:, 3] *= 40  # an outlier channel, the case SmoothQuant is for
    with torch.no_grad():
        ref = model(x)
    quantize_(model, RECIPES["int8-smoothquant"], calibrate=[x])
    assert all(ql.smooth is not None for ql in layers(model).values())
    with only(model, None), torch.no_grad():
        assert torch.allclose(model(x), ref, rtol=1e-5, atol=1e-5)


def test_bias_correction_removes_the_mean_output_shift(digits: tuple) -> None:  # type: ignore[type-arg]
    base, _x, _y, calib = digits
    with torch.no_grad():
        ref = base(torch.cat(calib))
    shifts = []
    for bc in (False, True):
        cfg = RECIPES["int4-weight-only"].with_(bias_correction=bc)
        m = quantize_(copy.deepcopy(base), cfg, calibrate=calib)
        with torch.no_grad():
            shifts.append(float((m(torch.cat(calib)) - ref).mean(0).abs().mean()))
    assert shifts[1] < shifts[0]


@pytest.mark.parametrize("learnable", [False, True])
def test_qat_recovers_what_ptq_loses(digits: tuple, learnable: bool) -> None:  # type: ignore[type-arg]
    """W2A4 PTQ wrecks the CNN (about 42 % top-1); three epochs of QAT bring it back above 90 %."""
    base, x, y, calib = digits
    cfg = QuantConfig(
        "w2a4",
        QuantSpec("int2", "channel", learnable=learnable),
        QuantSpec("int4", "tensor", calibrator="minmax", learnable=learnable),
    )
    model = prepare_qat(copy.deepcopy(base), cfg, calibrate=calib)
    scales = [t.log_scale for ql in layers(model).values() for t in (ql.wq, ql.aq) if t is not None]
    assert all(isinstance(s, nn.Parameter) for s in scales) == learnable
    before_scales = [s.detach().clone() for s in scales if s is not None]
    model.eval()
    before = _top1(model, x, y)
    d = load_digits_data()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(3):
        for i in range(0, len(d.x_train), 64):
            loss = F.cross_entropy(model(d.x_train[i : i + 64]), d.y_train[i : i + 64])
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    after = _top1(model, x, y)
    assert before < 0.7 < 0.9 < after
    if learnable:
        assert any(not torch.equal(b, s.detach()) for b, s in zip(before_scales, scales, strict=True) if s is not None)


def test_affine_int8_equals_the_zero_point_formula_by_hand() -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.rand(64, 16, generator=g) * 5 + 1  # all positive: a symmetric range would waste half the codes
    lin = nn.Linear(16, 4)
    spec = QuantSpec("int8", "tensor", symmetric=False, calibrator="minmax")
    model = quantize_(nn.Sequential(lin), QuantConfig("affine", None, spec), calibrate=[x])
    with torch.no_grad():
        out = model(x)
    lo, hi = 0.0, float(x.max())  # the range is widened to hold zero exactly
    s = (hi - lo) / 255
    zp = round(-lo / s) - 128
    q = (torch.clamp(torch.round(x / s) + zp, -128, 127) - zp) * s
    with torch.no_grad():
        assert torch.allclose(out, F.linear(q, lin.weight, lin.bias), atol=1e-6)
    assert float((q - x).abs().max()) <= s / 2 + 1e-6


def test_calibration_can_be_a_callable_that_runs_the_model() -> None:
    g = torch.Generator().manual_seed(4)
    data = [torch.randn(32, 8, generator=g) for _ in range(3)]
    seen: list[int] = []

    def runner(m: nn.Module) -> None:  # e.g. a sentence-transformers encode() over a corpus
        for b in data:
            seen.append(b.shape[0])
            m(b)

    a = quantize_(nn.Sequential(nn.Linear(8, 8)), "int8-minmax", calibrate=runner)
    b = quantize_(nn.Sequential(nn.Linear(8, 8)), "int8-minmax", calibrate=data)
    assert seen == [32, 32, 32]
    amax_a = layers(a)["0"].aq.amax  # type: ignore[union-attr]
    amax_b = layers(b)["0"].aq.amax  # type: ignore[union-attr]
    assert (
        amax_a is not None
        and amax_b is not None
        and float(amax_a) == float(amax_b) == max(float(t.abs().max()) for t in data)
    )
