"""`chipfit devices` end to end through main(argv)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from chipfit.cli import main


def test_devices_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    for name in ("h100-sxm", "tpu-v5e", "inferentia2", "edge-tpu", "alveo-u250", "xeon-8480"):
        assert name in out
    from chipfit.hardware import list_devices

    n = len(list_devices())
    assert n >= 40 and f"{n} devices" in out


def test_devices_filters_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--family", "npu", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {r["name"] for r in rows} == {
        "edge-tpu", "ascend-310", "hexagon-8g3", "apple-m4-ane", "intel-lunar-lake-npu", "amd-xdna2",
    }  # fmt: skip
    assert main(["devices", "--format", "float8_e4m3fnuz", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in rows if "runs_instead" not in r] == ["mi300x", "mi325x"]  # gfx942: fnuz FP8
    # the FP8 of AMD's gfx942 is not hidden from a float8_e4m3fn filter: listed, with the encoding it runs
    assert main(["devices", "--format", "float8_e4m3fn", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    assert rows["mi300x"]["runs_instead"] == "float8_e4m3fnuz" and "runs_instead" not in rows["h100-sxm"]
    assert "mi355x" in rows and "runs_instead" not in rows["mi355x"]  # gfx950: OCP FP8


def test_the_table_shows_fp32_on_the_vector_unit_and_fnuz_fp8(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "--family", "gpu"]) == 0
    out = capsys.readouterr().out
    v100 = next(line for line in out.splitlines() if "v100-sxm" in line)
    assert "16v" in v100  # 15.7 TFLOPS FP32 on the CUDA cores: shown, marked, not "-"
    assert "2,615f" in next(line for line in out.splitlines() if "mi300x" in line)
    assert "v: FP32 on the vector unit" in out


def test_devices_show(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "show", "a100-sxm", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["formats"]["bfloat16"]["peak_ops_per_s"] == 312e12
    # ridge point 312e12 / 2.039e12 = 153 ops/byte
    assert round(d["formats"]["bfloat16"]["ridge_ops_per_byte"]) == 153
    assert d["compute"]["source"].startswith("datasheet:")
    assert main(["devices", "show", "inferentia2"]) == 0
    out = capsys.readouterr().out
    assert "autocast float32->bfloat16" in out and "assumed:" in out


def test_devices_show_unknown(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["devices", "show", "h10"]) == 2
    assert "unknown device 'h10'; known:" in capsys.readouterr().err


def test_device_file_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "over.toml"
    p.write_text('[h100-sxm.power]\ntdp_w = 800\nsource = "measured: our rack"\n')
    assert main(["devices", "show", "h100-sxm", "--device-file", str(p), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["power"]["tdp_w"] == 800
    bad = tmp_path / "bad.toml"
    bad.write_text('[h100-sxm.power]\ntdp_w = 8e5\nsource = "measured: x"\n')
    assert main(["devices", "--device-file", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.toml: device 'h100-sxm': field 'power.tdp_w'" in err
