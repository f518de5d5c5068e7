"""Numerics policies: one per catalog device x precision, consistent with the cost model."""

from __future__ import annotations

import pytest

from chipfit.cost.estimate import PRECISION_ALIASES, resolve_precision
from chipfit.emulate import ACCUMULATIONS, Accumulation, NumericsPolicy, Operand, Scaling, policy_for
from chipfit.formats import get_format
from chipfit.hardware import list_devices

DEVICES = [d.name for d in list_devices()]


@pytest.mark.parametrize("precision", list(PRECISION_ALIASES))
@pytest.mark.parametrize("device", DEVICES)
def test_every_device_and_precision_yields_a_policy(device: str, precision: str) -> None:
    pol = policy_for(device, precision)
    dev = next(d for d in list_devices() if d.name == device)
    res = resolve_precision(dev, precision)
    assert pol.device == device and pol.precision == precision
    assert pol.host_classes == dev.support.host_op_classes
    if res.how in ("vector", "host"):
        assert pol.matrix_fallback == res.how and pol.a.exact and pol.b.exact
        return
    assert pol.matrix_fallback == ""
    # the emulated format is the priced format (block-scaled for sub-8-bit floats)
    fmt = get_format(res.format)
    if res.format == "float32":
        assert pol.exact
    elif getattr(fmt, "bits", 8) < 8 and pol.a.block:
        assert dev.peak(pol.a.format) > 0
    else:
        assert pol.a.format == res.format
    if pol.a.integer:
        assert pol.a.scaling.kind != "none" and pol.b.scaling.kind == "per-channel"


def test_named_examples_from_the_issue() -> None:
    assert policy_for("a100-sxm", "tf32").a.format == "tfloat32"
    assert policy_for("a100-sxm", "bf16").output == "bfloat16"
    h = policy_for("h100-sxm", "fp8")
    assert h.a.format == "float8_e4m3fn" and h.grad is not None and h.grad.format == "float8_e5m2"
    assert policy_for("h100-sxm", "fp8", fp8_scaling="delayed").a.scaling.kind == "delayed"
    assert policy_for("tpu-v5e", "bf16").activations == "bfloat16"  # XLA casts the whole graph
    inf = policy_for("inferentia2", "fp32")  # Neuron auto-casts FP32 to BF16
    assert inf.a.format == "bfloat16" and any("casts" in n for n in inf.notes)
    assert policy_for("inferentia2", "int8").a.integer
    assert policy_for("hexagon-8g3", "int4").b.format == "int4"
    assert policy_for("edge-tpu", "int8").host_classes == ("normalization", "attention")
    assert policy_for("v100-sxm", "bf16").matrix_fallback == "vector"  # Volta has no BF16 tensor cores
    assert policy_for("b200", "fp4").a.format == "nvfp4"
    assert policy_for("mi300x", "fp8").a.format == "float8_e4m3fnuz"


def test_user_policy_and_bad_input() -> None:
    pol = NumericsPolicy(
        "w4a8",
        a=Operand("int8", Scaling("per-row")),
        b=Operand("int4", Scaling("per-channel")),
        accumulate=ACCUMULATIONS["fp32"],
    )
    assert pol.describe()["b"] == "int4 per-channel"
    with pytest.raises(ValueError, match="unknown precision 'bf17'; known: fp32"):
        policy_for("a100-sxm", "bf17")
    with pytest.raises(ValueError, match="unknown device"):
        policy_for("a101", "bf16")
    with pytest.raises(ValueError, match="unknown format"):
        Operand("bfloat17")
    with pytest.raises(ValueError, match="need a scale"):
        Operand("int8")
    with pytest.raises(ValueError, match="unknown scaling 'sometimes'; known: none, dynamic"):
        Scaling("sometimes")
    with pytest.raises(ValueError, match="unknown rounding"):
        Operand("bfloat16", rounding="nearest")
    with pytest.raises(ValueError, match="must be a float format"):
        NumericsPolicy("x", output="int8")
    with pytest.raises(ValueError, match="unknown accumulation 'fp12'; known: fp32, fp16"):
        policy_for("h100-sxm", "fp8", accumulate="fp12")
    with pytest.raises(ValueError, match="multiple of chunk_k"):
        Accumulation("float16", chunk_k=32, promote_k=48)
    with pytest.raises(ValueError, match="unknown fp8_scaling"):
        policy_for("h100-sxm", "fp8", fp8_scaling="lazy")
