"""`chipfit quantize`: tables, --json, the search, export, and errors naming the choices."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chipfit.cli import main


def test_cli_quantize_digits_full(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    onnx_path = tmp_path / "digits.onnx"
    argv = ["quantize", "digits-cnn", "--method", "entropy", "--device", "t4", "--budget", "98"]  # top-1 in percent
    assert main([*argv, "--export", str(onnx_path), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["config"]["name"] == "int8-entropy" and d["metric"] == "top1" and d["eval_items"] == 450
    assert (
        d["fp32_accuracy_percent"] - d["accuracy_percent"] == pytest.approx(d["drop_points"])
        and d["drop_points"] <= 0.5
    )
    assert [r["layer"] for r in d["layers"]] == ["features.0", "features.2", "classifier.1", "classifier.3"]
    assert all(r["amax"] <= r["observed_absmax"] for r in d["layers"])  # entropy clips, never widens
    assert len(d["sensitivity"]) == 4 and d["search"]["accuracy_percent"] >= 98 == d["search"]["budget_percent"]
    assert onnx_path.exists() and d["export"]["max_abs_diff_vs_chipfit"] <= 0.01 * d["export"]["max_abs_output"]
    assert main(["quantize", "digits-cnn", "--recipe", "int4-weight-only", "--no-sensitivity"]) == 0
    out = capsys.readouterr().out
    assert "int4 group 32" in out and "calibration" in out


def test_cli_quantize_minilm_split_and_errors(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["quantize", "minilm", "--recipe", "int8", "--limit", "32", "--no-sensitivity", "--json"]
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["metric"] == "cosine" and d["eval_items"] == 32 and d["accuracy_cosine"] > 0.99
    assert "first 2 batches calibrate" in d["calibration"]
    assert main(["quantize", "digits-cnn", "--method", "kl"]) == 2
    assert "known: dynamic, minmax, percentile, entropy, mse, smoothquant" in capsys.readouterr().err
    assert main(["quantize", "digits-cnn", "--budget", "90"]) == 2
    assert "--budget and --max-accuracy-drop need --device" in capsys.readouterr().err
    assert main(["quantize", "digits-cnn", "--budget", "90", "--max-accuracy-drop", "1", "--device", "t4"]) == 2
    assert "not both" in capsys.readouterr().err
    assert main(["quantize", "resnet50"]) == 2
    assert "digits-cnn, minilm" in capsys.readouterr().err
    bad = tmp_path / "c.json"
    bad.write_text('{"name": "x", "weights": {"format": "int8", "granularity": "row"}}')
    assert main(["quantize", "digits-cnn", "--config", str(bad)]) == 2
    assert "known: tensor, channel" in capsys.readouterr().err


def test_qat_example_runs_and_recovers() -> None:
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, str(root / "examples" / "qat_digits.py"), "--epochs", "1"],
        check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    lines = out.strip().splitlines()
    ptq = float(lines[0].split("top-1 ")[1].split(" %")[0])
    qat = float(lines[-1].split("top-1 ")[1].split(" %")[0])
    assert ptq < 70 < 80 < qat  # 42.00 % -> 85.56 % after one epoch here


def test_cli_a_budget_that_cannot_be_met_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["quantize", "digits-cnn", "--method", "entropy", "--device", "t4", "--budget", "101", "--no-sensitivity"]
    assert main(argv) == 2  # top-1 never exceeds 100 %: no choice of levels reaches it
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--budget 101 cannot be met on t4" in err and "bf16 for every layer" in err
    assert "(FP32 " in err and " %" in err  # in the unit the flag was given in


def test_cli_quantize_max_accuracy_drop_reads_points_as_plan_does(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["quantize", "digits-cnn", "--method", "entropy", "--device", "t4", "--max-accuracy-drop", "1",
            "--no-sensitivity", "--json"]  # fmt: skip
    assert main(argv) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["search"]["budget_percent"] == pytest.approx(d["fp32_accuracy_percent"] - 1)
    assert d["search"]["accuracy_percent"] >= d["search"]["budget_percent"]
