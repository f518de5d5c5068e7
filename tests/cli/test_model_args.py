"""One meaning for MODEL and its input flags on every command (issue 18, "One meaning for every input")."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chipfit.cli import build_parser, main

LINEAR = """
import torch

def make():
    return torch.nn.Linear(32, 16)

def two_inputs():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(10, 8)
        def forward(self, ids, x):
            return self.emb(ids).sum(1) + x
    return M()
"""

MODEL_COMMANDS = ("trace", "estimate", "plan", "emulate", "quantize", "train")


@pytest.fixture
def user(tmp_path: Path) -> Path:
    f = tmp_path / "user_models.py"
    f.write_text(LINEAR)
    return f


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_every_model_command_takes_the_same_input_and_device_flags(command: str) -> None:
    parser = build_parser()
    extra = {"train": ["--device", "a100-sxm", "--precision", "bf16"]}.get(command, [])
    args = parser.parse_args([command, "digits-cnn", *extra, "--dtype", "int64", "--seq-len", "8", "--decode",
                              "--input-shape", "3"])  # fmt: skip
    assert args.dtype == ["int64"] and args.seq_len == 8 and args.decode and args.input_shape == ["3"]
    if command != "trace":  # every command that names a device reads device files
        assert parser.parse_args([command, "mlp", *extra, "--device-file", "x.toml"]).device_file == ["x.toml"]


def test_input_shape_is_one_item_and_batch_sets_the_batch(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", f"{user}:make", "--input-shape", "32", "--batch", "4", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["batch"] == 4 and d["flops_torch"] == 2 * 4 * 32 * 16
    assert main(["trace", f"{user}:make", "--input-shape", "32", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["flops_torch"] == 2 * 32 * 16  # --batch defaults to 1


def test_plan_and_estimate_read_the_input_shape_as_trace_does(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", f"{user}:make", "--input-shape", "32", "--batch", "8", "--device", "a100-sxm",
                 "--precision", "bf16", "--json"]) == 0  # fmt: skip
    est = json.loads(capsys.readouterr().out)
    assert main(["plan", f"{user}:make", "--input-shape", "32", "--batch-sizes", "8", "--devices", "a100-sxm",
                 "--precisions", "bf16", "--objective", "latency", "--backend", "serial", "--json"]) == 0  # fmt: skip
    row = json.loads(capsys.readouterr().out)["rows"][0]
    assert row["batch"] == 8 and row["step_s"] == pytest.approx(est["latency_s"])


def test_dtype_once_or_once_per_input(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"{user}:two_inputs"
    assert main(["trace", ref, "--input-shape", "5", "--input-shape", "8", "--dtype", "int64", "--dtype", "float32",
                 "--batch", "3", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["batch"] == 3
    assert main(["trace", ref, "--input-shape", "5", "--input-shape", "8", "--dtype", "int64", "--dtype", "float32",
                 "--dtype", "float32"]) == 2  # fmt: skip
    assert "give --dtype once or once per --input-shape (2), not 3 times" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["trace", "resnet50", "--seq-len", "64"], "resnet50 has no sequence length; --seq-len applies to minilm"),
        (["estimate", "bert-base", "--decode"], "bert-base has no decode step; --decode applies to decoder-125m"),
        (["plan", "mlp", "--seq-len", "8", "--no-accuracy"], "mlp has no sequence length"),
        (["trace", "resnet50", "--input-shape", "3,224,224"], "--input-shape is for user models; resnet50"),
        (["trace", "mlp", "--dtype", "int64"], "--dtype is for user models; mlp"),
        (["trace", "bert-base", "--seq-len", "0"], "--seq-len: '0' is not a positive integer up to 2,147,483,647"),
        (["trace", "mlp", "--batch", "99999999999999999999"], "--batch: '99999999999999999999' is not a positive"),
        (["emulate", "minilm", "--seq-len", "16", "--device", "a100-sxm", "--precision", "bf16"],
         "minilm's built-in data fixes its inputs, so --seq-len does not apply here"),
        (["quantize", "digits-cnn", "--decode"], "digits-cnn's built-in data fixes its inputs, so --decode"),
        (["train", "digits-cnn", "--device", "a100-sxm", "--precision", "bf16", "--seq-len", "4"],
         "digits-cnn's built-in data fixes its inputs"),
        (["emulate", "resnet50", "--device", "a100-sxm", "--precision", "bf16"], "resnet50 has no built-in weights"),
        (["plan", "minilm", "--seq-len", "64"], "add --no-accuracy to price another --seq-len"),
    ],
)  # fmt: skip
def test_a_flag_that_does_not_apply_is_an_error_not_ignored(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_user_model_flags(user: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ref = f"{user}:make"
    assert main(["trace", ref, "--seq-len", "8", "--input-shape", "32"]) == 2
    assert "--seq-len is for built-in models" in capsys.readouterr().err
    assert main(["trace", ref, "--input-shape", "0,3"]) == 2
    assert "must be positive integers like 3,224,224: one item, without the batch dimension" in capsys.readouterr().err
    assert main(["emulate", ref, "--device", "a100-sxm", "--precision", "bf16"]) == 2
    assert "for your own model use chipfit.evaluate" in capsys.readouterr().err


def test_estimate_device_all_and_repeated_precision_adds(capsys: pytest.CaptureFixture[str]) -> None:
    from chipfit.hardware import list_devices

    assert main(["estimate", "mlp", "--device", "all", "--precision", "fp32", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert sorted(r["device"] for r in rows) == sorted(d.name for d in list_devices())
    argv = ["estimate", "mlp", "--device", "a100-sxm", "--precision", "fp32", "--precision", "bf16", "--json"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["precision"]["format"] for r in rows] == ["float32", "bfloat16"]


def test_device_file_reaches_plan_and_train(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cheap = tmp_path / "cheap.toml"
    cheap.write_text('[[ascend-910b.prices]]\nbasis = "on-demand"\nprovider = "us"\nunit = "accelerator-hour"\n'
                     'usd = 0.01\ndate = "2026-11"\nsource = "measured: our invoice"\n')  # fmt: skip
    base = ["plan", "mlp", "--devices", "h100-sxm,ascend-910b", "--precisions", "fp16", "--batch-sizes", "32",
            "--backend", "serial", "--json"]  # fmt: skip
    assert main(base) == 0
    assert json.loads(capsys.readouterr().out)["recommendation"]["device"] == "h100-sxm"  # no sourced 910B price
    assert main([*base, "--device-file", str(cheap)]) == 0
    assert json.loads(capsys.readouterr().out)["recommendation"]["device"] == "ascend-910b"
    hot = tmp_path / "hot.toml"
    hot.write_text('[a100-sxm.power]\ntdp_w = 800\nsource = "measured: our rack"\n')
    train = ["train", "digits-cnn", "--device", "a100-sxm", "--precision", "bf16", "--epochs", "1", "--json"]
    assert main(train) == 0
    cool = json.loads(capsys.readouterr().out)["cost"]["energy_j"]
    assert main([*train, "--device-file", str(hot)]) == 0
    assert json.loads(capsys.readouterr().out)["cost"]["energy_j"] > cool


def test_quantize_resolves_its_device_before_loading_anything(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", "digits-cnn", "--device", "no-such-chip", "--budget", "0.9"]) == 2
    assert "unknown device 'no-such-chip'; known:" in capsys.readouterr().err
