"""MixedPrecision: FP32 masters, skipped steps, underflow counting, reports, cost, the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chipfit.amp import MixedPrecision
from chipfit.amp.cost import training_cost
from chipfit.cli import main
from chipfit.emulate.mode import emulate
from chipfit.emulate.report import RoundingCount
from chipfit.formats import quantize


def test_underflow_count_equals_a_direct_count_on_a_hand_made_gradient() -> None:
    g = torch.tensor([1e-9, 2e-8, 3e-8, 6e-8, 1e-3, 0.0, -4e-9, 7e4, 5.0, -1e5])
    direct = RoundingCount.of(g, quantize(g, "float16"))
    assert (direct.underflow, direct.overflow, direct.nonzero) == (3, 2, 9)  # 1e-9, 2e-8, -4e-9 | 7e4, -1e5
    model = nn.Linear(1, len(g), bias=False)
    x = torch.ones(1, 1)
    with MixedPrecision("a100-sxm", "fp16", model=model, loss_scaling="none") as mp:
        # dL/dy = g (an FP32 elementwise result); the weight-gradient GEMM casts it to FP16
        mp.backward((model(x) * g).sum())
        counts = mp.run.watch.total() if mp.run and mp.run.watch else None
    assert counts is not None and counts.underflow == direct.underflow and counts.overflow == direct.overflow
    assert mp.run is not None and mp.run.watch is not None
    assert set(mp.run.watch.by_op) == {"mm (input cast)", "mm"}


def test_masters_stay_fp32_and_a_skipped_step_changes_nothing() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, y = torch.randn(16, 4), torch.randn(16, 2)
    with MixedPrecision("a100-sxm", "fp16", model=model, init_scale=2.0**40) as mp:  # overflows at first
        before = [p.detach().clone() for p in model.parameters()]
        opt.zero_grad()
        mp.backward(F.mse_loss(model(x), y))
        assert not mp.step(opt)
        assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
        for _ in range(40):
            opt.zero_grad()
            mp.backward(F.mse_loss(model(x), y))
            mp.step(opt)
    assert mp.skipped_steps >= 1 and mp.history[-1].scale < 2.0**40
    assert all(p.dtype == torch.float32 for p in model.parameters())
    # the masters hold values FP16 cannot: updates smaller than an FP16 ulp accumulate
    w = model[0].weight.detach()
    assert not torch.equal(w, quantize(w, "float16"))
    assert mp.history[-1].loss < mp.history[1].loss


def test_bf16_needs_no_scaler_and_fp16_without_scaling_underflows() -> None:
    torch.manual_seed(0)
    assert MixedPrecision("a100-sxm", "bf16").scaler is None
    assert MixedPrecision("a100-sxm", "fp16").loss_scaling == "dynamic"
    with pytest.raises(ValueError, match="known: auto, dynamic, static, none"):
        MixedPrecision("a100-sxm", "fp16", loss_scaling="loud")
    model = nn.Linear(32, 1)
    x = torch.randn(256, 32)
    with MixedPrecision("a100-sxm", "fp16", model=model, loss_scaling="none") as mp:
        mp.backward(F.mse_loss(model(x), torch.zeros(256, 1)) * 1e-6)  # a tiny loss: tiny gradients
        mp.step(torch.optim.SGD(model.parameters(), lr=0.1))
    assert mp.history[-1].underflow > 0


def test_reports_json_and_plot(tmp_path: Path) -> None:
    model = nn.Linear(3, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with MixedPrecision("t4", "fp16", model=model) as mp:
        for _ in range(3):
            opt.zero_grad()
            mp.backward(model(torch.randn(8, 3)).pow(2).mean())
            mp.step(opt)
    d = json.loads(mp.save_json(tmp_path / "d.json").read_text())
    assert d["summary"]["steps"] == 3 and len(d["steps"]) == 3
    assert set(d["steps"][0]["layers"]) == {"(root)"}  # a bare Linear: its own weight and bias
    svg = mp.save_plot(tmp_path / "p.svg").read_text()
    assert svg.startswith("<svg") and svg.count("<polyline") >= 3


def test_training_memory_is_masters_grads_moments_and_copies() -> None:
    model = nn.Linear(100, 10)  # 1010 parameters
    x = torch.randn(4, 100)
    fp32 = training_cost(model, (x,), "h100-sxm", "fp32")
    bf16 = training_cost(model, (x,), "h100-sxm", "bf16")
    assert fp32.params == 1010 and fp32.master_bytes == fp32.grad_bytes == 4 * 1010
    assert fp32.optimizer_bytes == 8 * 1010 and fp32.working_copy_bytes == 0
    assert bf16.working_copy_bytes == 2 * 1010 and bf16.activation_bytes * 2 == fp32.activation_bytes
    assert fp32.step_s > 0 and fp32.energy_j > 0 and fp32.fits
    with pytest.raises(ValueError, match="known: adam, sgd"):
        training_cost(model, (x,), "h100-sxm", "fp32", optimizer="lion")


def test_cli_train(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["train", "digits-cnn", "--device", "a100-sxm", "--precision", "bf16", "--epochs", "1", "--json"]
    assert main([*argv, "--plot", str(tmp_path / "p.svg"), "--save-json", str(tmp_path / "d.json")]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["steps"] == 22 and d["loss_scaling"] == "none" and 50 < d["top1_percent"] <= 100  # 1347 images / 64
    assert d["cost"]["step_s"] > 0 and (tmp_path / "p.svg").exists() and (tmp_path / "d.json").exists()
    # the last epoch's mean over its 1347 items, not the last step's 1347 - 21 * 64 = 3 items
    steps = json.loads((tmp_path / "d.json").read_text())["steps"]
    by_hand = (sum(s["loss"] * 64 for s in steps[:21]) + steps[21]["loss"] * 3) / 1347
    assert d["last_epoch_mean_loss"] == pytest.approx(by_hand, rel=1e-12)
    assert d["final_loss"] == steps[-1]["loss"]
    assert main(["train", "resnet50", "--device", "t4", "--precision", "fp16"]) == 2
    assert "digits-cnn" in capsys.readouterr().err
    assert main(["train", "digits-cnn", "--device", "t4", "--precision", "fp16", "--loss-scaling", "x"]) == 2
    assert "known: auto, dynamic, static, none" in capsys.readouterr().err


def test_emulate_watch_is_off_by_default() -> None:
    with emulate(device="a100-sxm", precision="fp16") as run:
        assert run.watch is None


def test_cli_train_says_when_no_stack_trains_in_the_format(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["train", "digits-cnn", "--device", "a100-sxm", "--precision", "int8", "--epochs", "1", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "note: a100-sxm's stack does not train in int8 (catalog training formats: float32, tfloat32" in out
    assert main([*argv[:5], "bf16", "--epochs", "1", "--json"]) == 0
    assert "note" not in json.loads(capsys.readouterr().out)
