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


def _measured(own: bool) -> list[str]:
    cat = load_catalog()
    return sorted(n for n, d in cat.items() if d.power.sustained_ops_per_s and (d.power.sustained_part is None) == own)


@pytest.mark.parametrize("name", _measured(own=True))
def test_catalog_capped_chips_reproduce_their_measurement(name: str) -> None:
    """Every catalog chip with a sustained rate: a large GEMM (8192^3, the size most of the catalog's rates
    were measured at; the H100 PCIe's FP8 one at 8192 x 4096 x 8192) in that format is priced within 5 % of
    it (a little below: the measured budget already holds the GEMM's memory power, which is priced again)."""
    dev = load_catalog()[name]
    for fmt, rate in dev.power.sustained_ops_per_s.items():
        e = estimate(_gemm_trace(), dev, fmt, execution="eager")
        assert e.energy_j / e.latency_s == pytest.approx(dev.power.tdp_w)
        assert 2 * 8192**3 / e.latency_s == pytest.approx(rate, rel=0.05), fmt


# a second part of mychip's die: the same peaks, its own TDP and idle, mychip's measurement
SIBLING = """
[sibling]
extends = "mychip"
display_name = "My chip, another board"
[sibling.power]
tdp_w = {tdp}
source = "assumed: test"
idle_w = 12
idle_source = "assumed: test"
sustained_from = "mychip"
"""


def _sibling(tmp_path: Path, tdp_w: float = 60, text: str = CAPPED) -> Device:
    p = tmp_path / "chips.toml"
    p.write_text(text + SIBLING.format(tdp=tdp_w))
    return load_devices([p], env=False)["sibling"]


def test_a_part_of_the_same_die_pays_the_measured_energy_and_its_own_cap(tmp_path: Path) -> None:
    """The sibling borrows mychip's measurement: (100 W - 20 W) / 40e12 = 2.0 pJ per BF16 op, whatever its
    own TDP. At 60 W (48 W above its 12 W idle) an 8192^3 BF16 GEMM runs at 48 W / 2.0 pJ = 24 TFLOP/s
    (the operands' memory energy a little below that) and averages exactly its TDP."""
    dev = _sibling(tmp_path)
    assert dev.power.sustained_part == "mychip" and dev.power.sustained_budget_w == pytest.approx(80.0)
    assert dev.energy_pj_per_op("bfloat16") == pytest.approx(2.0)
    assert "on the mychip (the same die)" in dev.energy_calibration.basis
    e = estimate(_gemm_trace(), dev, "bfloat16", execution="eager")
    flops = 2 * 8192**3
    assert 0.97 * flops / 24e12 <= e.latency_s <= flops / 24e12 * 1.03
    assert e.energy_j / e.latency_s == pytest.approx(60.0)


def test_a_part_with_a_larger_budget_is_not_capped(tmp_path: Path) -> None:
    """At 300 W the same die's 2.0 pJ per op fits the TDP at the unthrottled rate: no power-cap row, and the
    GEMM takes what it takes on the uncapped chip."""
    dev = _sibling(tmp_path, tdp_w=300)
    e = estimate(_gemm_trace(), dev, "bfloat16", execution="eager")
    free = estimate(_gemm_trace(), _chip(tmp_path, GOOD), "bfloat16", execution="eager")
    assert not [r for r in e.rows if r.bound is Bound.POWER]
    assert e.latency_s == pytest.approx(free.latency_s)
    assert e.energy_j / e.latency_s < 300


def test_a_child_of_a_borrowing_part_inherits_it_and_its_own_measurement_wins(tmp_path: Path) -> None:
    child = '\n[child]\nextends = "sibling"\n'
    p = tmp_path / "chips.toml"
    p.write_text(CAPPED + SIBLING.format(tdp=60) + child)
    assert load_devices([p], env=False)["child"].power.sustained_part == "mychip"
    own = child + '[child.power]\nsustained_ops_per_s = { bfloat16 = 30e12 }\nsustained_source = "measured: test"\n'
    p.write_text(CAPPED + SIBLING.format(tdp=60) + own)
    dev = load_devices([p], env=False)["child"]
    assert dev.power.sustained_part is None and dict(dev.power.sustained_ops_per_s) == {"bfloat16": 30e12}


