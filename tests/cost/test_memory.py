"""One home for bytes: storage widths, the traffic scale, and one footprint that estimate, plan
and amp all report."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from chipfit.amp.cost import training_cost
from chipfit.cost import estimate, resolve_precision
from chipfit.cost.memory import step_memory, traffic_scale
from chipfit.formats import FORMATS, BlockFormat, storage_bytes
from chipfit.formats.spec import container_bits
from chipfit.hardware import get_device
from chipfit.plan.sweep import sweep
from chipfit.trace import trace


@pytest.mark.parametrize("fmt", list(FORMATS.values()), ids=lambda f: f.name)
def test_bytes_of_every_format_are_storage_width_times_elements(fmt: object) -> None:
    n = 1000
    if isinstance(fmt, BlockFormat):  # the block's scale shares out over its elements
        expected_bits = fmt.element.storage_bits + fmt.scale.storage_bits / fmt.block_size
    else:
        expected_bits = container_bits(fmt.bits)  # type: ignore[attr-defined]
    assert fmt.storage_bits == expected_bits  # type: ignore[attr-defined]
    assert storage_bytes(fmt.name, n) == pytest.approx(expected_bits * n / 8)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("name", "bits"),
    [
        ("float32", 32),
        ("tfloat32", 32),  # 19 arithmetic bits, no memory format of its own: 32-bit words
        ("bfloat16", 16),
        ("float16", 16),
        ("float8_e4m3fn", 8),
        ("float6_e2m3fn", 6),
        ("float4_e2m1fn", 4),
        ("int8", 8),
        ("int4", 4),
        ("int2", 2),
        ("binary", 1),
        ("mxfp8_e4m3", 8.25),  # 8 + 8 / 32
        ("mxfp6_e3m2", 6.25),  # 6 + 8 / 32
        ("mxfp4", 4.25),  # 4 + 8 / 32
        ("nvfp4", 4.5),  # 4 + 8 / 16
    ],
)
def test_storage_widths_by_hand(name: str, bits: float) -> None:
    assert FORMATS[name].storage_bits == bits
    assert traffic_scale(name) == bits / 32


def _mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 10))  # 16,640 + 2,570 = 19,210 params


def test_tf32_and_fp32_traffic_are_equal() -> None:
    tr = trace(_mlp(), [torch.randn(32, 64)])
    a100 = get_device("a100-sxm")
    fp32, tf32 = estimate(tr, a100, "fp32"), estimate(tr, a100, "tf32")
    assert tf32.precision.format == "tfloat32"
    assert [r.bytes for r in tf32.rows] == [r.bytes for r in fp32.rows]
    assert [r.memory_s for r in tf32.rows] == [r.memory_s for r in fp32.rows]
    assert tf32.footprint_bytes == fp32.footprint_bytes


PRECISIONS = ["fp32", "tf32", "bf16", "fp16", "fp8", "int8"]


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("precision", PRECISIONS)
def test_estimate_plan_and_amp_agree_on_the_training_footprint(precision: str, optimizer: str) -> None:
    model, x = _mlp(), torch.randn(16, 64)
    dev = get_device("h100-sxm")
    fmt = resolve_precision(dev, precision).format
    tr = trace(model, [x], mode="training", optimizer=optimizer)
    est = estimate(tr, dev, precision)
    amp = training_cost(model, (x,), dev.name, precision, optimizer=optimizer)
    rows = sweep(model, lambda b: (torch.randn(b, 64),), devices=[dev.name], precisions=[precision], batches=[16],
                 training=True, optimizer=optimizer, backend="serial")  # fmt: skip
    if precision == "int8":  # no stack trains in INT8: plan offers no such row; estimate and amp still price it
        assert rows == []
        assert est.footprint_bytes == amp.total_bytes
    else:
        (single,) = [r for r in rows if r.chips == 1]
        assert est.footprint_bytes == amp.total_bytes == int(single.memory_per_chip_bytes)
    n = 19_210
    per_param = 4 + 4 + (8 if optimizer == "adam" else 0)  # FP32 master + FP32 gradient + moments
    per_param += 0 if storage_bytes(fmt) == 4 else storage_bytes(fmt)  # the working copy, when narrower
    mem = est.memory
    assert mem.state_bytes == pytest.approx(per_param * n)  # bf16 + adam: 18 bytes per parameter
    assert mem.activations_bytes == pytest.approx(tr.footprint.activations_peak_bytes * traffic_scale(fmt))


def test_inference_footprint_is_weights_and_activations_at_the_format() -> None:
    tr = trace(_mlp(), [torch.randn(8, 64)])
    mem = step_memory(tr, "bfloat16")
    assert mem.master_bytes == mem.grads_bytes == mem.optimizer_bytes == 0
    assert mem.weights_bytes == 19_210 * 2
    assert mem.per_chip_bytes("tensor", 4) == mem.total_bytes / 4
    assert mem.per_chip_bytes("data", 4) == mem.total_bytes
    assert math.isclose(step_memory(tr, "nvfp4").weights_bytes, 19_210 * 4.5 / 8)
