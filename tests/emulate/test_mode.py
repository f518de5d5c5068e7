"""`emulate`: policy rounding against hand-applied quantize, exact INT8, torch's own bf16, training."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import chipfit
from chipfit.emulate import NumericsPolicy, Operand, Scaling, emulate, policy_for
from chipfit.emulate.scaling import ScaleState, prepare
from chipfit.formats import get_format, quantize
from chipfit.models.transformer import EncoderLayer
from chipfit.models.vision import DigitsCNN


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.equal(a.contiguous().view(torch.int32), b.contiguous().view(torch.int32))


@pytest.mark.parametrize(("device", "precision", "fmt"), [
    ("a100-sxm", "bf16", "bfloat16"), ("a100-sxm", "fp16", "float16"), ("tpu-v5e", "bf16", "bfloat16"),
])  # fmt: skip
def test_matmul_and_conv_equal_quantize_by_hand(device: str, precision: str, fmt: str) -> None:
    a, b = torch.randn(8, 48, generator=_g(0)), torch.randn(48, 16, generator=_g(1))
    bias = torch.randn(16, generator=_g(2))
    with emulate(device=device, precision=precision):
        mm = a @ b
        lin = F.linear(a, b.t(), bias)
    q = lambda t: quantize(t, fmt)  # noqa: E731
    assert _bits_equal(mm, q(q(a) @ q(b)))
    assert _bits_equal(lin, q(q(a) @ q(b) + q(bias)))
    x, w = torch.randn(2, 3, 7, 7, generator=_g(3)), torch.randn(5, 3, 3, 3, generator=_g(4))
    with emulate(device=device, precision=precision):
        y = F.conv2d(x, w, padding=1)
    assert _bits_equal(y, q(F.conv2d(q(x), q(w), padding=1)))


@pytest.mark.parametrize("rounding", ["nearest-even", "nearest-away", "toward-zero"])
def test_tf32_rounds_inputs_to_ten_mantissa_bits(rounding: str) -> None:
    a, b = torch.randn(4, 64, generator=_g(5)), torch.randn(64, 3, generator=_g(6))
    with emulate(device="a100-sxm", precision="tf32", tf32_rounding=rounding):
        out = a @ b
    ref = quantize(a, "tfloat32", rounding=rounding) @ quantize(b, "tfloat32", rounding=rounding)
    assert _bits_equal(out, ref)  # FP32 out: no output rounding
    low = (quantize(a, "tfloat32", rounding=rounding).view(torch.int32) & 0x1FFF).abs().sum()
    assert int(low) == 0


def test_fp8_dynamic_scaling_by_hand() -> None:
    a, b = torch.randn(8, 32, generator=_g(7)) * 30, torch.randn(32, 4, generator=_g(8)) / 50
    with emulate(device="h100-sxm", precision="fp8"):
        out = a @ b
    sa = 448.0 / a.abs().max()
    sb = 448.0 / b.abs().max()
    qa = quantize(a * sa, "float8_e4m3fn", overflow="saturate")
    qb = quantize(b * sb, "float8_e4m3fn", overflow="saturate")
    ref = quantize((qa @ qb) * ((1.0 / sa) * (1.0 / sb)), "bfloat16")
    assert _bits_equal(out, ref)


def test_mx_block_scales_along_k() -> None:
    a, b = torch.randn(4, 64, generator=_g(9)), torch.randn(64, 8, generator=_g(10))
    with emulate(device="b200", precision="mxfp8"):
        out = a @ b
    ref = quantize(quantize(a, "mxfp8_e4m3", axis=-1) @ quantize(b, "mxfp8_e4m3", axis=0), "bfloat16")
    assert _bits_equal(out, ref)


def test_delayed_scaling_follows_transformer_engine() -> None:
    op = Operand("float8_e4m3fn", Scaling("delayed", history=2, amax_algo="max", margin=1))
    st = ScaleState(op.scaling.history)
    x1, x2, x3 = torch.full((4,), 2.0), torch.full((4,), 8.0), torch.full((4,), 1.0)
    q1, inv1 = prepare(x1, op, state=st)
    assert inv1 == 1.0 and torch.equal(q1, x1)  # no history yet: scale 1
    assert st.scale == 448.0 / 2.0 / 2  # margin 1 halves it
    _q2, inv2 = prepare(x2, op, state=st)
    assert inv2 == pytest.approx(4 / 448.0)  # the scale from step 1's amax
    assert st.scale == 448.0 / 8.0 / 2
    prepare(x3, op, state=st)
    assert st.scale == 448.0 / 8.0 / 2  # history of 2: max(8, 1)
    prepare(x3, op, state=st)
    assert st.scale == 448.0 / 1.0 / 2  # 8 has left the history
    recent = Operand("float8_e4m3fn", Scaling("delayed", amax_algo="most-recent"))
    st2 = ScaleState(1024)
    prepare(x2, recent, state=st2)
    prepare(x3, recent, state=st2)
    assert st2.scale == 448.0
    # in a model the history is kept per call site across passes
    lin = nn.Linear(8, 8)
    with emulate(device="h100-sxm", precision="fp8", fp8_scaling="delayed") as run:
        for _ in range(3):
            lin(torch.randn(2, 8))
    mode = run._mode
    assert mode is not None and len(mode.states) == 2 and all(s.steps == 3 for s in mode.states.values())


@pytest.mark.parametrize("fmt", ["int8", "int4"])
def test_integer_matmul_is_exact_int32(fmt: str) -> None:
    a = torch.randn(16, 300, generator=_g(11)) * 3
    w = torch.randn(24, 300, generator=_g(12))
    bias = torch.randn(24, generator=_g(13))
    with emulate(device="t4", precision=fmt):
        out = F.linear(a, w, bias)
    f = get_format(fmt)
    qmax = float(f.max)  # type: ignore[union-attr]
    step_a = a.abs().max() / qmax
    step_w = w.abs().amax(dim=1) / qmax  # per output channel
    ia = np.asarray(quantize(a / step_a, fmt).numpy(), dtype=np.int64)
    iw = np.asarray(quantize(w / step_w[:, None], fmt).numpy(), dtype=np.int64)
    assert ia.max() <= qmax and iw.min() >= f.min  # type: ignore[union-attr]
    acc = ia @ iw.T  # the integer reference
    assert np.abs(acc).max() < 2**31
    ref = torch.from_numpy(acc.astype(np.float32)) * (step_a * step_w[None, :]) + bias  # scales fused in FP32
    assert _bits_equal(out, ref)


def test_integer_accumulation_beyond_fp32_integers_stays_exact() -> None:
    k = 4096  # K * 127 * 127 > 2^24: the float32 GEMM would round, so float64 is used
    a, b = torch.ones(2, k), torch.ones(k, 3)
    pol = NumericsPolicy("i8", a=Operand("int8", Scaling("dynamic")), b=Operand("int8", Scaling("dynamic")))
    a[0, 0] = 1 + 1 / 127  # so the first row's codes are 126 or 127, not all 127
    with emulate(policy=pol):
        out = a @ b
    ia = quantize(a / (a.abs().max() / 127), "int8").double()
    ref = (ia @ torch.full((k, 3), 127.0, dtype=torch.float64)).float() * ((a.abs().max() / 127) * (1 / 127))
    assert _bits_equal(out, ref)


def _exactly_summable(m: int, k: int, n: int, seed: int) -> nn.Linear:
    """Inputs whose FP32 dot products are exact in any order (22-bit sums), so the comparison with
    torch does not depend on the order its GEMM accumulates in; the bf16 output rounding still bites."""
    g = _g(seed)
    lin = nn.Linear(k, n)
    with torch.no_grad():
        lin.weight.copy_(torch.randint(-127, 128, (n, k), generator=g) / 128)
        lin.bias.copy_(torch.randint(-127, 128, (n,), generator=g) / 128)
    return lin


def test_bf16_linear_equals_torch_bfloat16_cpu_matmul() -> None:
    """torch's CPU bf16 matmul accumulates in FP32 and rounds once to bf16: the default model."""
    for seed, (m, k, n) in enumerate([(64, 256, 48), (32, 100, 10), (7, 1024, 3)]):
        lin = _exactly_summable(m, k, n, seed)
        x = torch.randint(-127, 128, (m, k), generator=_g(40 + seed)) / 16
        with emulate(device="a100-sxm", precision="bf16"):
            ours = lin(x)
        theirs = F.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()).float()
        assert _bits_equal(ours, theirs)
        assert not torch.equal(ours, lin(x))  # the output rounding did something