BOTH = CAPPED.replace('sustained_source = "measured', 'sustained_from = "x"\nsustained_source = "measured')
SLOW_SIBLING = "\n[sibling.compute]\npeak_ops_per_s = { bfloat16 = 30e12 }\n"  # below mychip's measured 40e12


@pytest.mark.parametrize(
    ("text", "extra", "message"),
    [
        (GOOD, "", r"power\.sustained_from': 'mychip' is not a part with its own sustained_ops_per_s; known: "),
        (BOTH, "", r"power\.sustained_from': give either sustained_from or sustained_ops_per_s, not both"),
    ],
    ids=["not-measured", "both"],
)
def test_bad_sustained_from(tmp_path: Path, text: str, extra: str, message: str) -> None:
    p = tmp_path / "chips.toml"
    p.write_text(text + SIBLING.format(tdp=60) + extra)
    with pytest.raises(CatalogError, match=message):
        load_devices([p], env=False)


def test_a_slower_part_of_the_die_borrows_its_energy_and_is_never_capped(tmp_path: Path) -> None:
    """A part whose BF16 peak (30 TFLOP/s) is below the measured rate (40) still pays the die's 2.0 pJ per
    op; at 30 x 0.75 TFLOP/s x 2.0 pJ = 45 W above idle it fits its 48 W budget, so nothing is capped."""
    p = tmp_path / "chips.toml"
    p.write_text(CAPPED + SIBLING.format(tdp=60) + SLOW_SIBLING)
    dev = load_devices([p], env=False)["sibling"]
    assert dev.energy_pj_per_op("bfloat16") == pytest.approx(2.0)
    e = estimate(_gemm_trace(), dev, "bfloat16", execution="eager")
    assert not [r for r in e.rows if r.bound is Bound.POWER] and e.energy_j / e.latency_s < 60


def test_a_child_giving_both_keys_is_rejected(tmp_path: Path) -> None:
    both = '\n[child]\nextends = "sibling"\n[child.power]\nsustained_from = "mychip"\n'
    both += 'sustained_ops_per_s = { bfloat16 = 30e12 }\nsustained_source = "measured: test"\n'
    p = tmp_path / "chips.toml"
    p.write_text(CAPPED + SIBLING.format(tdp=60) + both)
    with pytest.raises(CatalogError, match=r"device 'child'.*give either sustained_from or sustained_ops_per_s"):
        load_devices([p], env=False)


def test_a_child_with_its_own_tdp_borrows_its_parents_measurement(tmp_path: Path) -> None:
    """A child of a measured part that sets its own TDP inherits the die's energy, not the measurement as
    if it were made at the child's TDP: 2.0 pJ per BF16 op, and the child's 50 W caps it."""
    child = '\n[child]\nextends = "mychip"\n[child.power]\ntdp_w = 50\n'
    p = tmp_path / "chips.toml"
    p.write_text(CAPPED + child)
    dev = load_devices([p], env=False)["child"]
    assert dev.power.sustained_part == "mychip"
    assert dev.energy_pj_per_op("bfloat16") == pytest.approx(2.0)


def test_a_later_file_overriding_the_measurement_wins(tmp_path: Path) -> None:
    """A user file naming a built-in part replaces its borrowed measurement with another one or its own,
    and a part whose measurement others borrow cannot itself borrow (the borrowers name it)."""
    p = tmp_path / "over.toml"
    p.write_text('[h100-nvl.power]\nsustained_from = "l4"\n')
    assert load_devices([p], env=False)["h100-nvl"].power.sustained_part == "l4"
    p.write_text('[h100-nvl.power]\nsustained_ops_per_s = { bfloat16 = 500e12 }\nsustained_source = "measured: t"\n')
    dev = load_devices([p], env=False)["h100-nvl"]
    assert dev.power.sustained_part is None and dict(dev.power.sustained_ops_per_s) == {"bfloat16": 500e12}
    p.write_text('[h100-pcie-80gb.power]\nsustained_from = "t4"\n')
    with pytest.raises(CatalogError, match=r"device 'h100-sxm'.*'h100-pcie-80gb' is not a part with its own"):
        load_devices([p], env=False)


