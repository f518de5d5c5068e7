"""chipfit calibrate: the device file it writes validates and prices models; the CLI end to end."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from chipfit.cli import main
from chipfit.cost import estimate
from chipfit.cost.calibrate import _fit_half_dims, device_toml, write_device_file
from chipfit.hardware.loader import load_devices
from chipfit.models import get_model
from chipfit.trace import trace

MEASURED = {
    "cpu": "Test CPU", "threads": 2, "date": "2026-11-22", "torch": "2.13.0",
    "gemm": {"float32": [{"m": 64, "n": 64, "k": 64, "seconds": 1e-5, "flops_per_s": 5e10}]},
    "peak_ops_per_s": {"float32": 1.2e11, "bfloat16": 2e9}, "gemm_half_dims": (16, 8, 8),
    "gemm_fit_mean_log_error": 0.03, "dram_bytes_per_s": 3e10, "cache_bytes": 32 * 2**20,
    "cache_bytes_per_s": 1e11, "vector_ops_per_s": 1e10, "dispatch_overhead_s": 2e-6, "view_overhead_s": 1e-6,
    "module_overhead_s": 2e-6, "class_overhead_s": {"matmul": 6e-6, "conv": 3e-5}, "conv_efficiency": 0.5,
    "fresh_alloc_bytes_per_s": 5e9, "memory_bytes": 24e9, "param_access_s": 1e-6,
    "op_overhead_s": {"aten.gelu.default": 4e-5, "aten.native_layer_norm.default": 7e-6},
}  # fmt: skip


def test_device_file_from_measurements(tmp_path: Path) -> None:
    path = write_device_file(device_toml(MEASURED, "my-cpu"), tmp_path / "cpu.toml")
    dev = load_devices([path], env=False)["my-cpu"]
    assert dev.family == "cpu" and dev.peak("float32") == 1.2e11
    assert dev.compute.gemm_half_dims == (16, 8, 8) and dev.compute.class_overhead_s["conv"] == 3e-5
    assert dev.compute.source.kind == "measured" and dev.power.source.kind == "assumed"
    spec = get_model("mlp")
    e = estimate(trace(spec.build(), spec.example_inputs(8)), dev, "fp32")
    module_calls = [r for r in e.rows if r.op == "nn.Module calls"]
    # 7 calls (MLP, Sequential, 3 Linear, 2 ReLU) and 6 parameters fetched (3 weights, 3 biases)
    assert module_calls and module_calls[0].time_s == pytest.approx(2e-6 * 7 + 1e-6 * 6)
    assert e.latency_s > 3 * 6e-6  # three matmuls' dispatch at least


def test_half_dims_fit_recovers_a_known_curve() -> None:
    peak, (m0, n0, k0), overhead = 1e11, (32, 16, 8), 5e-6
    rows = []
    for m, n, k in [
        (2048, 2048, 2048),
        (1, 4096, 4096),
        (64, 1024, 1024),
        (4096, 64, 256),
        (128, 128, 128),
        (8, 8, 512),
    ]:
        t = overhead + 2 * m * n * k / peak * (1 + m0 / m + n0 / n + k0 / k)
        rows.append({"m": m, "n": n, "k": k, "seconds": t, "flops_per_s": 2 * m * n * k / t})
    fit = _fit_half_dims(rows, overhead)
    assert fit["half_dims"] == (m0, n0, k0) and fit["error"] < 1e-9
    assert fit["peak"] == pytest.approx(peak, rel=0.05)


def test_calibrate_cli_quick(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "this.toml"
    assert main(["calibrate", "--quick", "--output", str(out), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["peak_ops_per_s"]["float32"] > 1e9 and data["dram_bytes_per_s"] > 1e9
    assert 0 < data["dispatch_overhead_s"] < 1e-3
    assert (
        main(["estimate", "mlp", "--device", "this-cpu", "--device-file", str(out), "--precision", "fp32", "--json"])
        == 0
    )
    est = json.loads(capsys.readouterr().out)
    assert est["device"] == "this-cpu" and est["latency_s"] > 0


def test_calibrate_re_measures_a_disturbed_run_and_never_writes_a_bad_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 18: calibrate validated the file only after writing it; a disturbed run wrote a file
    the loader then rejected. Now every run is checked first and a disturbed one is re-measured."""
    import chipfit.cost.calibrate as cal
    from chipfit.cost.calibrate import problems

    disturbed = {**MEASURED, "peak_ops_per_s": {"float32": 5e9, "bfloat16": 2e9}}  # GEMM below the vector rate
    out_of_range = {**MEASURED, "dispatch_overhead_s": 0.5}  # half a second per op: the loader rejects it
    assert problems(MEASURED) == []
    assert "float32 GEMM peak 5 GFLOP/s below the vector rate 10 GFLOP/s" in problems(disturbed)[0]
    assert "dispatch_overhead_s" in problems(out_of_range)[0]
    runs = iter([disturbed, out_of_range, MEASURED])
    monkeypatch.setattr(cal, "calibrate", lambda quick=False, progress=None: dict(next(runs)))
    out = tmp_path / "cpu.toml"
    assert main(["calibrate", "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "re-measuring (1 of 3 runs disturbed)" in printed and "re-measuring (2 of 3" in printed
    assert "this-cpu" in load_devices([out], env=False)  # the third, consistent run was written
    monkeypatch.setattr(cal, "calibrate", lambda quick=False, progress=None: dict(disturbed))
    again = tmp_path / "never.toml"
    assert main(["calibrate", "--output", str(again)]) == 2
    err = capsys.readouterr().err
    assert "stayed inconsistent over 3 runs" in err and "nothing was written" in err and err.count("\n") == 1
    assert not again.exists()
    assert main(["calibrate", "--name", "my cpu", "--output", str(again)]) == 2
    assert "use letters, digits" in capsys.readouterr().err


class _GeluNorm(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.norm = torch.nn.LayerNorm(8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.gelu(x) + self.norm(x)


def test_op_overheads_price_the_ops_they_name_in_eager_only(tmp_path: Path) -> None:
    """A measured per-op fixed cost replaces the dispatch for that op (gelu, layer norm), other ops keep the
    dispatch; a compiled stack launches kernels instead and does not pay them."""
    dev = load_devices([write_device_file(device_toml(MEASURED, "my-cpu"), tmp_path / "cpu.toml")], env=False)["my-cpu"]
    assert dev.compute.op_overhead_s["aten.gelu.default"] == 4e-5 and dev.compute.param_access_s == 1e-6
    t = trace(_GeluNorm(), (torch.randn(4, 8),))
    rows = {r.op: r for r in estimate(t, dev, "fp32", execution="eager").rows}
    assert rows["aten.gelu.default"].overhead_s == 4e-5
    assert rows["aten.native_layer_norm.default"].overhead_s == 7e-6
    assert rows["aten.add.Tensor"].overhead_s == 2e-6  # no entry: the dispatch
    assert rows["nn.Module calls"].time_s == pytest.approx(2 * 2e-6 + 2 * 1e-6)  # 2 calls, weight and bias
    compiled_rows = estimate(t, dev, "fp32", execution="compiled").rows
    assert all(r.overhead_s < 4e-5 for r in compiled_rows)


def test_op_probes_run_the_ops_they_are_named_for() -> None:
    """Each probe dispatches its aten op, plus exactly the companions it declares (whose cost is taken off)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from chipfit.cost.calibrate import op_probes
    from chipfit.trace.classify import is_view

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.ops: list[Any] = []

        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            self.ops.append(func)
            return func(*args, **(kwargs or {}))

    for name, (fn, extra) in op_probes().items():
        with Ops() as seen:
            fn()
        names = [str(f) for f in seen.ops]
        assert names.count(name) == 1, (name, names)
        others = [f for f in seen.ops if str(f) != name]
        assert sorted("view" if is_view(f) else "dispatch" for f in others) == sorted(extra), (name, names)


def test_op_overhead_table_rejects_a_name_that_is_not_an_aten_op(tmp_path: Path) -> None:
    from chipfit.hardware.loader import CatalogError

    text = device_toml(MEASURED, "my-cpu").replace('"aten.gelu.default"', '"gelu"')
    with pytest.raises(CatalogError, match=r"op_overhead_s.gelu.*aten op name.*aten.gelu.default"):
        load_devices([write_device_file(text, tmp_path / "cpu.toml")], env=False)


def test_a_measured_graph_call_is_what_the_compiled_step_starts_with(tmp_path: Path) -> None:
    """graph_call_s from the device file is the inductor step's launch row (once a step, beside its
    kernels); eager execution pays none, and a file without it keeps the stack's own figure (0 for inductor)."""
    spec = get_model("mlp")
    tr = trace(spec.build(), spec.example_inputs(8))
    with_call = write_device_file(device_toml({**MEASURED, "graph_call_s": 3.5e-5}, "my-cpu"), tmp_path / "a.toml")
    dev = load_devices([with_call], env=False)["my-cpu"]
    assert dev.compute.graph_call_s == 3.5e-5 and dev.compute.graph_call_source.kind == "measured"
    compiled = estimate(tr, dev, "fp32", execution="inductor")
    launch = [r for r in compiled.rows if r.op_class == "launch"]
    assert len(launch) == 1 and launch[0].time_s == 3.5e-5
    assert not [r for r in estimate(tr, dev, "fp32", execution="eager").rows if r.op_class == "launch"]
    without = write_device_file(device_toml(MEASURED, "my-cpu"), tmp_path / "b.toml")
    plain = load_devices([without], env=False)["my-cpu"]
    assert not [r for r in estimate(tr, plain, "fp32", execution="inductor").rows if r.op_class == "launch"]
    assert compiled.latency_s == pytest.approx(estimate(tr, plain, "fp32", execution="inductor").latency_s + 3.5e-5)


@pytest.mark.slow
def test_graph_call_probe_measures_a_positive_cost() -> None:
    """torch.compile's call beyond its kernels: tens of microseconds on a CPU (35 us here), never zero."""
    from chipfit.cost.calibrate import graph_call_s

    got = graph_call_s(rounds=1)
    assert got is not None and 1e-6 < got < 1e-2


# a 2 x 2 x 2 grid: rates 1e9 at M = 1, 1e11 at M = 100 (N and K do not matter); log-linear in between
GRID = [(m, n, k, 1e9 if m == 1 else 1e11) for m in (1, 100) for n in (8, 64) for k in (8, 64)]


def test_gemm_table_interpolates_in_log_space_and_clamps(tmp_path: Path) -> None:
    """M = 10 is halfway between 1 and 100 in log M, so the rate is the geometric mean, 1e10; outside the
    grid the nearest edge holds; and an FP32 GEMM is priced at the table's rate, not the half-dims form."""
    path = write_device_file(device_toml({**MEASURED, "gemm_table": GRID}, "my-cpu"), tmp_path / "cpu.toml")
    dev = load_devices([path], env=False)["my-cpu"]
    c = dev.compute
    assert c.gemm_table_rate(10, 8, 8) == pytest.approx(1e10)
    assert c.gemm_table_rate(10, 20, 30) == pytest.approx(1e10)  # N, K bracketed but flat
    assert c.gemm_table_rate(1000, 5, 9999) == pytest.approx(1e11)
    assert c.gemm_table_rate(1, 8, 8) == pytest.approx(1e9)
    from chipfit.cost.units import half_dims_time

    t = half_dims_time(dev, dev.matrix_units[0], "float32", (10, 64, 64, 3))
    assert t.seconds == pytest.approx(2 * 10 * 64 * 64 * 3 / 1e10)
    assert half_dims_time(dev, dev.matrix_units[0], "bfloat16", (10, 64, 64, 1)).seconds != pytest.approx(
        2 * 10 * 64 * 64 / 1e10
    )  # the grid is FP32's


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (GRID[:-1], r"must cover each M x N x K combination of its values once; it misses \[\(100, 64, 64\)\]"),
        (GRID + GRID[:1], "repeats a shape"),
        ([[1, 8, 8]], r"row \[1, 8, 8\]: must be \[M, N, K, flops_per_s\]"),
    ],
    ids=["incomplete", "repeat", "short-row"],
)
def test_gemm_table_must_be_a_full_grid(tmp_path: Path, rows: list[Any], message: str) -> None:
    from chipfit.hardware import CatalogError

    text = device_toml(MEASURED, "my-cpu").replace(
        "gemm_half_dims =",
        f'gemm_table = {[list(r) for r in rows]}\ngemm_table_source = "measured: test"\ngemm_half_dims =',
    )
    with pytest.raises(CatalogError, match=message):
        load_devices([write_device_file(text, tmp_path / "cpu.toml")], env=False)