def test_bf16_on_random_data_differs_from_torch_only_by_fp32_summation_order() -> None:
    torch.manual_seed(1)
    x, lin = torch.randn(64, 256), nn.Linear(256, 48)
    with emulate(device="a100-sxm", precision="bf16"):
        ours = lin(x).detach()
    theirs = F.linear(x.bfloat16(), lin.weight.bfloat16(), lin.bias.bfloat16()).float()
    differ = ours != theirs
    assert differ.float().mean() < 1e-3  # measured: 56 of 682,600 outputs over 200 such layers
    ulp = quantize(ours.abs(), "bfloat16", rounding="up") - quantize(ours.abs(), "bfloat16", rounding="down")
    assert ((ours - theirs).abs() <= torch.maximum(ulp, ours.abs() * 2**-7))[differ].all()


@pytest.mark.parametrize(("device", "precision"), [
    ("a100-sxm", "bf16"), ("h100-sxm", "fp8"), ("t4", "int8"), ("tpu-v5e", "bf16"), ("v100-sxm", "fp16"),
])  # fmt: skip
def test_training_gives_gradients_for_every_parameter(device: str, precision: str) -> None:
    torch.manual_seed(0)
    for model, x in [
        (DigitsCNN(), torch.randn(8, 1, 8, 8)),
        (EncoderLayer(32, 4, 64, pre_norm=True), torch.randn(2, 6, 32)),
    ]:
        with emulate(device=device, precision=precision) as run:
            out = model(x)
            loss = out.float().pow(2).mean()
            loss.backward()
        for name, p in model.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name
        assert any(r.phase == "backward" and r.op_class in ("matmul", "conv") for r in run.report().rows)


