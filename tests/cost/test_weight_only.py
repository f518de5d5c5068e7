"""Weight-only rows (issue 18): INT8/INT4 weights with 16-bit math, where the device's stack runs
such kernels (TensorRT-LLM/Model Optimizer W8A16/W4A16 on Ampere and later, W4A16 on Turing)."""

from __future__ import annotations

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from chipfit.cost import estimate
from chipfit.emulate import policy_for
from chipfit.hardware import get_device
from chipfit.hardware.precision import How, precision_label, resolve_precision
from chipfit.models import get_model
from chipfit.plan import plan
from chipfit.trace import trace


@pytest.mark.parametrize(
    ("device", "precision", "math", "how"),
    [
        ("h100-sxm", "w4a16", "bfloat16", How.WEIGHT_ONLY),
        ("h200-sxm", "w8a16", "bfloat16", How.WEIGHT_ONLY),  # inherited from h100-sxm
        ("l4", "w4a16", "bfloat16", How.WEIGHT_ONLY),
        ("t4", "w4a16", "float16", How.WEIGHT_ONLY),  # Turing: W4A16 in FP16
        ("t4", "w8a16", "float16", How.VECTOR),  # no INT8 weight-only kernels documented for Turing
        ("tpu-v5e", "w4a16", "bfloat16", How.VECTOR),  # no weight-only stack in the catalog: a flagged fallback
    ],
)
def test_weight_only_resolves_where_the_stack_runs_it(device: str, precision: str, math: str, how: How) -> None:
    p = resolve_precision(get_device(device), precision)
    assert (p.format, p.how, p.weight_format) == (math, how, {"w4a16": "int4", "w8a16": "int8"}[precision])
    assert p.on_matrix_unit == (how is How.WEIGHT_ONLY)


def test_weight_only_label_says_how_it_runs() -> None:
    assert precision_label("w4a16", "bfloat16", How.WEIGHT_ONLY) == "w4a16 (int4 weights, bf16 compute)"


@pytest.fixture(scope="module")
def decode_step() -> object:
    spec = get_model("decoder-125m")
    with FakeTensorMode(allow_non_fake_inputs=True):
        model, inputs = spec.build(), spec.example_inputs(1, 512, decode=True)
    return trace(model, inputs)


def test_narrow_weights_cut_memory_and_decode_time_and_pay_their_upcast(decode_step: object) -> None:
    dev = get_device("h100-sxm")
    bf16, w8, w4 = (estimate(decode_step, dev, p) for p in ("bf16", "w8a16", "w4a16"))  # type: ignore[arg-type]
    params = decode_step.footprint.params_bytes / 4  # type: ignore[attr-defined]
    assert bf16.memory.weights_bytes == pytest.approx(2 * params)
    assert w8.memory.weights_bytes == pytest.approx(params)
    assert w4.memory.weights_bytes == pytest.approx(params / 2)
    assert w4.latency_s < w8.latency_s < bf16.latency_s  # a decode step streams its weights
    i = next(r.index for r in decode_step.records if r.op_class == "matmul" and r.param_bytes)  # type: ignore[attr-defined]
    assert w4.rows[i].memory_s < bf16.rows[i].memory_s
    assert w4.rows[i].compute_s > bf16.rows[i].compute_s  # the upcast of every weight it reads


def test_plan_offers_weight_only_for_inference_never_for_training() -> None:
    spec = get_model("mlp")
    inf = plan(spec.build(), spec.example_inputs, devices=["h100-sxm", "tpu-v5e"], batches=[8],
               objective="latency", backend="serial")  # fmt: skip
    wo = [r for r in inf.rows if r.how == "weight-only"]
    assert {(r.device, r.precision) for r in wo} == {("h100-sxm", "w8a16"), ("h100-sxm", "w4a16")}
    assert "w4a16 (int4 weights, bf16 compute)" in next(r for r in wo if r.precision == "w4a16").label()
    tr = plan(spec.build(), spec.example_inputs, devices=["h100-sxm"], batches=[8], training=True,
              objective="latency", backend="serial")  # fmt: skip
    assert not [r for r in tr.rows if r.how == "weight-only"]


def test_emulating_weight_only_rounds_the_weights_and_keeps_16_bit_math() -> None:
    pol = policy_for("h100-sxm", "w4a16")
    assert (pol.a.format, pol.b.format, pol.b.scaling.kind) == ("bfloat16", "int4", "per-channel")
    torch.manual_seed(0)
    lin = torch.nn.Linear(64, 16)
    x = torch.randn(8, 64)
    from chipfit.emulate import emulate

    with torch.no_grad():
        ref = lin(x)
        with emulate(policy=policy_for("h100-sxm", "bf16")):
            b16 = lin(x)
        with emulate(policy=pol):
            w4 = lin(x)
    assert (w4 - ref).abs().max() > 4 * (b16 - ref).abs().max()  # int4 weights cost far more than bf16 math
