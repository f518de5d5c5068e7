"""The real data and the real model: digits-cnn on scikit-learn's digits, all-MiniLM-L6-v2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

import chipfit
from chipfit.cli import main
from chipfit.emulate import METRICS, evaluate
from chipfit.models import get_model
from chipfit.models.digits import load_digits_data, train_digits_cnn
from chipfit.models.minilm import minilm_model, sentences, tokenize


@pytest.fixture(scope="module")
def digits() -> tuple[torch.nn.Module, list]:  # type: ignore[type-arg]
    spec = get_model("digits-cnn")
    assert spec.pretrained is not None and spec.eval_data is not None
    return spec.pretrained(), spec.eval_data(32)


@pytest.fixture(scope="module")
def minilm() -> torch.nn.Module:
    return minilm_model()


def test_digits_data_is_the_real_split() -> None:
    d = load_digits_data()
    assert len(d.x_train) + len(d.x_test) == 1797 and len(d.x_test) == 450
    assert d.x_test.min() >= 0 and d.x_test.max() <= 1 and set(d.y_test.tolist()) == set(range(10))


def test_digits_training_is_deterministic() -> None:
    a = train_digits_cnn(epochs=1).state_dict()
    b = train_digits_cnn(epochs=1).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_pretrained_digits_cnn_is_accurate_and_emulation_changes_its_numbers(digits) -> None:  # type: ignore[no-untyped-def]
    model, data = digits
    ev = evaluate(model, data, "top1", devices=["a100-sxm", "b200"], precisions=["bf16", "int8", "fp4"])
    assert ev.fp32 > 0.95 and ev.items == 450
    rows = {(r.device, r.precision): r for r in ev.rows}
    assert rows[("a100-sxm", "bf16")].value > 0.95
    assert rows[("a100-sxm", "fp4")].matrix_fallback == "vector" and rows[("a100-sxm", "fp4")].value == ev.fp32
    assert rows[("b200", "fp4")].fallback_ops == 0
    x = data[0][0][0]
    with chipfit.emulate(device="b200", precision="fp4"):
        low = model(x)
    assert not torch.equal(low, model(x))


def test_evaluate_metrics_and_errors(digits) -> None:  # type: ignore[no-untyped-def]
    model, data = digits
    ev = evaluate(model, data[:2], "agreement", devices=["t4"], precisions=["int8"])
    assert ev.fp32 == 1.0 and 0.9 <= ev.rows[0].value <= 1.0
    custom = evaluate(model, data[:2], lambda out, t: float((out.argmax(1) == t).float().mean()), ["t4"], ["fp16"])
    assert custom.fp32 == pytest.approx(evaluate(model, data[:2], "top1").fp32)
    assert set(METRICS) == {"top1", "agreement", "cosine"}
    with pytest.raises(ValueError, match="unknown metric 'acc'; known: top1, agreement, cosine"):
        evaluate(model, data, "acc")
    with pytest.raises(ValueError, match="needs targets"):
        evaluate(model, [(data[0][0], None)], "top1")
    with pytest.raises(ValueError, match="empty"):
        evaluate(model, [], "top1")


def test_minilm_is_the_published_model(minilm: torch.nn.Module) -> None:
    from sentence_transformers import SentenceTransformer

    from chipfit.models.minilm import _model_dir

    texts = list(sentences())
    assert len(texts) >= 200 and len(set(texts)) == len(texts)
    ref = SentenceTransformer(str(_model_dir()), device="cpu").encode(texts[:16], convert_to_tensor=True)
    with torch.no_grad():
        ours = minilm(*tokenize(texts[:16]))
    assert torch.allclose(ours, ref.cpu(), atol=1e-5)


def test_minilm_under_emulation(minilm: torch.nn.Module) -> None:
    spec = get_model("minilm")
    assert spec.eval_data is not None and spec.metric == "cosine"
    data = spec.eval_data(32)[:2]
    ev = evaluate(minilm, data, "cosine", devices=["tpu-v5e", "h100-sxm"], precisions=["bf16", "fp8"])
    rows = {(r.device, r.precision): r.value for r in ev.rows}
    assert ev.fp32 == pytest.approx(1.0)
    assert 0.99 < rows[("tpu-v5e", "bf16")] < 1.0
    assert rows[("h100-sxm", "fp8")] < rows[("h100-sxm", "bf16")] < 1.0
    assert rows[("tpu-v5e", "fp8")] == pytest.approx(1.0, abs=1e-12)  # no FP8 on v5e: FP32 fallback


def test_cli_emulate_digits(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["emulate", "digits-cnn", "--device", "h100-sxm", "--precision", "bf16", "--precision", "fp8"]
    assert main([*argv, "--json", "--report"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metric"] == "top1" and d["fp32_accuracy_percent"] > 95 and len(d["rows"]) == 2
    for r in d["rows"]:  # percent and points, FP32 minus the row
        assert r["drop_points"] == pytest.approx(d["fp32_accuracy_percent"] - r["accuracy_percent"])
    assert d["report"]["ops"][0]["sqnr_db"] is not None
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "h100-sxm" in out and "float8_e4m3fn" in out and "top-1" in out and "drop (points)" in out
    assert main(["emulate", "digits-cnn", "--device", "tpu-v5e", "--precision", "all", "--json"]) == 0
    precs = [r["precision"] for r in json.loads(capsys.readouterr().out)["rows"]]
    assert precs == ["fp32", "int8"]  # fp32 is cast to bf16 by the compiler; bf16 would repeat it


def test_cli_emulate_minilm_and_errors(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["emulate", "minilm", "--device", "inferentia2", "--precision", "fp32", "--limit", "32", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metric"] == "cosine" and d["items"] == 32 and 0.99 < d["rows"][0]["accuracy_cosine"] < 1.0
    assert main(["emulate", "resnet50", "--device", "t4", "--precision", "int8"]) == 2
    assert "digits-cnn, minilm" in capsys.readouterr().err
    assert main(["emulate", "digits-cnn", "--precision", "int8"]) == 2
    assert "--device" in capsys.readouterr().err
    assert main(["emulate", "digits-cnn", "--device", "t4", "--precision", "int8", "--accumulate", "x"]) == 2
    assert "known: fp32, fp16" in capsys.readouterr().err


def test_emulate_limit_evaluates_exactly_that_many_items(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["emulate", "digits-cnn", "--device", "a100-sxm", "--precision", "bf16", "--limit", "16", "--json"]
    assert main(argv) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 16  # was 32: the whole first batch of 32


def test_out_of_range_targets_are_an_error_naming_the_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import numpy as np

    data = tmp_path / "val.npz"
    np.savez(data, inputs=np.random.default_rng(0).random((8, 1, 8, 8), dtype=np.float32),
             targets=np.array([0, 1, 2, 3, 4, 5, 6, 12]))  # fmt: skip
    argv = ["plan", "digits-cnn", "--eval-data", str(data), "--devices", "h100-sxm", "--precisions", "bf16",
            "--batch-sizes", "8"]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "targets run from 0 to 12, but the model has 10 classes (0..9)" in err
