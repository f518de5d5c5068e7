"""`chipfit sparsify`: accuracy before, after and after fine-tuning, per-layer sparsity, the speed-up,
the ONNX export, and one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from chipfit.cli import main
from chipfit.sparsity import check_nm
from chipfit.sparsity.export import onnx_weights


def _run(args: list[str], capsys: pytest.CaptureFixture[str]) -> dict:
    assert main(["sparsify", *args, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_digits_wanda_finetuned_on_h100(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "pruned.onnx"
    d = _run(["digits-cnn", "--method", "wanda", "--finetune-epochs", "2", "--lr", "1e-3", "--device", "h100-sxm",
              "--precision", "bf16", "--export", str(out)], capsys)  # fmt: skip
    acc = {(r["stage"], r["numerics"]): r["accuracy_percent"] for r in d["accuracy"]}
    assert set(acc) == {(s, n) for s in ("dense", "pruned", "fine-tuned") for n in ("fp32", "h100-sxm:bf16")}
    assert acc[("dense", "fp32")] > 97
    assert acc[("pruned", "fp32")] < acc[("dense", "fp32")]  # pruning half the middle layers costs accuracy
    assert acc[("fine-tuned", "fp32")] > acc[("pruned", "fp32")]  # and fine-tuning wins it back
    layers = {x["name"]: x for x in d["sparsity"]["layers"]}
    assert layers["features.0"]["why_dense"] == "the first layer" and layers["classifier.3"]["pruned"] is False
    assert layers["classifier.1"]["sparsity"] == pytest.approx(0.5)
    sp = d["speed"]
    assert sp["device"] == "h100-sxm" and sp["pruned_gemms"] == 2 and sp["sparse_gemms"] == 2
    assert sp["speedup"] >= 1.0
    assert d["finetune"]["epochs"] == 2 and d["finetune"]["device"] == "h100-sxm"
    # the export holds the fine-tuned model's pruned weights, 2:4 along the reduction dimension
    assert d["export"]["max_abs_diff_vs_chipfit"] < 1e-4
    ws = onnx_weights(out)
    assert check_nm(ws["features.2.weight"] != 0, 2, 4) and check_nm(ws["classifier.1.weight"] != 0, 2, 4)
    assert not (ws["features.0.weight"] == 0).any()  # the first layer stays dense


def test_no_sparse_math_is_said(capsys: pytest.CaptureFixture[str]) -> None:
    d = _run(["digits-cnn", "--device", "v100-sxm", "--precision", "fp16"], capsys)
    assert d["speed"]["speedup"] == 1.0 and d["speed"]["sparse_gemms"] == 0
    assert "no 2:4 sparse math" in d["speed"]["note"]


def test_user_model_on_eval_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = tmp_path / "m.py"
    mod.write_text(
        "import torch\nfrom torch import nn\n"
        "def make():\n    torch.manual_seed(0)\n"
        "    return nn.Sequential(nn.Linear(16, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 4))\n"
    )
    data = tmp_path / "d.pt"
    torch.save({"inputs": torch.randn(40, 16)}, data)
    d = _run([f"{mod}:make", "--eval-data", str(data), "--batch", "8"], capsys)
    assert d["metric"] == "cosine"
    pruned = next(r for r in d["accuracy"] if r["stage"] == "pruned")
    assert 0 < pruned["accuracy_cosine"] < 1
    assert main(["sparsify", f"{mod}:make", "--eval-data", str(data), "--finetune-epochs", "1"]) == 2
    assert "needs a training task" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["digits-cnn", "--pattern", "5:4"], "give N:M with 0 < N <= M"),
        (["digits-cnn", "--method", "random"], "unknown --method 'random'; known: magnitude, wanda"),
        (["digits-cnn", "--device", "h100-sxm"], "--device and --precision go together"),
        (["digits-cnn", "--device", "h100-sxm", "--precision", "fp7"], "unknown precision"),
        (["resnet50"], "scores the built-in tasks digits-cnn, minilm"),
        (["digits-cnn", "--dense", "nope"], "--dense names no prunable layer: nope; prunable: features.0"),
    ],
)
def test_bad_input_is_one_line(args: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sparsify", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_table_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sparsify", "digits-cnn", "--pattern", "unstructured:0.5"]) == 0
    out = capsys.readouterr().out
    assert "pruned unstructured 50%" in out and "the first layer" in out
