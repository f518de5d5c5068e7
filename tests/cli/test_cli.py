"""The chipfit command, called through main(argv)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from chipfit.cli import main


def test_formats_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formats"]) == 0
    out = capsys.readouterr().out
    for name in ("float8_e4m3fn", "bfloat16", "mxfp4", "nvfp4", "int4", "binary"):
        assert name in out
    assert "448" in out  # e4m3fn max


def test_formats_json_has_derived_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formats", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["float8_e5m2"]["max"] == 57344 and rows["float8_e5m2"]["eps"] == 0.25
    assert rows["float16"]["min_subnormal"] == 2.0**-24
    assert rows["mxfp4"]["bits"] == 4.25


def test_formats_kind_filter(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formats", "--kind", "int", "--json"]) == 0
    assert {r["kind"] for r in json.loads(capsys.readouterr().out)} == {"int"}
    assert main(["formats", "--kind", "weird"]) == 2
    assert "known: float, int, binary, block" in capsys.readouterr().err


def test_formats_show_lists_every_code(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formats", "show", "float8_e4m3fn", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data["codes"]) == 256
    assert data["codes"][0x7E]["value"] == 448.0 and data["codes"][0x01]["value"] == 2.0**-9
    assert data["codes"][0x7F]["f32_bits"] == "0x7FF00000"  # torch's NaN widening
    assert main(["formats", "show", "float8_e4m3fn", "--profile", "ml_dtypes", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["codes"][0x7F]["f32_bits"] == "0x7FC00000"


def test_formats_show_wide_format_prints_limits(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formats", "show", "bfloat16"]) == 0
    out = capsys.readouterr().out
    assert "min_subnormal" in out and "every code" not in out


def test_formats_show_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["formats", "show", "fp9"]) == 2
    err = capsys.readouterr().err
    assert "unknown format 'fp9'; known:" in err and "float8_e4m3fn" in err


def test_demo_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["rounded"]["float8_e4m3fn"][4] == 288.0  # 300 -> nearest e4m3 (step 32 in [256, 448])
    assert data["rounded"]["float16"][5] == "inf"  # 70000 > 65504
    # more bits, less noise: 16-bit formats beat 8-bit, 8-bit beats 4-bit
    s = data["sqnr_db_normal_4096"]
    assert s["float16"] > s["bfloat16"] > s["float8_e4m3fn"] > s["float4_e2m1fn"] > s["binary"]
    assert abs(data["stochastic_bf16_up_fraction"] - 0.25) < 0.01


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "formats" in capsys.readouterr().out


def test_ctrl_c_ends_a_command_with_one_line_and_status_130(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import chipfit.cli.formats_cmd as formats_cmd

    def interrupted(_args: object) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(formats_cmd, "cmd_formats", interrupted)
    assert main(["formats"]) == 130
    err = capsys.readouterr().err
    assert err == "chipfit: interrupted\n"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(8.096e-06, "8.1 µs"), (0.0123, "12.3 ms"), (1.5, "1.5 s"), (4e-10, "0.4 ns"), (3600.0, "3.6e+03 s")],
)
def test_times_read_in_a_readable_unit(seconds: float, text: str) -> None:
    from chipfit.report.text import seconds_text

    assert seconds_text(seconds) == text


def test_the_plan_table_shows_times_in_a_readable_unit(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plan", "mlp", "--devices", "h100-sxm", "--precisions", "bf16", "--batch-sizes", "1"]) == 0
    out = capsys.readouterr().out
    assert "time/step" in out and " µs " in out and "ms/step" not in out


def test_a_bug_shows_its_traceback_and_says_it_is_a_bug(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import chipfit.cli.formats_cmd as formats_cmd

    def buggy(_args: object) -> int:
        return int(math.log10(0))  # an internal error, not the user's: "math domain error" alone would hide it

    monkeypatch.setattr(formats_cmd, "cmd_formats", buggy)
    assert main(["formats"]) == 70
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "ValueError: math domain error" in err
    assert err.rstrip().splitlines()[-1].startswith("chipfit: internal error: this is a bug in chipfit")


def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    model = tmp_path / "net.py"
    model.write_text("import torch\n\ndef make():\n    return torch.nn.Linear(8, 2)\n")
    data = tmp_path / "wrong.pt"
    torch.save({"inputs": torch.randn(4, 5), "targets": torch.zeros(4, dtype=torch.long)}, data)
    cases = [
        (["plan", f"{model}:make", "--eval-data", str(data), "--devices", "a100-sxm", "--backend", "serial"],
         "the model fails on the evaluation data in plain FP32 (batch 1, inputs [4, 5])"),
        (["plan", f"{model}:make", "--input-shape", "5", "--devices", "a100-sxm", "--backend", "serial"],
         "cannot run on fake tensors"),
        (["plan", "mlp", "--csv", str(tmp_path)], "is a directory, not a file"),
        (["plan", "mlp", "--html", str(model / "r.html")], "is not a folder"),
        (["trace", "mlp", "--batch", "x"], "argument --batch: 'x' is not a positive integer"),
    ]  # fmt: skip
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, (argv, err)


def test_an_unwritable_output_is_refused_before_the_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import chipfit.plan as plan_pkg

    def never(*_a: object, **_k: object) -> None:
        raise AssertionError("the sweep ran although its output cannot be written")

    monkeypatch.setattr(plan_pkg, "plan", never)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["plan", "mlp", "--csv", str(blocker / "out.csv")]) == 2
    assert "is not a folder" in capsys.readouterr().err
