"""Training sweeps only formats a device's stack trains in (issue 18): FP8 where the stack trains
in FP8 (Transformer Engine on Ada/Hopper/Blackwell, Intel Gaudi TE on Gaudi 2, TE on ROCm for
MI300X), never INT8, and no device without a training stack."""

from __future__ import annotations

from pathlib import Path

import pytest

from chipfit.formats import FORMATS, IntFormat
from chipfit.hardware import list_devices
from chipfit.hardware.loader import CatalogError, load_devices
from chipfit.models import get_model
from chipfit.plan import PlanError, plan


def _train_plan(devices: list[str], precisions: list[str] | None = None) -> object:
    spec = get_model("mlp")
    return plan(spec.build(), spec.example_inputs, devices=devices, precisions=precisions, batches=[32],
                training=True, objective="latency", backend="serial")  # fmt: skip


def test_a_training_plan_sweeps_only_what_each_stack_trains_in() -> None:
    devices = [d for d in list_devices() if d.training is not None]
    p = _train_plan([d.name for d in devices])
    by_name = {d.name: d for d in devices}
    seen = {(r.device, r.format) for r in p.rows}  # type: ignore[attr-defined]
    for dev, fmt in seen:
        assert by_name[dev].trains_in(fmt), (dev, fmt)
        assert not isinstance(FORMATS[fmt], IntFormat)
    assert ("h100-sxm", "float8_e4m3fn") in seen  # Transformer Engine trains Hopper in FP8
    assert ("gaudi2", "float8_e4m3fn") in seen
    assert ("tpu-v5p", "float8_e4m3fn") not in seen  # no TPU before Ironwood computes or trains in FP8
    assert ("a100-sxm", "float8_e4m3fn") not in seen


def test_int8_training_is_an_error_and_untrained_devices_are_named() -> None:
    with pytest.raises(PlanError, match="no chosen device trains in int8"):
        _train_plan(["h100-sxm", "gaudi2"], ["int8"])
    with pytest.raises(PlanError, match="no chosen device has a training stack in the catalog; devices that train:"):
        _train_plan(["inferentia2", "edge-tpu"])
    p = _train_plan(["h100-sxm", "inferentia2"])
    assert "Not offered for training (no training stack in the catalog): inferentia2." in p.reasons  # type: ignore[attr-defined]
    assert {r.device for r in p.rows} == {"h100-sxm"}  # type: ignore[attr-defined]


def test_inference_plans_still_sweep_int8() -> None:
    spec = get_model("mlp")
    p = plan(spec.build(), spec.example_inputs, devices=["h100-sxm"], precisions=["int8"], batches=[32],
             objective="latency", backend="serial")  # fmt: skip
    assert {r.format for r in p.rows} == {"int8"}


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('formats = ["int8"]\nsource = "assumed: x"', "int8 is an integer format; no stack trains in one"),
        ('formats = ["float9"]\nsource = "assumed: x"', "unknown format 'float9'"),
        ('formats = []\nsource = "assumed: x"', "must be a non-empty list"),
        ('formats = ["bfloat16"]\nsorce = "assumed: x"', "sorce"),
    ],
)
def test_a_malformed_training_table_is_refused(tmp_path: Path, table: str, message: str) -> None:
    p = tmp_path / "t.toml"
    p.write_text(f"[h100-sxm.training]\n{table}\n")
    with pytest.raises(CatalogError, match=message):
        load_devices([p], env=False)