def test_backward_ops_carry_their_module_paths() -> None:
    """Issue 17: emulate tracks modules with torch's ModuleTracker, as the tracer does, so the backward
    pass's matrix ops name the layer they belong to (they were all reported at module "")."""
    torch.manual_seed(0)
    model = DigitsCNN()
    with emulate(device="h100-sxm", precision="bf16") as run:
        model(torch.randn(4, 1, 8, 8)).pow(2).mean().backward()
    rows = run.report().rows
    forward = {r.module for r in rows if r.phase == "forward" and r.op_class in ("matmul", "conv")}
    backward = {r.module for r in rows if r.phase == "backward" and r.op_class in ("matmul", "conv")}
    assert forward and backward and "" not in backward
    assert backward <= forward  # the same layers' paths: features.0, classifier.1, ...
    assert any(m.startswith("classifier") for m in backward) and any(m.startswith("features") for m in backward)


def test_delayed_scaling_keys_repeat_across_steps() -> None:
    """A call site's key is the same every step, so delayed scaling reuses its amax history."""
    lin = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 4))
    with emulate(device="h100-sxm", precision="fp8", fp8_scaling="delayed") as run:
        for _ in range(3):
            lin(torch.randn(8, 16)).pow(2).mean().backward()
        states = run._mode.states  # type: ignore[attr-defined]
    assert states and len(states) == len({k for k in states})
    forward_sites = {k[:4] for k in states if k[0] == "forward"}
    assert forward_sites == {("forward", "0", "addmm", 1), ("forward", "2", "addmm", 1)}


def test_fp8_training_uses_e5m2_for_gradients() -> None:
    lin = nn.Linear(16, 16)
    x = torch.randn(4, 16)
    with emulate(device="h100-sxm", precision="fp8") as run:
        lin(x).pow(2).sum().backward()
    bw = [r for r in run.report().rows if r.phase == "backward" and r.op == "mm"]
    assert bw and all("float8_e5m2" in r.numerics for r in bw)


def test_master_weights_stay_fp32_through_the_optimizer_step() -> None:
    torch.manual_seed(0)
    lin = nn.Linear(16, 4)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    with emulate(device="tpu-v5e", precision="bf16"):  # activations stored in BF16
        lin(torch.randn(8, 16)).pow(2).mean().backward()
        opt.step()
    w = lin.weight.detach()
    assert not torch.equal(w, quantize(w, "bfloat16"))  # the update landed in FP32


