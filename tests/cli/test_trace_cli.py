"""`chipfit models` and `chipfit trace`, including a user model from a file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chipfit.cli import main

USER_MODEL = """
import torch
from torch import nn

class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 5))

    def forward(self, x):
        return self.body(x)

def make():
    return Tiny()

def broken():
    raise RuntimeError("weights not found")
"""


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["resnet50"]["params"] == 25_557_032 and rows["bert-base"]["params"] == 109_482_240
    assert rows["decoder-70b"]["params"] == 68_976_648_192


def test_trace_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["trace", "bert-base", "--seq-len", "16", "--batch", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["param_count"] == 109_482_240 and d["mode"] == "inference" and d["uncosted_ops"] == 0
    assert d["top_flops"][0]["op_class"] == "matmul"
    assert main(["trace", "mlp", "--train", "--optimizer", "adam"]) == 0
    out = capsys.readouterr().out
    assert "FLOPs by phase" in out and "optimizer" in out


def test_trace_user_model_from_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "my_model.py"
    f.write_text(USER_MODEL)
    save = tmp_path / "trace.json"
    # --input-shape is one item, without the batch dimension; --batch sets the batch (issue 18)
    assert main(["trace", f"{f}:make", "--input-shape", "3,8,8", "--batch", "2", "--json", "--save", str(save)]) == 0
    d = json.loads(capsys.readouterr().out)
    # conv: 2*N*Cout*Hout*Wout*Cin*k*k = 2*2*4*6*6*3*3*3 = 15552; linear: 2*2*5*144 = 2880
    assert d["flops_torch"] == 15552 + 2880
    assert d["modules"]["body"]["ops"] > 0
    assert json.loads(save.read_text())["records"]


def test_trace_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "my_model.py"
    f.write_text(USER_MODEL)
    assert main(["trace", f"{f}:broken", "--input-shape", "3,8,8"]) == 2
    assert "raised RuntimeError: weights not found" in capsys.readouterr().err
    assert main(["trace", f"{f}:make", "--input-shape", "3,9,9"]) == 2
    err = capsys.readouterr().err
    assert "module 'body.3' (Linear)" in err and "aten.addmm" in err
    assert main(["trace", f"{f}:make"]) == 2
    assert "needs --input-shape" in capsys.readouterr().err
    assert main(["trace", "resnet5"]) == 2
    assert "unknown model 'resnet5'; built-in: mlp" in capsys.readouterr().err
    assert main(["trace", f"{f}:missing", "--input-shape", "3,8,8"]) == 2
    assert "has no callable 'missing'" in capsys.readouterr().err
    assert main(["trace", "mlp", "--decode"]) == 2
    assert "has no decode step" in capsys.readouterr().err
