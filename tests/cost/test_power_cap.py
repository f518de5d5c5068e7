"""The power roofline: a chip whose TDP holds a continuous GEMM below its peak (power.sustained_ops_per_s,
measured) clocks down; its energy per op is what that measurement implies."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode

from chipfit.cost import estimate
from chipfit.cost.estimate import Bound, power_cap_s
from chipfit.hardware import CatalogError, Device, load_catalog
from chipfit.hardware.loader import load_devices
from chipfit.trace import trace
from tests.hardware.test_catalog import GOOD, _gemm_trace

# mychip: BF16 peak 100 TFLOP/s, TDP 100 W; idle 20 W and a measured 40 TFLOP/s at the cap
CAPPED = GOOD.replace(
    'tdp_w = 100\nsource = "assumed: test"',
    'tdp_w = 100\nsource = "assumed: test"\nidle_w = 20\nidle_source = "assumed: test"\n'
    'sustained_ops_per_s = { bfloat16 = 40e12 }\nsustained_source = "measured: a test GEMM loop"',
)


def _chip(tmp_path: Path, text: str = CAPPED) -> Device:
    p = tmp_path / "chips.toml"
    p.write_text(text)
    return load_devices([p], env=False)["mychip"]


def test_energy_per_op_is_what_the_capped_gemm_implies(tmp_path: Path) -> None:
    """(100 W - 20 W idle) / 40e12 ops/s = 2.0 pJ per BF16 op; INT8 pays the same per-bit delivery."""
    dev = _chip(tmp_path)
    assert dev.energy_pj_per_op("bfloat16") == pytest.approx(2.0)
    cal = dev.energy_calibration
    assert cal.limiting_format == "bfloat16" and cal.basis.startswith("power-capped")
    assert cal.full_load_w > dev.power.tdp_w  # unthrottled, the chip would draw more than its TDP
    raw16, raw8 = dev.raw_pj_per_op("bfloat16"), dev.raw_pj_per_op("int8")
    assert dev.energy_pj_per_op("int8") == pytest.approx(raw8 + (2.0 - raw16) / 16 * 8)


def test_a_large_gemm_runs_at_the_measured_rate(tmp_path: Path) -> None:
    """8192^3 BF16: unthrottled at about 0.75 x 100 TFLOP/s; capped, at 40 TFLOP/s (its weights' and
    activations' memory energy a little below that) and the step averages exactly the TDP."""
    dev = _chip(tmp_path)
    e = estimate(_gemm_trace(), dev, "bfloat16", execution="eager")
    flops = 2 * 8192**3
    assert 0.97 * flops / 40e12 <= e.latency_s <= flops / 40e12 * 1.03
    assert e.energy_j / e.latency_s == pytest.approx(100.0)
    capped = [r for r in e.rows if r.bound is Bound.POWER]
    assert len(capped) == 1 and e.share("power") > 0.3


class _Add(torch.nn.Module):
    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a + b


def test_memory_bound_work_is_not_throttled(tmp_path: Path) -> None:
    """A 64M-element add streams from memory: the arithmetic draws little, no power-cap row."""
    dev = _chip(tmp_path)
    with FakeTensorMode():
        tr = trace(_Add(), [torch.empty(8192, 8192), torch.empty(8192, 8192)])
    e = estimate(tr, dev, "bfloat16", execution="eager")
    assert e.share("memory") > 0.5
    assert not [r for r in e.rows if r.bound is Bound.POWER]
    assert e.energy_j / e.latency_s < dev.power.tdp_w


def test_no_cap_without_a_measurement(tmp_path: Path) -> None:
    """The same chip without the measured rate: its calibration rests on the TDP, nothing is capped."""
    dev = _chip(tmp_path, GOOD)
    e = estimate(_gemm_trace(), dev, "bfloat16", execution="eager")
    assert power_cap_s(dev, e.latency_s, e.energy_j) == 0.0
    assert not [r for r in e.rows if r.bound is Bound.POWER]


@pytest.mark.parametrize("name", sorted(n for n, d in load_catalog().items() if d.power.sustained_ops_per_s))
def test_catalog_capped_chips_reproduce_their_measurement(name: str) -> None:
    """Every catalog chip with a sustained rate: a large GEMM in that format is priced within 5 % of it."""
    dev = load_catalog()[name]
    for fmt, rate in dev.power.sustained_ops_per_s.items():
        e = estimate(_gemm_trace(4096, 4096), dev, fmt, execution="eager")
        assert e.energy_j / e.latency_s == pytest.approx(dev.power.tdp_w)
        assert 2 * 4096**3 / e.latency_s == pytest.approx(rate, rel=0.05), fmt


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        ("bfloat16 = 40e12 }", r"power\.sustained_ops_per_s\.bfloat16': 4e\+14 exceeds the bfloat16 peak"),
        ("float16 = 40e12 }", r"compute\.peak_ops_per_s has no float16; it lists bfloat16, int8"),
        ("bf16 = 40e12 }", r"unknown format 'bf16'; known: "),
    ],
    ids=["above-peak", "no-such-peak", "unknown-format"],
)
def test_bad_sustained_rate(tmp_path: Path, edit: str, message: str) -> None:
    text = CAPPED.replace("bfloat16 = 40e12 }", edit.replace("40e12", "400e12") if "bfloat16" in edit else edit)
    with pytest.raises(CatalogError, match=message):
        _chip(tmp_path, text)
