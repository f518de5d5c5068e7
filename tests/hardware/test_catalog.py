"""Every catalog device loads, validates and is self-consistent; malformed files fail with clear messages."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest

from chipfit.formats import FORMATS
from chipfit.hardware import CatalogError, Device, get_device, list_devices, load_catalog
from chipfit.hardware.device import SOURCE_KINDS
from chipfit.hardware.loader import load_devices


@functools.cache
def _gemm_trace(m: int = 8192, k: int = 8192):
    """One m x k x k GEMM, traced on fake tensors (shapes only)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode

    from chipfit.trace import trace

    with FakeTensorMode(allow_non_fake_inputs=True):
        lin = torch.nn.Linear(k, k, bias=False)
        x = torch.empty(m, k)
    return trace(lin, [x])


DEVICES = list(load_catalog().values())
REQUIRED = [
    "v100-sxm", "t4", "a100-sxm", "l4", "l40s", "h100-sxm", "h200-sxm", "b200", "tpu-v4", "tpu-v5e", "tpu-v5p",
    "tpu-v6e", "edge-tpu", "inferentia2", "trainium", "trainium2", "gaudi2", "gaudi3", "mi300x", "ascend-910b",
    "ascend-310", "hexagon-8g3", "alveo-u250", "xeon-8480",
]  # fmt: skip


def test_catalog_has_every_family_and_required_chip() -> None:
    names = {d.name for d in DEVICES}
    assert len(DEVICES) >= 24
    assert set(REQUIRED) <= names
    assert {d.family for d in DEVICES} == {"gpu", "tpu", "inference-asic", "training-asic", "npu", "fpga", "cpu"}