def test_storage_formats_follow_autocast_promotion_or_the_compiler_cast() -> None:
    x = torch.randn(4, 8)
    w = torch.randn(8, 8)
    with emulate(device="a100-sxm", precision="bf16"):
        h = x @ w  # bf16
        gelu = F.gelu(h)  # bf16 in -> bf16 out
        mixed = h + x  # bf16 + fp32 -> fp32
        ln = F.layer_norm(h, (8,))  # FP32 list
    assert torch.equal(gelu, quantize(gelu, "bfloat16"))
    assert torch.equal(mixed, quantize(h, "bfloat16") + x)
    assert not torch.equal(ln, quantize(ln, "bfloat16"))
    with emulate(device="tpu-v5e", precision="bf16"):
        mixed_tpu = (x @ w) + x  # the compiler stores every activation in BF16
    assert torch.equal(mixed_tpu, quantize(mixed_tpu, "bfloat16"))


def test_fallbacks_are_listed() -> None:
    layer = EncoderLayer(16, 2, 32, pre_norm=True).eval()
    x = torch.randn(2, 4, 16)
    with emulate(device="edge-tpu", precision="int8") as run:
        layer(x)
    fb = run.fallbacks()
    assert fb and {r.op_class for r in fb} == {"normalization"} and all(r.fallback == "host" for r in fb)
    with emulate(device="v100-sxm", precision="bf16") as run:
        out = layer(x)
    assert torch.equal(out, layer(x))  # no BF16 tensor cores: FP32 on the vector unit
    assert {r.fallback for r in run.fallbacks()} == {"vector"}


def test_report_sqnr_against_the_fp32_shadow() -> None:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(16, 1, 8, 8)
    with emulate(device="a100-sxm", precision="fp32", shadow=True) as run:
        model(x)
    assert all(r.sqnr_db == math.inf for r in run.report(sqnr=True).rows)
    sqnr = {}
    for precision in ("bf16", "fp8"):
        with emulate(device="h100-sxm", precision=precision, shadow=True) as run:
            out = model(x)
        rep = run.report(sqnr=True)
        last = [r for r in rep.rows if r.op == "addmm"][-1]
        assert last.sqnr_db is not None and math.isfinite(last.sqnr_db)
        shadow = run.shadow_of(out)
        assert torch.allclose(shadow, model(x), atol=1e-5)  # the shadow is the FP32 model
        out, shadow = out.detach().double(), shadow.detach().double()
        expected = 10 * math.log10(float((shadow**2).sum() / ((out - shadow) ** 2).sum()))
        assert last.sqnr_db == pytest.approx(expected, rel=1e-6)
        sqnr[precision] = last.sqnr_db
        assert rep.as_dict()["ops"][0]["numerics"].startswith(("bfloat16", "float8"))
    assert sqnr["bf16"] > sqnr["fp8"] + 10  # 8 vs 4 significand bits
    with emulate(device="a100-sxm", precision="bf16") as run:
        model(x)
    with pytest.raises(ValueError, match="shadow=True"):
        run.report(sqnr=True)


def test_attention_sdpa_is_decomposed_with_p_in_the_input_format() -> None:
    q, k, v = (torch.randn(2, 2, 5, 8, generator=_g(30 + i)) for i in range(3))
    with emulate(device="a100-sxm", precision="bf16"):
        out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    b = lambda t: quantize(t, "bfloat16")  # noqa: E731
    s = (b(q) @ b(k).transpose(-2, -1)) / math.sqrt(8)
    s = s.masked_fill(~torch.ones(5, 5, dtype=torch.bool).tril(), float("-inf"))
    ref = b(b(torch.softmax(s, -1)) @ b(v))
    assert torch.allclose(out, ref, atol=0, rtol=0) or _bits_equal(out, ref)


def test_native_low_precision_tensors_are_left_alone_and_errors_are_clear() -> None:
    x = torch.randn(4, 4, dtype=torch.bfloat16)
    with emulate(device="a100-sxm", precision="fp8") as run:
        y = x @ x
    assert y.dtype == torch.bfloat16 and "native" in run.report().rows[0].numerics
    with pytest.raises(ValueError, match="device= and precision="), emulate(device="a100-sxm"):
        pass
    other = policy_for("t4", "fp16")
    with pytest.raises(ValueError, match="either policy="), emulate("a100-sxm", "bf16", policy=other):
        pass
    assert chipfit.emulate is emulate


