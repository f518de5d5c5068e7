"""The planner: scale-out formulas, the Pareto front, recommendations and their reasons, the CLI."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chipfit.cli import main
from chipfit.cost import estimate
from chipfit.hardware import get_device
from chipfit.models import get_model
from chipfit.plan import Constraints, PlanError, PlanRow, pareto_front, plan, recommend
from chipfit.plan.scaleout import scale_out
from chipfit.trace import trace


def _row(
    device: str,
    step_s: float,
    usd: float | None,
    drop: float | None = 0.0,
    fits: bool = True,
    energy: float = 1.0,
    precision: str = "bf16",
) -> PlanRow:
    thr = 32 / step_s
    return PlanRow(
        device=device,
        precision=precision,
        format="bfloat16",
        how="native",
        batch=32,
        chips=1,
        strategy="single",
        step_s=step_s,
        throughput=thr,
        usd_per_hour=usd,
        usd_per_million=None if usd is None else usd / 3600 / thr * 1e6,
        energy_per_item_j=energy,
        memory_per_chip_bytes=1e9,
        capacity_bytes=8e10 if fits else 1e8,
        fits=fits,
        comm_s=0.0,
        accuracy=None if drop is None else 0.98 - drop,
        accuracy_drop=drop,
    )


def test_scale_out_strategies() -> None:
    spec = get_model("mlp")
    dev = get_device("h100-sxm")
    tr = trace(spec.build(), list(spec.example_inputs(256)), mode="training", optimizer="adam")
    est = estimate(tr, dev, "bf16")
    one = est.latency_s
    dp = scale_out(est, tr, "data", 4, dev, training=True, batch=256)
    assert dp.step_s >= one and dp.comm_s >= 0  # same per-chip work plus any exposed all-reduce
    no_overlap = scale_out(est, tr, "data", 4, dev, training=True, batch=256, overlap=False)
    assert no_overlap.step_s >= dp.step_s
    inf = trace(spec.build(), list(spec.example_inputs(1)))
    e1 = estimate(inf, dev, "bf16")
    pp1 = scale_out(e1, inf, "pipeline", 4, dev, training=False, batch=1)
    assert pp1.step_s >= e1.latency_s  # one microbatch: a pipeline cannot beat one chip
    assert scale_out(e1, inf, "data", 4, None, training=False).comm_s == 0.0  # replicas need no link
    with pytest.raises(ValueError, match="no chip-to-chip interconnect"):
        scale_out(e1, inf, "tensor", 2, None, training=False)
    with pytest.raises(ValueError, match="known: data, tensor, pipeline"):
        scale_out(e1, inf, "expert", 2, dev, training=False)


def test_pareto_front_keeps_exactly_the_undominated() -> None:
    a = _row("a", 1.0, 10.0, 0.0)
    b = _row("b", 2.0, 4.0, 0.0)  # slower but cheaper per item (8 vs 10): on the front
    c = _row("c", 2.0, 12.0, 0.0)  # slower and dearer than a: dominated
    d = _row("d", 0.5, 20.0, 0.0, fits=False)  # fastest but does not fit: excluded
    e = _row("e", 3.0, 2.0, 0.02)  # cheapest (6) but loses accuracy: on the front
    assert [r.device for r in pareto_front([a, b, c, d, e])] == ["a", "b", "e"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from([0.5, 1.0, 2.0, 3.0]),  # step (few values: many ties and duplicates)
            st.one_of(st.none(), st.sampled_from([1.0, 4.0, 10.0])),  # price, or none
            st.sampled_from([0.0, 0.01, 0.02]),  # accuracy drop
            st.sampled_from([0.5, 1.0, 2.0]),  # energy
            st.booleans(),  # fits
        ),
        max_size=40,
    )
)
def test_the_fast_pareto_front_equals_the_literal_definition(spec: list) -> None:
    from chipfit.plan.plan import pareto_front_reference

    rows = [_row(f"d{i}", s, u, dr, fits=f, energy=e) for i, (s, u, dr, e, f) in enumerate(spec)]
    assert [r.device for r in pareto_front(rows)] == [r.device for r in pareto_front_reference(rows)]
    cons = Constraints(max_latency_ms=2500)
    assert [r.device for r in pareto_front(rows, cons)] == [r.device for r in pareto_front_reference(rows, cons)]


def test_recommend_reasons_and_constraints() -> None:
    a = _row("a100-sxm", 1.0, 10.0, 0.002)
    h = _row("h100-sxm", 0.5, 4.0, 0.004)
    i = _row("inferentia2", 0.8, 1.0, 0.019)
    best, why = recommend([a, h, i], "cost", Constraints(max_accuracy_drop=0.01))
    assert best is h
    assert "5x cheaper per million items than the best other device, a100-sxm" in why[1]  # 10 x 1 vs 4 x 0.5
    assert "0.20 points less accuracy" in why[1]
    assert "inferentia2 bf16, batch 32 is 2.5x cheaper per million items still but loses 1.90 points" in why[2]
    best, _ = recommend([a, h, i], "latency", Constraints())
    assert best is h
    with pytest.raises(PlanError, match=r"the best by cost, inferentia2 .* loses 1.90 points"):
        recommend([a, h, i], "cost", Constraints(max_accuracy_drop=0.001))
    with pytest.raises(PlanError, match=r"over your 0\.1 ms"):
        recommend([a, h, i], "cost", Constraints(max_latency_ms=0.1))
    with pytest.raises(ValueError, match="known: latency, throughput, cost, energy"):
        recommend([a], "speed", Constraints())


def test_plan_measures_accuracy_once_per_policy_and_marks_unfit() -> None:
    spec = get_model("digits-cnn")
    assert spec.pretrained is not None and spec.eval_data is not None
    model = spec.pretrained()
    p = plan(
        model,
        spec.example_inputs,
        name="digits-cnn",
        devices=["a100-sxm", "h100-sxm", "edge-tpu"],
        precisions=["bf16", "int8"],
        batches=[1, 64],
        chips=[1, 2],
        eval_data=spec.eval_data(150)[:1],
        metric="top1",
    )
    assert p.fp32_metric is not None and p.best is not None
    a = {(r.device, r.precision): r.accuracy for r in p.rows}
    assert a[("a100-sxm", "bf16")] == a[("h100-sxm", "bf16")]  # the same policy, measured once
    assert all(r.fits for r in p.rows)  # a 30k-parameter CNN fits everywhere
    assert {r.strategy for r in p.rows} >= {"single", "data"}
    assert p.best in p.rows and p.front


def test_a_model_too_large_for_one_chip_needs_several() -> None:
    from torch._subclasses.fake_tensor import FakeTensorMode

    spec = get_model("decoder-70b")
    with FakeTensorMode(allow_non_fake_inputs=True):  # shapes only: no 280 GB of parameters
        model = spec.build()
    p = plan(
        model,
        lambda b: spec.example_inputs(b, seq_len=128),
        devices=["h100-sxm"],
        precisions=["bf16"],
        batches=[1],
        chips=[1, 2, 4],
        objective="latency",
    )
    single = next(r for r in p.rows if r.chips == 1)
    assert not single.fits  # 70B parameters x 2 bytes = 140 GB > 80 GB
    assert p.best is not None and p.best.chips >= 2 and p.best.strategy in ("tensor", "pipeline")


def test_cli_plan_end_to_end(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = [
        "plan",
        "digits-cnn",
        "--devices",
        "a100-sxm,t4,tpu-v5e",
        "--precisions",
        "bf16,int8",
        "--batch-sizes",
        "1,32",
        "--chips",
        "1,2",
        "--eval-limit",
        "64",
        "--max-accuracy-drop",
        "1",
    ]
    html, csv = tmp_path / "r.html", tmp_path / "r.csv"
    assert main([*argv, "--json", "--html", str(html), "--csv", str(csv)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["recommendation"]["device"] in ("a100-sxm", "t4", "tpu-v5e") and d["reasons"]
    assert len(d["rows"]) == len(csv.read_text().strip().splitlines()) - 1
    assert html.read_text().count("<svg") >= 4
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Recommendation" in out and "Pareto front" in out


def test_cli_plan_infeasible_and_bad_arguments(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["plan", "digits-cnn", "--devices", "t4", "--precisions", "fp16", "--batch-sizes", "8", "--no-accuracy"]
    assert main([*base, "--max-latency-ms", "0.000001"]) == 2
    err = capsys.readouterr().err
    assert "no configuration meets your constraints" in err and "over your 1e-06 ms" in err
    assert main([*base, "--objective", "speed"]) == 2
    assert "known: latency, throughput, cost, energy" in capsys.readouterr().err
    assert main(["plan", "digits-cnn", "--batch-sizes", "8,x"]) == 2
    assert "comma-separated positive integers" in capsys.readouterr().err
    assert main([*base, "--max-accuracy-drop", "1"]) == 2
    assert "needs accuracy" in capsys.readouterr().err
    assert main(["plan", "no-such-model"]) == 2
    assert "unknown model 'no-such-model'; built-in: mlp" in capsys.readouterr().err


def test_html_escapes_model_text(tmp_path: Path) -> None:
    src = tmp_path / "evil.py"
    src.write_text(
        "import torch\n"
        "class M(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.add_module('<script>alert(1)</script>', torch.nn.Linear(4, 4))\n"
        "    def forward(self, x):\n"
        "        return getattr(self, '<script>alert(1)</script>')(x)\n"
        "def make():\n"
        "    return M()\n"
    )
    out = tmp_path / "r.html"
    argv = [
        "plan",
        f"{src}:make",
        "--input-shape",
        "4",
        "--devices",
        "t4",
        "--objective",
        "latency",  # t4 has no price: cost cannot rank it
        "--precisions",
        "fp16",
        "--batch-sizes",
        "2",
        "--html",
        str(out),
        "--csv-only",
    ]
    assert main(argv) == 0
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert text.count("<svg") >= 3  # the layer name reached the per-layer chart, escaped


def test_quant_config_accuracy_replaces_emulation_where_the_device_runs_it() -> None:
    import copy

    import torch

    from chipfit.quant import get_recipe, quantize_

    spec = get_model("digits-cnn")
    assert spec.pretrained is not None and spec.eval_data is not None and spec.calib_data is not None
    model = spec.pretrained()
    data = spec.eval_data(150)[:2]
    calib = [x for x, _ in spec.calib_data(64)[:2]]
    p = plan(
        model,
        spec.example_inputs,
        devices=["a100-sxm", "edge-tpu", "v100-sxm"],  # v100: no INT8 matrix unit (vector fallback)
        precisions=["bf16", "int8"],
        batches=[8],
        allow_fallback=True,  # v100's INT8 runs on its vector unit: swept only when asked for
        eval_data=data,
        metric="top1",
        quant="int8-entropy",
        calibrate=calib,
        backend="serial",
    )
    src = {(r.device, r.precision): r.accuracy_source for r in p.rows}
    assert src[("a100-sxm", "int8")] == src[("edge-tpu", "int8")] == "quant:int8-entropy"
    assert src[("v100-sxm", "int8")] == src[("a100-sxm", "bf16")] == "emulation"
    # the oracle: the same recipe applied by hand, top-1 counted directly
    q = quantize_(copy.deepcopy(model), get_recipe("int8-entropy"), calibrate=calib).eval()
    with torch.no_grad():
        hits = sum(int((q(*x).argmax(-1) == y).sum()) for x, y in data)
    expect = hits / sum(int(y.shape[0]) for _, y in data)
    got = next(r.accuracy for r in p.rows if (r.device, r.precision) == ("a100-sxm", "int8"))
    assert got == pytest.approx(expect, abs=1e-6)  # the metric averages in float32; one item is 1/300
    assert any("quantized with int8-entropy" in r for r in p.reasons)
    with pytest.raises(ValueError, match="quant needs eval_data"):
        plan(model, spec.example_inputs, devices=["t4"], quant="int8", backend="serial")


def test_cli_plan_quant_arguments(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from chipfit.quant import get_recipe

    base = ["plan", "digits-cnn", "--devices", "t4", "--objective", "latency", "--precisions", "int8", "--batch-sizes",
            "8"]  # fmt: skip
    assert main([*base, "--quant", "int9", "--eval-limit", "64"]) == 2
    assert "neither a recipe (int8, " in capsys.readouterr().err
    assert main([*base, "--quant", "int8", "--no-accuracy"]) == 2
    assert "--quant needs accuracy" in capsys.readouterr().err
    cfg = tmp_path / "q.json"
    cfg.write_text(get_recipe("int8-percentile").to_json())
    assert main([*base, "--quant", str(cfg), "--eval-limit", "64", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["rows"]
    assert {r["accuracy_source"] for r in rows} == {"quant:int8-percentile"}


def _user_model(tmp_path: Path) -> Path:
    src = tmp_path / "net.py"
    src.write_text(
        "import torch\n"
        "def make():\n"
        "    torch.manual_seed(0)\n"
        "    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.ReLU(), torch.nn.Linear(32, 5))\n"
    )
    return src


def test_cli_plan_user_model_with_eval_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import numpy as np
    import torch

    src = _user_model(tmp_path)
    import importlib.util

    x = torch.randn(200, 16, generator=torch.Generator().manual_seed(1))

    spec = importlib.util.spec_from_file_location("net", src)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with torch.no_grad():
        y = mod.make()(x).argmax(-1)  # targets the FP32 model gets right: FP32 top-1 is exactly 1
    pt, npz = tmp_path / "d.pt", tmp_path / "d.npz"
    torch.save({"inputs": x, "targets": y}, pt)
    np.savez(npz, inputs=x.numpy())
    base = ["plan", f"{src}:make", "--devices", "a100-sxm,edge-tpu", "--precisions", "bf16,int8", "--batch-sizes",
            "1,16", "--eval-batch", "50", "--json"]  # fmt: skip
    assert main([*base, "--eval-data", str(pt), "--max-accuracy-drop", "50"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metric"] == "top1" and d["fp32_accuracy_percent"] == 100.0  # one unit, named in the key (issue 18)
    assert d["constraints"]["max_accuracy_drop_points"] == 50.0
    assert all(r["accuracy_percent"] is not None and r["accuracy_source"] == "emulation" for r in d["rows"])
    assert all(r["accuracy_drop_points"] == pytest.approx(100 - r["accuracy_percent"]) for r in d["rows"])
    assert {r["batch"] for r in d["rows"]} == {1, 16}  # traced on the data's item shape, no --input-shape
    assert main([*base, "--eval-data", str(npz)]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metric"] == "cosine" and d["fp32_accuracy_cosine"] == pytest.approx(1.0)
    assert all("accuracy_drop_cosine" in r for r in d["rows"])
    assert main([*base, "--eval-data", str(npz), "--metric", "top1"]) == 2
    assert "needs 'targets'" in capsys.readouterr().err
    assert main([*base, "--eval-data", str(pt), "--metric", "f1"]) == 2
    assert "known: top1, agreement, cosine" in capsys.readouterr().err
    bad = tmp_path / "bad.pt"
    torch.save({"inputs": x, "targets": y[:10]}, bad)
    assert main([*base, "--eval-data", str(bad)]) == 2
    assert "disagree on the number of items" in capsys.readouterr().err
    assert main([*base, "--eval-data", str(tmp_path / "d.csv")]) == 2
    assert "Expected .pt or .npz" in capsys.readouterr().err


def test_drops_read_in_the_metrics_units() -> None:
    a = _row("a100-sxm", 1.0, 10.0, 0.002)
    h = _row("h100-sxm", 0.5, 4.0, 0.004)
    _, why = recommend([a, h], "cost", Constraints(metric="cosine"))
    assert "with 0.002 of cosine less accuracy" in why[1]
    with pytest.raises(PlanError, match=r"loses 0\.004 of cosine, over your budget of 0\.001 of cosine"):
        recommend([a, h], "cost", Constraints(max_accuracy_drop=0.001, metric="cosine"))


def test_cli_plan_combined_constraints_leave_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    base = ["plan", "digits-cnn", "--devices", "a100-sxm,h100-sxm", "--precisions", "bf16", "--batch-sizes", "8",
            "--no-accuracy"]  # fmt: skip
    assert main([*base, "--max-latency-ms", "1000", "--max-usd-per-hour", "0.5"]) == 2
    err = capsys.readouterr().err
    assert "no configuration meets your constraints" in err and "over your $0.5/h" in err
    assert "Pareto" not in capsys.readouterr().out  # a message, not an empty table


def test_the_report_renders_from_the_plan_without_tracing_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch
    from torch import nn

    from chipfit.plan.html import render_html

    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    p = plan(model, lambda b: (torch.randn(b, 16),), devices=["h100-sxm", "t4"], precisions=["bf16"],
                  batches=[8], chips=[1, 2], training=True, optimizer="sgd", backend="serial")  # fmt: skip
    assert p.best is not None and p.best_estimate is not None
    assert p.best_estimate.device == p.best.device and p.best_estimate.mode == "training"
    assert p.best_estimate.memory.optimizer_bytes == 0  # the plan's optimizer (sgd), not a hard-coded adam

    def no_tracing(*_a: object, **_k: object) -> None:
        raise AssertionError("the report traced the model again")

    import sys

    monkeypatch.setattr(sys.modules["chipfit.trace"], "trace", no_tracing)
    monkeypatch.setattr(sys.modules["chipfit.cost"], "estimate", no_tracing)
    html = render_html(p)
    assert html.count("<svg") >= 4 and "Roofline" in html and "Time per layer" in html


def _mlp_plan(**kw: object) -> Any:
    spec = get_model("mlp")
    return plan(spec.build(), spec.example_inputs, batches=[8], backend="serial", **kw)  # type: ignore[arg-type]


def test_only_what_a_chip_runs_on_its_matrix_unit_is_swept_by_default() -> None:
    """tpu-v4 has no FP8: its fp8 ran on the vector unit and topped make run's front. By default
    it is not a configuration; --allow-fallback brings it back, labelled."""
    p = _mlp_plan(devices=["tpu-v4", "h100-sxm"], precisions=["fp8", "bf16"])
    assert {r.how for r in p.rows} <= {"native", "autocast"}
    assert ("tpu-v4", "fp8") not in {(r.device, r.precision) for r in p.rows}
    assert ("h100-sxm", "fp8") in {(r.device, r.precision) for r in p.rows}
    q = _mlp_plan(devices=["tpu-v4", "h100-sxm"], precisions=["fp8", "bf16"], allow_fallback=True)
    (v4,) = [r for r in q.rows if (r.device, r.precision, r.chips) == ("tpu-v4", "fp8", 1)]
    assert v4.how == "vector" and v4.label() == "tpu-v4 fp8 (vector unit, no matrix unit for it), batch 8"


def test_a_compiler_cast_is_named_in_the_label() -> None:
    p = _mlp_plan(devices=["trainium"], precisions=["fp32"])
    (row,) = [r for r in p.rows if r.chips == 1]
    assert row.how == "autocast" and row.label() == "trainium fp32→bf16, batch 8"


def test_a_precision_no_chosen_device_runs_is_an_error_naming_those_that_do(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(PlanError, match=r"no chosen device runs fp8 on its matrix unit \(catalog devices that do: "
                       r"[^)]*\bh100-sxm\b[^)]*\bl4\b[^)]*\)") as err:  # fmt: skip
        _mlp_plan(devices=["tpu-v4", "t4"], precisions=["fp8"])
    assert "t4" not in str(err.value).split("(")[1].split(")")[0].split(", ")
    with pytest.raises(PlanError, match=r"no chosen device runs binary on its matrix unit \(no catalog device does\)"):
        _mlp_plan(devices=["h100-sxm"], precisions=["binary", "int2"])
    assert main(["plan", "mlp", "--devices", "t4", "--precisions", "int2", "--batch-sizes", "8"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no chosen device runs int2" in err and "--allow-fallback" in err
    p = _mlp_plan(devices=["tpu-v4", "t4"], objective="latency")  # the defaults: fp8 (nobody runs it) left out
    assert "fp8" not in {r.precision for r in p.rows} and {"fp32", "bf16", "fp16", "int8"} <= {
        r.precision for r in p.rows
    }


def test_an_unmeasured_low_precision_recommendation_says_so() -> None:
    p = _mlp_plan(devices=["h100-sxm"], precisions=["fp8"])
    assert p.best is not None and p.best.precision == "fp8" and p.best.accuracy is None
    assert any("accuracy of float8_e4m3fn was not measured" in r and "--eval-data" in r for r in p.reasons)
    p16 = _mlp_plan(devices=["h100-sxm"], precisions=["bf16"])
    assert not any("not measured" in r for r in p16.reasons)


def test_the_recommendation_is_a_front_member_with_ties_broken_and_equivalents_folded() -> None:
    import dataclasses

    l4_fp8 = _row("l4", 1.0, 3.6, energy=2.0, precision="fp8")
    l4_int8 = _row("l4", 1.0, 3.6, energy=1.0, precision="int8")  # same cost and latency, less energy
    replicas = dataclasses.replace(l4_int8, chips=4, strategy="data", batch=128, throughput=4 * l4_int8.throughput,
                                   usd_per_hour=4 * 3.6)  # the same cost per item on 4 chips  # fmt: skip
    cast = dataclasses.replace(l4_int8, device="l4-twin", how="autocast")  # same numbers, a compiler cast
    twins = [dataclasses.replace(l4_int8, device=f"l4-copy{i}") for i in range(3)]  # the same numbers exactly
    rows = [l4_fp8, replicas, cast, *twins, l4_int8]
    best, why = recommend(rows, "cost", Constraints())
    assert best is twins[0] or best is l4_int8  # energy breaks the tie with fp8, then one chip, then native
    assert best.precision == "int8" and best.chips == 1 and best.how == "native"
    assert best in pareto_front(rows)
    assert [recommend(list(reversed(rows)), "cost", Constraints())[0].label()] == [best.label()]  # deterministic
    assert "(and 4 equivalent configurations)" in why[0]  # three twins and the cast: same numbers
    # its numbers: 1 s per step; 32 items / 1 s; $3.6/h / 3600 / 32 x 1e6 = $31.2 per million; 1 J = 1e3 mJ
    assert "1 s per step, 32 items/s, $31.2 per million items, 1e+03 mJ per item" in why[0]


def test_unpriced_devices_are_listed_never_compared_and_never_ranked_on_cost() -> None:
    priced = _row("l4", 1.0, 3.6)
    free = _row("tpu-v5e", 0.1, None)  # ten times faster, no price
    best, why = recommend([free, priced], "cost", Constraints())
    assert best is priced
    assert not any("tpu-v5e" in r and "cheaper" in r for r in why)  # no "cheaper than tpu-v5e"
    assert "Not ranked on cost, no on-demand price: tpu-v5e." in why
    with pytest.raises(
        PlanError, match=r"price on the on-demand basis, so cost cannot rank them \(unpriced: tpu-v5e\)"
    ):
        recommend([free], "cost", Constraints())
    assert recommend([free], "latency", Constraints())[0] is free