@pytest.mark.parametrize("dev", DEVICES, ids=lambda d: d.name)
class TestDevice:
    def test_formats_exist_and_sources_are_labelled(self, dev: Device) -> None:
        assert all(f in FORMATS for f in dev.formats)
        for src in (dev.source, dev.compute.source, dev.power.source, dev.support.source):
            assert src.kind in SOURCE_KINDS and src.ref

    def test_matrix_peak_beats_vector_fp32(self, dev: Device) -> None:
        sixteen = max(dev.peak("bfloat16"), dev.peak("float16"))
        if sixteen:
            assert sixteen >= dev.compute.vector_ops_per_s

    def test_ridge_points_are_sane(self, dev: Device) -> None:
        # ops per byte of main memory: from about 1 (memory-rich) to a few thousand (Edge TPU streams from host)
        for f in dev.formats:
            # an SRAM-only wafer (Cerebras: 21 PB/s) sits below 1: nothing on it is memory-bound
            low = 0.5 if all(m.kind == "sram" for m in dev.memory) else 1
            assert low <= dev.ridge_point(f) <= 10_000, (f, dev.ridge_point(f))

    def test_matrix_units_reproduce_the_stated_peak(self, dev: Device) -> None:
        """count x rows x cols x depth x clock x 2 must match the 16-bit (or int8-only) peak within 5 %."""
        if not dev.matrix_units:
            pytest.fail("every device needs a matrix unit description")
        ref = next(dev.peak(f) for f in ("bfloat16", "float16", "int8") if dev.peak(f))
        derived = 2 * sum(u.peak_macs_per_s for u in dev.matrix_units)
        assert math.isclose(derived, ref, rel_tol=0.05), (derived / 1e12, ref / 1e12)

    def test_arithmetic_energy_below_chip_power(self, dev: Device) -> None:
        """Energy per op never exceeds TDP / peak (the whole chip at full load), nor the published
        efficiency where there is one (the calibration's full-load power is at most what it implies)."""
        cal = dev.energy_calibration
        for f in dev.formats:
            if dev.power.sustained_ops_per_s:  # measured: the chip cannot hold its peak within its TDP
                assert 0 < dev.energy_pj_per_op(f) <= cal.full_load_w * 1e12 / dev.peak(f) * (1 + 1e-9), f
                if f in dev.power.sustained_ops_per_s and dev.power.sustained_part is None:
                    assert dev.energy_pj_per_op(f) > dev.tdp_pj_per_op(f), f  # it could not hold its peak
            else:
                assert 0 < dev.energy_pj_per_op(f) < dev.tdp_pj_per_op(f), f
        if dev.published_ops_per_j:
            best = max(dev.formats, key=dev.peak)
            assert dev.energy_pj_per_op(best) <= 1e12 / dev.published_ops_per_j * (1 + 1e-9)

    def test_a_compute_bound_model_at_the_best_native_format_draws_between_0_3_tdp_and_tdp(self, dev: Device) -> None:
        """A large GEMM (8192^3; on a chip whose weights otherwise stream from its host, 2048 x 1024 x 1024,
        which fits on chip) priced by the cost model at the format with the highest peak: its average power
        is at least 0.3 x TDP and at most TDP (and at most the calibrated full-load power, the bound by
        construction)."""
        from chipfit.cost import estimate

        best = max(dev.formats, key=dev.peak)  # eager: one GEMM kernel, no graph launch around it
        e = estimate(_gemm_trace(), dev, best, execution="eager")

        def bound(e: object) -> float:  # compute-bound, or slowed by the TDP capping the clock
            return e.share("compute") + e.share("power")  # type: ignore[attr-defined]

        if bound(e) < 0.9:
            e = estimate(_gemm_trace(2048, 1024), dev, best, execution="eager")
        assert bound(e) > 0.9, bound(e)
        watts = e.energy_j / e.latency_s
        assert 0.3 * dev.power.tdp_w <= watts <= dev.power.tdp_w * (1 + 1e-9), (best, watts, dev.power.tdp_w)
        assert watts <= dev.energy_calibration.full_load_w * (1 + 1e-9)

    def test_memory_power_price(self, dev: Device) -> None:
        main = dev.main_memory
        if all(m.kind == "sram" for m in dev.memory):  # dataflow chips: weights resident on chip, no DRAM
            assert main is dev.on_chip and dev.family in ("inference-asic", "training-asic")
        else:
            assert main.kind in ("hbm", "gddr", "dram")
        if dev.on_chip is not None and dev.on_chip is not main:
            assert dev.on_chip.capacity_bytes < main.capacity_bytes
            assert dev.on_chip.energy_pj_per_byte < main.energy_pj_per_byte
        assert 0 <= dev.power.idle_w <= dev.power.tdp_w
        assert all(p.usd > 0 for p in dev.prices)

    def test_host_resolves_to_a_cpu(self, dev: Device) -> None:
        if dev.family == "cpu":
            assert dev.support.host is None
        else:
            assert dev.support.host is not None and get_device(dev.support.host).family == "cpu"


def test_energy_ordering_follows_horowitz() -> None:
    h100 = get_device("h100-sxm")
    # narrower formats cost less per op (Horowitz: 3.7 pJ fp32, 1.1 fp16 multiply at 45 nm)
    assert h100.energy_pj_per_op("float32") > h100.energy_pj_per_op("bfloat16") > h100.energy_pj_per_op("int8")
    assert h100.energy_pj_per_op("float16") >= h100.energy_pj_per_op("float8_e4m3fn")
    b200 = get_device("b200")
    assert b200.energy_pj_per_op("float8_e4m3fn") >= b200.energy_pj_per_op("float4_e2m1fn")
    # an FP8 op costs about an INT8 one on the same chip (was 4.9x: the FP32 add was charged per product)
    assert 0.7 < h100.energy_pj_per_op("float8_e4m3fn") / h100.energy_pj_per_op("int8") < 1.5
    # unmeasured, a format at twice the peak with half the bits draws about the same power at its peak
    p_bf16 = b200.peak("bfloat16") * b200.energy_pj_per_op("bfloat16")
    p_fp8 = b200.peak("float8_e4m3fn") * b200.energy_pj_per_op("float8_e4m3fn")
    assert not b200.power.sustained_ops_per_s and 0.8 < p_fp8 / p_bf16 < 1.1
    # measured (GH100, on the 350 W PCIe card): one op costs what its format's power-capped rate implies,
    # an FP8 op 492.8 / 690.1 = 0.71 of a BF16 one, so FP8 at its peak draws 1.43x what BF16 does at its own
    ratio = h100.energy_pj_per_op("float8_e4m3fn") / h100.energy_pj_per_op("bfloat16")
    assert ratio == pytest.approx(492.8 / 690.1)
    assert h100.energy_pj_per_op("int8") == pytest.approx(h100.energy_pj_per_op("float8_e4m3fn"), rel=0.01)
    # same format, older process: more energy (V100 12 nm vs H100 5 nm)
    assert get_device("v100-sxm").energy_pj_per_op("float16") > h100.energy_pj_per_op("float16")
    # HBM per byte is cheaper than DDR per byte (6 vs 20 pJ/bit)
    assert h100.main_memory.energy_pj_per_byte < get_device("xeon-8480").main_memory.energy_pj_per_byte


