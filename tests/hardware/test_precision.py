"""The precision vocabulary has one home (hardware.precision) and every stage speaks it."""

from __future__ import annotations

import pytest

from chipfit.cost import estimate
from chipfit.emulate.policy import policy_for
from chipfit.formats import FORMATS
from chipfit.hardware import get_device, list_devices
from chipfit.hardware.loader import OP_CLASSES as DEVICE_FILE_CLASSES
from chipfit.hardware.precision import PRECISION_ALIASES, How, Precision, resolve_precision, short_label
from chipfit.trace.classify import OP_CLASSES
from chipfit.vocab import DEVICE_OP_CLASSES, MATRIX_CLASSES, OpClass


def test_every_alias_names_registered_formats_and_labels_as_itself() -> None:
    for alias, names in PRECISION_ALIASES.items():
        assert all(n in FORMATS for n in names), alias
        assert short_label(names[0]) == alias
    assert short_label("float8_e4m3fnuz") == "fp8fnuz" and short_label("nvfp4") == "nvfp4"


@pytest.mark.parametrize("device", [d.name for d in list_devices()])
def test_a_format_name_resolves_as_its_alias_does(device: str) -> None:
    dev = get_device(device)
    for alias, names in PRECISION_ALIASES.items():
        by_alias = resolve_precision(dev, alias)
        if by_alias.format == names[0] or by_alias.how is not How.NATIVE:  # same first choice
            assert resolve_precision(dev, names[0]).format == by_alias.format
            assert resolve_precision(dev, names[0]).how is by_alias.how


def test_policy_for_takes_format_names_like_estimate() -> None:
    a, b = policy_for("h100-sxm", "bf16"), policy_for("h100-sxm", "bfloat16")
    assert (a.a, a.b, a.output, a.activations) == (b.a, b.b, b.output, b.activations)
    assert policy_for("b200", "nvfp4").a is not None and policy_for("b200", "nvfp4").a.format == "nvfp4"
    with pytest.raises(ValueError, match=r"unknown precision 'bf17'; known: fp32, .*, bfloat16, .*nvfp4"):
        policy_for("h100-sxm", "bf17")


def test_how_is_a_closed_set() -> None:
    assert Precision("fp8", "float8_e4m3fn", "vector").how is How.VECTOR  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="'emulated' is not a valid How"):
        Precision("fp8", "float8_e4m3fn", "emulated")  # type: ignore[arg-type]


def test_the_op_class_list_exists_once() -> None:
    assert tuple(OpClass) == OP_CLASSES
    assert DEVICE_FILE_CLASSES == DEVICE_OP_CLASSES and set(DEVICE_OP_CLASSES) < set(OpClass)
    assert {OpClass.MATMUL, OpClass.CONV, OpClass.ATTENTION} == MATRIX_CLASSES


def test_estimate_rows_carry_enum_units_and_bounds() -> None:
    import torch
    from torch import nn

    from chipfit.cost.estimate import Bound, Unit
    from chipfit.trace import trace

    tr = trace(nn.Sequential(nn.Linear(8, 8), nn.ReLU()), [torch.randn(4, 8)])
    est = estimate(tr, "h100-sxm", "bf16")
    assert {r.unit for r in est.rows} <= set(Unit) and {r.bound for r in est.rows} <= set(Bound)
    assert any(r.unit is Unit.MATRIX for r in est.rows)


def test_every_matrix_unit_kind_has_a_model_checked_at_import(monkeypatch: pytest.MonkeyPatch) -> None:
    from chipfit.cost import units
    from chipfit.hardware.device import MATRIX_KINDS

    assert set(MATRIX_KINDS) <= set(units.MATRIX_MODELS)
    monkeypatch.setattr(units, "MATRIX_KINDS", (*MATRIX_KINDS, "photonic"))
    with pytest.raises(ImportError, match="matrix-unit kinds without a cost model: photonic"):
        units.check_matrix_models()


@pytest.mark.parametrize("name", ["t4", "mi300x", "inferentia2", "tpu-v5e", "h100-sxm", "edge-tpu"])
def test_the_support_matrix_is_what_the_planner_offers(name: str) -> None:
    """One row per precision: native formats with their peaks, compiler casts, weight-only, fallbacks; the
    planner sweeps exactly the rows on the matrix unit (and trains exactly where the row says it trains)."""
    from chipfit.hardware.precision import support_matrix
    from chipfit.plan.sweep import offered

    dev = get_device(name)
    for r in support_matrix(dev):
        on_mu = r.how in ("native", "autocast", "weight-only")
        assert offered(dev, r.precision, training=False, allow_fallback=False) == on_mu, r
        assert offered(dev, r.precision, training=True, allow_fallback=False) == r.trains, r
        if r.how == "native":
            assert r.peak_ops_per_s == dev.peak(r.format) > 0
        if r.how == "vector":
            assert r.peak_ops_per_s == dev.compute.vector_ops_per_s


def test_support_matrix_rows_read_right() -> None:
    from chipfit.hardware.precision import support_matrix

    t4 = {r.precision: r for r in support_matrix(get_device("t4"))}
    assert t4["fp32"].how == "vector" and t4["fp32"].peak_ops_per_s == 8.1e12  # runs FP32, on CUDA cores
    assert t4["w4a16"].how == "weight-only" and t4["w4a16"].weights == "int4" and t4["w4a16"].format == "float16"
    mi = {r.precision: r for r in support_matrix(get_device("mi300x"))}
    assert mi["fp8"].format == "float8_e4m3fnuz" and mi["fp8"].how == "native" and mi["fp8"].trains
    inf2 = {r.precision: r for r in support_matrix(get_device("inferentia2"))}
    assert inf2["fp32"].how == "autocast" and "casts it to bfloat16" in inf2["fp32"].note