def test_sustained_from_an_unknown_part_names_the_measured_ones(tmp_path: Path) -> None:
    p = tmp_path / "chips.toml"
    p.write_text(CAPPED + SIBLING.format(tdp=60).replace('sustained_from = "mychip"', 'sustained_from = "nope"'))
    with pytest.raises(CatalogError, match=r"'nope' is not a part with its own sustained_ops_per_s; known: .*mychip"):
        load_devices([p], env=False)


@pytest.mark.parametrize(
    ("name", "fmt", "capped"),
    [
        ("h100-nvl", "bfloat16", True),  # 280 W above idle / 0.497 pJ = 563 TFLOP/s of its 836 x 0.80
        ("h100-nvl", "float8_e4m3fn", True),  # 280 W / 0.355 pJ = 789 of its 1670 x 0.71
        ("h100-sxm", "float8_e4m3fn", True),  # 490 W / 0.355 pJ = 1380 of its 1979 x 0.71
        ("h100-sxm", "bfloat16", False),  # 794 TFLOP/s x 0.497 pJ = 395 W, under its 490 W
        ("gh200-96gb", "float8_e4m3fn", False),  # 700 W above idle
    ],
)
def test_gh100_parts_are_capped_where_the_die_energy_exceeds_their_tdp(name: str, fmt: str, capped: bool) -> None:
    """The GH100 parts on the PCIe card's energy per op: an 8192^3 GEMM is capped at the TDP exactly where
    (TDP - idle) / energy per op is below the unthrottled rate, and runs at that rate (within 5 %, the
    operands' memory energy below it)."""
    dev = load_catalog()[name]
    e = estimate(_gemm_trace(), dev, fmt, execution="eager")
    rate, watts = 2 * 8192**3 / e.latency_s, e.energy_j / e.latency_s
    assert bool([r for r in e.rows if r.bound is Bound.POWER]) is capped
    if capped:
        assert watts == pytest.approx(dev.power.tdp_w)
        budget = (dev.power.tdp_w - dev.power.idle_w) * 1e12 / dev.energy_pj_per_op(fmt)
        assert 0.95 * budget <= rate <= budget
    else:
        assert watts < dev.power.tdp_w and rate == pytest.approx(dev.peak(fmt) * dev.compute.efficiency(fmt), rel=0.05)


def test_full_load_power_is_the_measured_energy_at_the_peak() -> None:
    """GH100 at its peak draws the most on INT8 and FP8: their 0.355 pJ at the 1513 TOPS peak plus idle and
    memory, 739 W on the PCIe card (not the per-bit model's FP16 figure, which its measurement replaces)."""
    dev = load_catalog()["h100-pcie-80gb"]
    cal = dev.energy_calibration
    peaks = {f: dev.peak(f) * dev.energy_pj_per_op(f) * 1e-12 for f in dev.formats}
    assert cal.full_load_w == pytest.approx(dev.power.idle_w + cal.memory_w + max(peaks.values()), rel=1e-6)
    assert max(peaks, key=peaks.__getitem__) in ("int8", "float8_e4m3fn", "float8_e5m2")


@pytest.mark.parametrize("name", _measured(own=False))
def test_catalog_parts_of_a_measured_die_stay_within_their_tdp(name: str) -> None:
    """Every catalog part that borrows its die's measurement: a large GEMM in each measured format runs at
    most at the unthrottled rate and averages at most its TDP, exactly its TDP where the cap binds."""
    dev = load_catalog()[name]
    for fmt in dev.power.sustained_ops_per_s:
        e = estimate(_gemm_trace(4096, 4096), dev, fmt, execution="eager")
        watts = e.energy_j / e.latency_s
        assert watts <= dev.power.tdp_w * (1 + 1e-9), fmt
        if [r for r in e.rows if r.bound is Bound.POWER]:
            assert watts == pytest.approx(dev.power.tdp_w), fmt


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