def test_matches_pytorch_autocast_bf16_on_a_small_mlp() -> None:
    """torch's own CPU autocast (bf16 matmuls, FP32 accumulate) gives the same logits."""
    mlp = nn.Sequential(_exactly_summable(16, 32, 64, 1), nn.ReLU(), _exactly_summable(16, 64, 10, 2))
    x = torch.randint(-127, 128, (16, 32), generator=_g(3)) / 16
    with emulate(device="a100-sxm", precision="bf16"):
        ours = mlp(x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        theirs = mlp(x).float()
    assert _bits_equal(ours, theirs)


@pytest.mark.parametrize(
    "values",
    [
        [0.5, -3.0, 2.0],
        [-0.0, 0.0],
        [1.0, float("inf"), -2.0],
        [-float("inf"), 1.0],
        [1.0, float("nan"), -5.0],
        [-7.5],
    ],
)
def test_per_tensor_amax_is_max_abs(values: list[float]) -> None:
    from chipfit.emulate.scaling import amax_over

    x = torch.tensor(values).reshape(-1, 1).expand(-1, 3)  # non-contiguous too
    got, ref = float(amax_over(x, None)), float(x.abs().amax())
    assert got == ref or (math.isnan(got) and math.isnan(ref))


SCALING_CASES = ["small", "large", "strided", "with-nan", "with-inf", "zeros", "tiny"]


def _scaling_case(case: str, g: torch.Generator) -> torch.Tensor:
    """Inputs for the fused dynamic-scaling kernels against their step-by-step oracles."""
    if case == "small":
        return torch.randn(7, 5, generator=g) * 3
    if case == "large":
        return torch.randn(300, 257, generator=g) * 1e-3  # above the parallel threshold
    if case == "strided":
        return torch.randn(64, 40, generator=g).t()
    return {
        "with-nan": torch.tensor([1.0, float("nan"), -2.0]),
        "with-inf": torch.tensor([1.0, float("-inf"), 0.5]),
        "zeros": torch.zeros(4, 3),
        "tiny": torch.tensor([1e-30, -3e-41, 2e-39]),  # amax subnormal-ish: a huge scale
    }[case]


@pytest.mark.parametrize("fmt", ["float8_e4m3fn", "float8_e5m2"])
@pytest.mark.parametrize("margin", [0, 2])
@pytest.mark.parametrize("case", SCALING_CASES)
def test_fused_dynamic_scaling_equals_the_step_by_step_oracle(fmt: str, margin: int, case: str) -> None:
    """prepare()'s fused dynamic-scaling kernel against amax, scale and quantize done apart."""
    import numpy as np

    from chipfit.emulate.scaling import format_max
    from chipfit.formats.quantize import quantizer

    g = torch.Generator().manual_seed(margin)
    x = _scaling_case(case, g)
    op = Operand(fmt, Scaling("dynamic", margin=margin))
    q, inv = prepare(x, op)
    amax = float(x.abs().amax())
    safe = amax if 0 < amax < float("inf") else 1.0
    scale = float(np.float32(format_max(fmt) / safe / 2.0**margin))
    want = quantizer(fmt, "nearest-even", "saturate")(x.contiguous() * scale)
    assert q.shape == x.shape
    assert torch.equal(q.isnan(), want.isnan())
    keep = ~want.isnan()
    assert torch.equal(q[keep].view(torch.int32), want[keep].view(torch.int32))
    assert inv == float(np.float32(1.0 / scale))


def test_cached_bias_follows_in_place_updates() -> None:
    """The rounded bias is cached per parameter version: an optimizer step must show."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(8, 4)
    x = torch.randn(3, 8)
    with torch.no_grad(), emulate(device="a100-sxm", precision="bf16"):
        before = lin(x)
        lin.bias.add_(0.37)
        after = lin(x)
    with torch.no_grad(), emulate(device="a100-sxm", precision="bf16"):
        fresh = lin(x)  # a new context: nothing cached
    assert not torch.equal(before, after)
    assert torch.equal(after, fresh)


@pytest.mark.parametrize("fmt", ["int8", "int4"])
@pytest.mark.parametrize("case", SCALING_CASES)
def test_fused_integer_dynamic_scaling_equals_the_step_by_step_oracle(fmt: str, case: str) -> None:
    """prepare()'s fused integer kernel against amax, step = fl32(amax / qmax) and quantize(x / step) apart."""
    from chipfit.emulate.scaling import format_max
    from chipfit.formats.quantize import quantizer

    g = torch.Generator().manual_seed(3)
    x = _scaling_case(case, g)
    q, step = prepare(x, Operand(fmt, Scaling("dynamic")))
    amax = float(x.abs().amax())
    safe = amax if 0 < amax < float("inf") else 1.0
    want_step = float(np.float32(safe / format_max(fmt)))
    want = quantizer(fmt, "nearest-even")(x.contiguous() / want_step)
    assert step == want_step
    assert q.shape == x.shape and _bits_equal(q, want)


@pytest.mark.parametrize("fmt", ["bfloat16", "float16", "tfloat32", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz"])
def test_storage_rounding_is_idempotent_on_its_image(fmt: str) -> None:
    from chipfit.emulate.passthrough import rounding_is_idempotent

    assert rounding_is_idempotent(fmt)
    x = torch.randn(10_000, generator=_g(4)) * 100
    once = quantize(x, fmt)
    assert _bits_equal(quantize(once, fmt), once)


def test_passthrough_ops_skip_rounding_without_changing_a_bit() -> None:
    """ReLU, cat, flip and zero padding of bf16-stored values are tagged, not rounded; the results
    equal rounding them. A pad value the format cannot hold is still rounded."""
    from chipfit.emulate.passthrough import is_passthrough

    torch.manual_seed(0)
    conv = nn.Conv2d(3, 4, 3, padding=1)
    x = torch.randn(2, 3, 6, 6)
    with torch.no_grad(), emulate(device="a100-sxm", precision="bf16") as run:
        y = conv(x)  # stored as bfloat16
        outs = [F.relu(y), torch.cat([y, y]), F.pad(y, (1, 1)), y.flip(0)]
        padded = F.pad(y, (1, 1), value=1e-3)
    for o in outs:
        assert _bits_equal(quantize(o, "bfloat16"), o)
        assert run._mode is not None and run._mode.tags.get(o) == "bfloat16"
    assert padded[0, 0, 0, 0].item() == quantize(torch.tensor(1e-3), "bfloat16").item() != np.float32(1e-3)
    assert is_passthrough(torch.ops.aten.relu.default, ())
    assert not is_passthrough(torch.ops.aten.constant_pad_nd.default, (x, [1, 1], 0.5))
    assert not is_passthrough(torch.ops.aten.where.ScalarOther, ())
    assert not is_passthrough(torch.ops.aten.add.Tensor, ())


def test_paused_runs_fp32_and_resumes_with_the_run_state() -> None:
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.randn(4, 1, 8, 8, generator=_g(30))
    with torch.no_grad():
        ref = model(x)
        with emulate(device="h100-sxm", precision="fp8", fp8_scaling="delayed") as run:
            first = model(x)
            calls = {k: s.calls for k, s in run.stats.items()}
            states = dict(run._mode.states) if run._mode is not None else {}
            with run.paused():
                plain = model(x)
                assert {k: s.calls for k, s in run.stats.items()} == calls  # nothing recorded while paused
            second = model(x)
    assert _bits_equal(plain, ref)  # FP32 while paused
    assert not torch.equal(first, ref)
    assert all(s.calls == 2 * calls[k] for k, s in run.stats.items())  # emulation resumed at the same sites
    assert states and all(st.steps == 2 for st in states.values())  # the same delayed-scaling histories, twice
    with torch.no_grad(), emulate(device="h100-sxm", precision="fp8", fp8_scaling="delayed"):
        model(x)
        unpaused = model(x)
    assert _bits_equal(second, unpaused)  # the pause changed nothing the next emulated pass sees
    with pytest.raises(RuntimeError, match="inside its emulate"), run.paused():
        pass


def test_paused_refuses_when_another_mode_is_on_top() -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Other(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            return func(*args, **(kwargs or {}))

    with (
        emulate(device="a100-sxm", precision="bf16") as run,
        Other(),
        pytest.raises(RuntimeError, match="another dispatch mode"),
        run.paused(),
    ):
        pass
    out = torch.ones(2, 2) @ torch.ones(2, 2)  # both modes left cleanly
    assert float(out.sum()) == 8.0


@pytest.mark.filterwarnings("ignore:Using `torch.compile:UserWarning")  # torch's note on emulate's module hooks
def test_compiled_code_runs_under_emulation() -> None:
    """The mode's __torch_dispatch__ is not wrapped in dynamo's disable context (a per-op cost):
    a torch.compile'd module still runs, and its matrix op is emulated."""
    torch.manual_seed(0)
    lin = nn.Linear(16, 8)
    x = torch.randn(4, 16, generator=_g(40))
    compiled = torch.compile(lin, backend="eager")
    with torch.no_grad(), emulate(device="a100-sxm", precision="bf16") as run:
        got = compiled(x)
    with torch.no_grad(), emulate(device="a100-sxm", precision="bf16"):
        want = lin(x)
    assert _bits_equal(got, want)
    assert [r.op for r in run.report().rows] == ["addmm"]


def test_selecting_reductions_keep_their_input_format_as_under_autocast() -> None:
    """max-pool, amax and max select an element: autocast runs them in their input's dtype, so
    their results are stored in it (no rounding needed), and what follows promotes accordingly;
    summing reductions stay in FP32."""
    x = torch.randn(2, 3, 8, 8, generator=_g(50))
    w = torch.randn(3, 3, 3, 3, generator=_g(51))
    with emulate(device="a100-sxm", precision="bf16") as run:
        h = F.conv2d(x, w, padding=1)  # bf16
        pooled = F.max_pool2d(h, 2)
        top = h.amax(dim=(2, 3), keepdim=True)
        mixed = pooled + pooled * 0.3  # bf16 + bf16 -> bf16, rounded
        total = h.sum(dim=(2, 3))  # FP32 list
        tags = run._mode.tags if run._mode is not None else {}
        assert tags.get(pooled) == "bfloat16" and tags.get(top) == "bfloat16"
        assert tags.get(total) is None  # FP32
    assert _bits_equal(mixed, quantize(pooled + quantize(pooled * 0.3, "bfloat16"), "bfloat16"))
    assert torch.equal(pooled, F.max_pool2d(h, 2))  # values are selected, not re-rounded
    rows = {r.op: r.numerics for r in run.report().rows}
    assert rows["max_pool2d_with_indices"] == "bfloat16" and rows["sum"] == "float32"


def test_a_new_matrix_kernel_is_one_registered_function() -> None:
    """aten.mv has no kernel: its inputs are rounded and it runs in FP32. Registering one
    function for it (here: mv as a one-column GEMM) is all the mode needs to use it."""
    from chipfit.emulate import matrix

    assert {k.name() for k in matrix.MATRIX_KERNELS} >= {"aten::mm", "aten::addmm", "aten::convolution"}
    with pytest.raises(ValueError, match="already has a matrix kernel"):
        matrix.handles(torch.ops.aten.mm.default)(matrix.mm)
    a, v = torch.randn(8, 16, generator=_g(1)), torch.randn(16, generator=_g(2))

    def numerics() -> str:
        with emulate(device="h100-sxm", precision="bf16") as run:
            torch.mv(a, v)
        (row,) = [r for r in run.report().rows if r.op == "mv"]
        return row.numerics

    assert numerics().endswith("(inputs rounded, FP32 kernel)")
    try:

        @matrix.handles(torch.ops.aten.mv.default)
        def mv(m, func, args, kwargs):  # type: ignore[no-untyped-def]
            return matrix.gemm(m, args[0], args[1].unsqueeze(-1), m._site("mv")).squeeze(-1)

        assert numerics() == "bfloat16 -> acc float32 -> bfloat16"
    finally:
        matrix.MATRIX_KERNELS.pop(torch.ops.aten.mv.default, None)


def test_sqnr_of_an_all_but_zero_output_is_finite_not_a_domain_error() -> None:
    """`emulate minilm --report` crashed with log10(0): a subnormal FP32 signal over a normal noise
    underflows signal / noise to 0.0 (issue 18's example of a bug shown as a user error)."""
    from chipfit.emulate.report import OpStat

    st = OpStat(0, "forward", "m", "mul", "elementwise", "bfloat16", "", signal=1e-320, noise=1.0, measured=True)
    assert st.sqnr_db == pytest.approx(-3200, abs=1)
    assert (
        OpStat(0, "forward", "m", "mul", "elementwise", "", "", signal=0.0, noise=1.0, measured=True).sqnr_db
        == -math.inf
    )