def test_extends_inherits_and_overrides() -> None:
    h100, h200 = get_device("h100-sxm"), get_device("h200-sxm")
    assert h200.extends == "h100-sxm"
    assert h200.compute.peak_ops_per_s == h100.compute.peak_ops_per_s
    assert h200.main_memory.capacity_bytes == 141e9 and h100.main_memory.capacity_bytes == 80e9
    # ridge point falls when bandwidth rises at equal compute: 989e12 / 4.8e12 = 206
    assert round(h200.ridge_point("bfloat16")) == 206


def test_list_filters() -> None:
    tpus = list_devices(family="tpu")
    assert {d.name for d in tpus} == {"tpu-v4", "tpu-v5e", "tpu-v5p", "tpu-v6e", "tpu-v7"}
    fp4 = list_devices(fmt="float4_e2m1fn")
    assert {d.name for d in fp4} >= {"b200", "b300", "gb200-nvl72"} and all(d.family in ("gpu",) for d in fp4)
    with pytest.raises(ValueError, match="unknown family 'asic'; known: gpu, tpu"):
        list_devices(family="asic")
    with pytest.raises(ValueError, match=r"unknown device 'h10'; known: a100-pcie-40gb, a100-pcie-80gb, a100-sxm, a30"):
        get_device("h10")


