"""`chipfit estimate` end to end."""

from __future__ import annotations

import json

import pytest

from chipfit.cli import main


def test_estimate_one_device_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "resnet50", "--device", "a100-sxm", "--precision", "bf16", "--batch", "8", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["device"] == "a100-sxm" and d["precision"]["format"] == "bfloat16" and d["items"] == 8
    # the median of the sourced on-demand records (docs/pricing.md), per accelerator-hour
    usd_h = d["price"]["usd_per_hour"]
    assert d["price"]["basis"] == "on-demand" and d["price"]["record"]["source"]
    assert d["usd_per_million_items"] == pytest.approx(usd_h * d["latency_s"] / 3600 / 8 * 1e6)
    assert d["by_class"]["conv"]["time_s"] > 0 and d["fits_one_chip"]


def test_estimate_comparison_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "estimate",
        "bert-base",
        "--seq-len",
        "64",
        "--device",
        "h100-sxm",
        "--device",
        "t4",
        "--device",
        "edge-tpu",
    ]
    assert main([*argv, "--precision", "int8"]) == 0
    out = capsys.readouterr().out
    assert "h100-sxm" in out and "t4" in out and "edge-tpu" in out
    assert main([*argv, "--precision", "int8", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    edge = next(r for r in rows if r["device"] == "edge-tpu")
    assert edge["fallback_ops"] > 0 and edge["fallback"][0]["unit"] == "host"


def test_estimate_training(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "mlp", "--train", "--optimizer", "adam", "--device", "h100-sxm", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["mode"] == "training" and "optimizer" in d["by_class"]


def test_estimate_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["estimate", "mlp", "--device", "h1000"]) == 2
    assert "unknown device 'h1000'; known:" in capsys.readouterr().err
    assert main(["estimate", "mlp", "--device", "t4", "--precision", "fp7"]) == 2
    assert "unknown precision 'fp7'; known: fp32" in capsys.readouterr().err
    assert main(["estimate", "mlp", "--batch", "0"]) == 2
    err = capsys.readouterr().err  # a usage error is one line too, pointing at --help
    assert err == ("chipfit estimate: error: argument --batch: '0' is not a positive integer up to 2,147,483,647 "
                   "(see `chipfit estimate --help`)\n")  # fmt: skip
