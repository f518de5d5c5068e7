"""The chipfit command, called through main(argv)."""

from __future__ import annotations

import json

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
