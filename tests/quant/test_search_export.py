"""Sensitivity ranking, hardware-aware mixed precision, and QDQ export checked in onnxruntime."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from chipfit.models import get_model
from chipfit.models.digits import load_digits_data
from chipfit.quant import QuantConfig, QuantSpec, layers, quantize_
from chipfit.quant.export import export_onnx, run_onnx
from chipfit.quant.search import LEVELS, search, sensitivity


@pytest.fixture(scope="module")
def digits() -> tuple[nn.Module, torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    d = load_digits_data()
    model = get_model("digits-cnn").pretrained().eval()  # type: ignore[misc]
    return model, d.x_test, d.y_test, [d.x_train[i : i + 64] for i in range(0, 512, 64)]


def _metric(x: torch.Tensor, y: torch.Tensor):  # type: ignore[no-untyped-def]
    def top1(m: nn.Module) -> float:
        with torch.no_grad():
            return float((m(x).argmax(-1) == y).float().mean())

    return top1


def test_sensitivity_ranks_the_layer_with_an_outlier_first() -> None:
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8))
    with torch.no_grad():
        model[2].weight[0, 0] = 500.0  # per-tensor INT4 of layer 2 loses every other weight
    x = torch.randn(256, 8, generator=g)
    with torch.no_grad():
        ref = model(x)

    def cos(m: nn.Module) -> float:
        with torch.no_grad():
            return float(torch.nn.functional.cosine_similarity(m(x), ref, dim=1).mean())

    quantize_(model, QuantConfig("w4", QuantSpec("int4", "tensor"), None))
    rows = sensitivity(model, cos, sample=(x,))
    assert [r.name for r in rows] == ["2", "0"]
    assert rows[0].drop > 3 * rows[1].drop > 0
    # the outlier output dominates layer 2's signal energy, so its SQNR still looks fine (49 dB vs
    # 25 dB): why the table carries the end-metric drop next to the SQNR
    assert rows[0].sqnr_db > rows[1].sqnr_db
    assert all(math.isfinite(r.sqnr_db) for r in rows)


def test_search_meets_the_budget_at_lower_estimated_latency(digits: tuple) -> None:  # type: ignore[type-arg]
    base, x, y, calib = digits
    metric = _metric(x, y)
    budget = metric(base) - 0.01  # at most one point of top-1
    res = search(base, metric, device="a100-sxm", budget=budget, sample=(x[:32],), calibrate=calib)
    assert res.metric >= budget
    assert set(res.choice) == {"features.0", "features.2", "classifier.1", "classifier.3"}
    assert set(res.choice.values()) <= set(LEVELS)
    assert res.latency_s <= res.reference["all-bf16"]["latency_s"]
    assert res.reference["all-int4"]["latency_s"] < res.reference["all-bf16"]["latency_s"]
    assert res.speedup_vs("bf16") >= 1.0
    assert metric(base) == 1.0 * metric(copy.deepcopy(base))  # the FP32 model is left alone
    assert not layers(base)


def test_search_names_the_valid_levels(digits: tuple) -> None:  # type: ignore[type-arg]
    base, x, y, _ = digits
    with pytest.raises(ValueError, match="known: int4, int8, fp8, bf16, fp16"):
        search(base, _metric(x, y), device="a100-sxm", budget=0.9, sample=(x[:4],), levels=("int3",))


def test_qdq_export_runs_in_onnxruntime_and_matches(digits: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    import onnx

    base, x, _y, calib = digits
    for recipe in ("int8-entropy", "int8-smoothquant", "int8-weight-only", "fp8"):
        model = quantize_(copy.deepcopy(base), recipe, calibrate=calib)
        path = export_onnx(model, (x[:8],), tmp_path / f"{recipe}.onnx")
        assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(recipe)) == [f"{recipe}.onnx"]
        ops = {n.op_type for n in onnx.load(str(path)).graph.node}
        assert {"QuantizeLinear", "DequantizeLinear"} <= ops
        got = run_onnx(path, (x,))
        with torch.no_grad():
            ours = model(x)
        # stated tolerance: rounding-boundary flips from FP32 summation order (docs/quant.md)
        assert float((got - ours).abs().max()) <= 0.01 * float(ours.abs().max())
        assert float((got.argmax(-1) == ours.argmax(-1)).float().mean()) >= 0.99


def test_fp8_export_is_fp8_qdq_and_exact_without_ort_optimizations(digits: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    import onnx

    base, x, _y, calib = digits
    for w, a in (("float8_e4m3fn", "float8_e4m3fn"), ("float8_e5m2", "float8_e5m2"), ("int8", "float8_e4m3fn")):
        cfg = QuantConfig("mixed", QuantSpec(w, "channel"), QuantSpec(a, "tensor", calibrator="percentile"))
        model = quantize_(copy.deepcopy(base), cfg, calibrate=calib)
        path = export_onnx(model, (x[:8],), tmp_path / "m.onnx")
        g = onnx.load(str(path))
        assert max(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")) >= 19
        types = {t.data_type for t in g.graph.initializer}
        assert onnx.TensorProto.FLOAT8E4M3FN in types or onnx.TensorProto.FLOAT8E5M2 in types
        got = run_onnx(path, (x,))  # FP8 graphs run with onnxruntime's graph optimizations off
        with torch.no_grad():
            ours = model(x)
        assert float((got - ours).abs().max()) <= 1e-4 * float(ours.abs().max()), (w, a)


def test_torch_running_the_qdq_layers_equals_chipfit(digits: tuple) -> None:  # type: ignore[type-arg]
    from chipfit.quant.api import _set
    from chipfit.quant.export import _QdqLayer

    base, x, _y, calib = digits
    for recipe in ("int8-entropy", "int8-smoothquant"):
        model = quantize_(copy.deepcopy(base), recipe, calibrate=calib)
        qdq = copy.deepcopy(model)
        for name, ql in layers(qdq).items():
            _set(qdq, name, _QdqLayer(ql))
        with torch.no_grad():
            assert torch.equal(qdq(x), model(x))


def test_export_refuses_what_qdq_cannot_express(digits: tuple, tmp_path: Path) -> None:  # type: ignore[type-arg]
    base, x, _y, _calib = digits
    model = quantize_(copy.deepcopy(base), "int8")  # dynamic per-token inputs
    with pytest.raises(ValueError, match="no QDQ export; supported: symmetric int8 / float8_e4m3fn"):
        export_onnx(model, (x[:8],), tmp_path / "m.onnx")
    model = quantize_(copy.deepcopy(base), "int4-weight-only")
    with pytest.raises(ValueError, match="weight spec 'int4 group 32 minmax' has no QDQ export"):
        export_onnx(model, (x[:8],), tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_search_minimises_energy_too(digits: tuple) -> None:  # type: ignore[type-arg]
    base, x, y, calib = digits
    metric = _metric(x, y)
    budget = metric(base) - 0.01
    res = search(base, metric, device="t4", budget=budget, sample=(x[:32],), calibrate=calib, objective="energy")
    assert res.objective == "energy" and res.metric >= budget
    assert res.energy_j <= res.reference["all-bf16"]["energy_j"]
    with pytest.raises(ValueError, match="known: latency, energy"):
        search(base, metric, device="t4", budget=budget, sample=(x[:4],), objective="cost")