# ------------------------------------------------------------ user files and malformed files
GOOD = """
[mychip]
display_name = "My chip"
vendor = "Me"
family = "inference-asic"
year = 2025
process_nm = 5
source = "assumed: a test chip"
[mychip.compute]
peak_ops_per_s = { bfloat16 = 100e12, int8 = 200e12 }
source = "assumed: test"
vector_ops_per_s = 1e12
vector_source = "assumed: test"
units = 1
dispatch_overhead_s = 1e-6
overhead_source = "assumed: test"
[mychip.matrix_units.array]
kind = "systolic"
count = 1
rows = 128
cols = 128
depth = 1
clock_hz = 3.05e9
source = "assumed: test"
[mychip.memory.hbm]
kind = "hbm"
capacity_bytes = 16e9
bandwidth_bytes_per_s = 1e12
source = "assumed: test"
[mychip.power]
tdp_w = 100
source = "assumed: test"
[mychip.support]
unsupported_format = "host"
host = "xeon-8480"
source = "assumed: test"
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "chips.toml"
    p.write_text(text)
    return p


def test_user_device_file_adds_a_device(tmp_path: Path) -> None:
    devs = load_devices([_write(tmp_path, GOOD)], env=False)
    assert devs["mychip"].peak("int8") == 200e12
    assert devs["mychip"].power.idle_source.kind == "assumed"  # idle derived and labelled


def test_user_file_overrides_builtin_fields(tmp_path: Path) -> None:
    text = '[[a100-sxm.prices]]\nbasis = "on-demand"\nprovider = "us"\nunit = "accelerator-hour"\nusd = 0.99\n'
    p = _write(tmp_path, text + 'date = "2026-11"\nsource = "measured: our invoice"\n')
    devs = load_devices([p], env=False)
    assert [x.usd for x in devs["a100-sxm"].prices] == [0.99]
    assert devs["a100-sxm"].peak("bfloat16") == 312e12  # the rest is untouched
    assert devs["a100-sxm"].file == str(p)


def test_env_path_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHIPFIT_DEVICE_PATH", str(_write(tmp_path, GOOD)))
    assert "mychip" in load_devices()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("tdp_w = 100\n", ""), r"device 'mychip': field 'power\.tdp_w': missing required field"),
        (
            lambda t: t.replace("bandwidth_bytes_per_s = 1e12", "bandwidth_bytes_per_s = 1.8e15"),
            r"field 'memory\.hbm\.bandwidth_bytes_per_s': 1\.8e\+15 is outside \[1e\+08, 2e\+13\]; "
            r"the unit is bytes per second",
        ),
        (
            lambda t: t.replace("bfloat16 = 100e12", "bf16 = 100e12"),
            r"field 'compute\.peak_ops_per_s\.bf16': unknown format 'bf16'; known: float32",
        ),
        (
            lambda t: t.replace("[mychip]\n", '[mychip]\nextends = "h1000"\n'),
            r"field 'extends': unknown device 'h1000'; known: ",
        ),
        (lambda t: t.replace("[mychip.power]", "[mychip.power"), r"chips\.toml: not valid TOML"),
        (
            lambda t: t.replace("tdp_w = 100", "tdp_watts = 100"),
            r"field 'power\.tdp_watts': unknown field; valid fields: idle_source, idle_w",
        ),
        (
            lambda t: t.replace('family = "inference-asic"', 'family = "asic"'),
            r"field 'family': unknown value 'asic'; valid: gpu, tpu",
        ),
        (
            lambda t: t.replace('source = "assumed: a test chip"', 'source = "a test chip"'),
            r"field 'source': source must be 'KIND: reference'",
        ),
        (
            lambda t: t.replace('host = "xeon-8480"', 'host = "h100-sxm"'),
            r"field 'support\.host': 'h100-sxm' is a gpu, the host must be a cpu",
        ),
        (
            lambda t: t.replace("clock_hz = 3.05e9", "clock_hz = 3.05"),
            r"field 'matrix_units\.array\.clock_hz': 3\.05 is outside",
        ),
        (
            lambda t: t.replace("capacity_bytes = 16e9", 'capacity_bytes = "16 GB"'),
            r"field 'memory\.hbm\.capacity_bytes': must be a number",
        ),
    ],
    ids=[
        "missing",
        "unit-range",
        "unknown-format",
        "unknown-extends",
        "bad-toml",
        "typo",
        "family",
        "source",
        "host",
        "clock",
        "type",
    ],
)
def test_malformed_device_file(tmp_path: Path, edit: object, message: str) -> None:
    path = _write(tmp_path, edit(GOOD))  # type: ignore[operator]
    with pytest.raises(CatalogError, match=message) as err:
        load_devices([path], env=False)
    assert "chips.toml" in str(err.value)


def test_extends_cycle(tmp_path: Path) -> None:
    text = GOOD + '\n[a]\nextends = "b"\n[b]\nextends = "a"\n'
    with pytest.raises(CatalogError, match="cycle"):
        load_devices([_write(tmp_path, text)], env=False)


def test_missing_file() -> None:
    with pytest.raises(CatalogError, match="device file not found"):
        load_devices(["/nonexistent/chips.toml"], env=False)


# ------------------------------------------------------------ per-format GEMM efficiency
EFF = 'units = 1\nmatmul_efficiency_format = { int8 = 0.5 }\nefficiency_source = "measured: a test sweep"\n'


def test_per_format_efficiency_overrides_only_its_format(tmp_path: Path) -> None:
    dev = load_devices([_write(tmp_path, GOOD.replace("units = 1\n", EFF))], env=False)["mychip"]
    assert dev.compute.efficiency("int8") == 0.5
    assert dev.compute.efficiency("bfloat16") == dev.compute.matmul_efficiency == 0.75  # the default stays
    assert dev.compute.efficiency_source.kind == "measured"
    # the catalog's Xeon: AMX INT8 at its single-thread ceiling, BF16 at its whole-socket measurement,
    # AVX-512 FP32 at the default
    xeon = get_device("xeon-8480")
    assert (xeon.compute.efficiency("int8"), xeon.compute.efficiency("bfloat16")) == (0.5, 0.25)
    assert xeon.compute.efficiency("float32") == xeon.compute.matmul_efficiency


def test_per_format_efficiency_prices_that_format_only(tmp_path: Path) -> None:
    import torch

    from chipfit.cost import estimate
    from chipfit.trace import trace

    base = load_devices([_write(tmp_path, GOOD)], env=False)["mychip"]
    half = load_devices([_write(tmp_path, GOOD.replace("units = 1\n", EFF))], env=False)["mychip"]
    tr = trace(torch.nn.Linear(4096, 4096, bias=False), [torch.randn(4096, 4096)])
    b8, h8 = (estimate(tr, d, "int8", execution="compiled") for d in (base, half))
    b16, h16 = (estimate(tr, d, "bfloat16", execution="compiled") for d in (base, half))
    mm = lambda e: sum(r.time_s for r in e.rows if r.op_class == "matmul")  # noqa: E731
    assert mm(b8) > 0
    assert mm(h8) == pytest.approx(mm(b8) * 0.75 / 0.5, rel=0.02)  # compute-bound: 1/efficiency
    assert mm(h16) == pytest.approx(mm(b16), rel=1e-9)


@pytest.mark.parametrize(
    ("eff", "message"),
    [
        (EFF.replace("int8 = 0.5", "i8 = 0.5"), r"field 'compute\.matmul_efficiency_format\.i8': unknown format 'i8'"),
        (EFF.replace("{ int8 = 0.5 }", "0.5"), r"field 'compute\.matmul_efficiency_format': must be a table"),
        (EFF.replace('efficiency_source = "measured: a test sweep"\n', ""), r"field 'compute\.efficiency_source'"),
        (EFF.replace("int8 = 0.5", "int8 = 5"), r"field 'compute\.matmul_efficiency_format\.int8': 5 is outside"),
        (
            EFF.replace("int8 = 0.5", "float16 = 0.5"),
            r"field 'compute\.matmul_efficiency_format\.float16': compute\.peak_ops_per_s has no float16; it lists",
        ),
    ],
    ids=["format", "not-a-table", "no-source", "range", "no-peak"],
)
def test_malformed_per_format_efficiency(tmp_path: Path, eff: str, message: str) -> None:
    with pytest.raises(CatalogError, match=message):
        load_devices([_write(tmp_path, GOOD.replace("units = 1\n", eff))], env=False)


def test_a_part_with_its_own_efficiency_does_not_inherit_the_per_format_ones(tmp_path: Path) -> None:
    own = (
        '[my-h100]\nextends = "h100-sxm"\n[my-h100.compute]\n'
        'matmul_efficiency = 0.9\nefficiency_source = "measured: ours"\n'
    )
    dev = load_devices([_write(tmp_path, own)], env=False)["my-h100"]
    # not the parent's FP8/INT8 0.709
    assert dev.compute.efficiency("int8") == dev.compute.efficiency("bfloat16") == 0.9
    same = '[my-h100]\nextends = "h100-sxm"\ndisplay_name = "mine"\n'
    kept = load_devices([_write(tmp_path, same)], env=False)["my-h100"]
    assert kept.compute.efficiency("int8") == get_device("h100-sxm").compute.efficiency("int8") < 0.803


@pytest.mark.parametrize(
    ("name", "n", "measured_flops"),
    [
        ("xeon-8480", 6144, 27.59e12),  # one 56-core SPR socket (Xeon Max 9480), hw-bench
        ("xeon-8592", 12288, 46.45e12),  # one 64-core EMR socket, oneDNN 3.12 AMX, median of 46.4-46.5
    ],
)
def test_xeon_amx_bf16_gemms_reproduce_their_socket_measurements(name: str, n: int, measured_flops: float) -> None:
    """The catalog's per-format BF16 efficiency on each Xeon prices the large square GEMM it was measured
    with within 3 % (the 8592+ inherits the 8480's INT8 figure but carries its own BF16 one)."""
    from chipfit.cost import estimate

    e = estimate(_gemm_trace(n, n), get_device(name), "bfloat16", execution="eager")
    assert 2 * n**3 / e.latency_s == pytest.approx(measured_flops, rel=0.03)
    assert get_device("xeon-8592").compute.efficiency("int8") == get_device("xeon-8480").compute.efficiency("int8")
